"""Run the benchmark suite (thin wrapper around ``wibergian.bench.cli``).

    python benchmarks/run_bench.py --quick --docs docs/benchmarks.md
    python benchmarks/run_bench.py --workload W1 --scaling
"""

from wibergian.bench.cli import main

if __name__ == "__main__":
    main()
