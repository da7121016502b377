"""Render docs/benchmarks.md from a benchmark JSON file.

    python benchmarks/render_report.py benchmarks/results/bench_full.json --out docs/benchmarks.md
"""

from wibergian.bench.report import main

if __name__ == "__main__":
    main()
