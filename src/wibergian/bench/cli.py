"""``wibergian bench [--workload W1,W2,W3] [--quick] [--out DIR]``.

Writes ``DIR/bench_quick.json`` or ``DIR/bench_full.json`` and (``--docs``) renders
``docs/benchmarks.md`` from it. Also runnable as ``python -m wibergian.bench.cli``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import pathlib
import sys
from typing import Any

QUICK = {"W1": [1000], "W2": [1000], "W3": [128], "w3_iters": 30, "min_repeats": 3,
         "max_repeats": 8, "budget_s": 60.0, "min_seconds": 0.0, "batch": [1000, 2000, 4000],
         "dense": [2, 8, 32, 128],
         "free": [64, 128, 256], "D": [2, 8], "D_batch": 1000}
FULL = {"W1": [1000, 20000], "W2": [1000, 10000], "W3": [512], "w3_iters": 30, "min_repeats": 5,
        "max_repeats": 20, "budget_s": 240.0, "min_seconds": 30.0,
        "batch": [1000, 3000, 10000, 30000, 100000],
        "dense": [2, 8, 32, 128, 512, 1024], "free": [128, 256, 512, 1024],
        "D": [2, 8, 32, 128], "D_batch": 1000}


def _threads(n: int) -> None:
    """Fix the thread count of torch and (before JAX is imported) XLA's CPU backend."""
    import torch

    torch.set_num_threads(n)
    if n == 1 and "jax" not in sys.modules:
        flags = os.environ.get("XLA_FLAGS", "")
        if "multi_thread_eigen" not in flags:
            os.environ["XLA_FLAGS"] = (flags + " --xla_cpu_multi_thread_eigen=false "
                                       "intra_op_parallelism_threads=1").strip()


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the selected workloads (and scaling) and write the JSON; returns the run dict."""
    from . import machine

    if args.malloc == "tuned":
        machine.set_malloc_threshold(machine.TIMING_THRESHOLD)
    _threads(args.threads)
    from . import fused, runner, scaling, suite

    fused.configure(not args.no_compile)

    cfg = dict(QUICK if args.quick else FULL)
    if args.rounds:
        lo, _, hi = args.rounds.partition(":")
        cfg.update(min_repeats=int(lo), max_repeats=int(hi or lo))
    wanted = [w.strip().upper() for w in args.workload.split(",") if w.strip()]
    if getattr(args, "sizes", ""):
        sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
        cfg.update({w: sizes for w in ("W1", "W2", "W3", "D")})
    bad = [w for w in wanted if w not in ("W1", "W2", "W3", "D")]
    if bad:
        raise SystemExit(f"--workload: unknown workload(s) {bad}; choose from W1, W2, W3, D")
    out_dir = pathlib.Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M")
    kw = {"min_repeats": cfg["min_repeats"], "max_repeats": cfg["max_repeats"],
          "budget_s": cfg["budget_s"], "malloc": args.malloc,
          "min_seconds": cfg["min_seconds"] if args.min_seconds is None else args.min_seconds}
    results: dict[str, Any] = {"quick": args.quick, "started": started, "workloads": [],
                               "notes": list(NOTES), "malloc": args.malloc}
    anchors = not args.no_anchors
    for w in wanted:
        for size in cfg[w]:
            if w == "W1":
                methods, ref = suite.w1_suite(size, anchors)
                res = runner.run_workload(f"W1, B = {size}", methods, ref, **kw)
            elif w == "D":
                from .user import dense_suite

                # the unrolled baseline is left out where it would not fit in memory
                # (user.UNROLLED_MAX_BYTES: n = 128 at B = 1000)
                d_batch = cfg.get("D_batch_at", {}).get(size, cfg["D_batch"])
                methods, ref = dense_suite(d_batch, size, anchors)
                res = runner.run_workload(
                    f"D (dense ridge-logistic), n = {size}, B = {d_batch}", methods, ref,
                    primary="ours (user's energy)", **kw)
            elif w == "W2":
                methods, ref = suite.w2_suite(size, anchors)
                res = runner.run_workload(f"W2, B = {size}", methods, ref,
                                          primary="ours (quadratic, λ=0)", **kw)
            else:
                agree = suite.w3_agreement()
                methods = suite.w3_suite(size, cfg["w3_iters"])
                res = runner.run_workload(
                    f"W3, {size}×{size} image, {cfg['w3_iters']} L-BFGS iterations", methods,
                    None, agreement=agree["errors"], **{**kw, "min_repeats": 2,
                                                        "max_repeats": 3})
                res["agreement_instance"] = agree["instance"]
            res.update(workload=w, size=size)
            results["workloads"].append(res)
            _write(results, out_dir, args)
    if args.scaling:
        results["scaling"] = {
            "batch": scaling.scale_batch(cfg["batch"]),
            "dense": scaling.scale_dense(cfg["dense"]),
            "matrix_free": scaling.scale_matrix_free(cfg["free"]),
        }
    results["finished"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M")
    path = _write(results, out_dir, args)
    if results["workloads"]:
        from .report import targets_section
        from .report_user import user_targets_section

        print("\n" + targets_section(results) + "\n\n" + user_targets_section(results) + "\n")
    print(f"wrote {path}")
    if args.docs:
        from .report import render

        results["json_name"] = str(path)
        pathlib.Path(args.docs).write_text(render(results))
        print(f"wrote {args.docs}")
    return results


NOTES = [
    "TorchOpt 0.7.3's `custom_root` maps `argnums` correctly only when the differentiated "
    "arguments come first in the solver's signature; our TorchOpt wrappers order them so.",
    "D: the unrolled baseline runs only where its retained graph (vmap(hessian) copies X once "
    "per direction and iteration) stays under 4 GiB: not at n = 128, B = 1000 (~50 GB).",
]


def _write(results: dict[str, Any], out_dir: pathlib.Path, args: argparse.Namespace) -> str:
    from . import fused, machine

    results["machine"] = machine.describe(args.threads)
    results["fused_kernels"] = {"enabled": fused.enabled(), **fused.STATUS}
    tag = f"_{args.tag}" if getattr(args, "tag", "") else ""
    path = out_dir / (("bench_quick" if args.quick else "bench_full") + tag + ".json")
    path.write_text(json.dumps(results, indent=1, default=float))
    return str(path)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workload", default="W1,W2,W3",
                   help="comma-separated: W1,W2,W3,D (D: the dense ridge-logistic sweep)")
    p.add_argument("--malloc", choices=("tuned", "default"), default="tuned",
                   help="glibc allocator: 'tuned' (32 MiB mmap threshold, plus a memory pass) "
                        "or 'default' (as a user's process has it; no memory figures)")
    p.add_argument("--quick", action="store_true", help="small sizes, few repeats")
    p.add_argument("--out", default="benchmarks/results", help="directory for the JSON")
    p.add_argument("--threads", type=int, default=1,
                   help="torch/XLA threads (default 1: on a shared 2-core machine, two "
                        "threads spin-wait against other processes)")
    p.add_argument("--no-anchors", action="store_true", help="skip TorchOpt/JAX/Theseus")
    p.add_argument("--no-compile", action="store_true",
                   help="do not torch.compile the no-gradient kernels (W1's start search "
                        "and its energy in graph-free forward solves); needs no C++ compiler")
    p.add_argument("--scaling", action="store_true", help="also run the scaling sweeps")
    p.add_argument("--docs", default=None, help="render this markdown file from the JSON")
    p.add_argument("--rounds", default="", help="MIN:MAX timed rounds (default: by mode)")
    p.add_argument("--min-seconds", type=float, default=None,
                   help="run at least this many seconds of rounds per workload (cheap cells get "
                        "more rounds; default 30 for the full run, 0 with --quick)")
    p.add_argument("--tag", default="", help="suffix of the JSON file name (separate runs)")
    p.add_argument("--sizes", default="",
                   help="comma-separated sizes (B for W1/W2, n for D, image side for W3) "
                        "replacing the mode's for every selected workload")


def register(subparsers: Any) -> None:
    """Add the ``bench`` sub-command."""
    p = subparsers.add_parser("bench", help="benchmark against unrolled autograd, TorchOpt, "
                              "JAXopt/Optimistix (and Theseus)")
    add_arguments(p)
    p.set_defaults(func=run)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="wibergian-bench", description=__doc__)
    add_arguments(ap)
    run(ap.parse_args(argv))


if __name__ == "__main__":
    main()
