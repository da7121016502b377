"""``wibergian endtoend {study,drift}`` and the ``reproduce`` hook.

    wibergian endtoend study --out runs/endtoend            # 6 methods x 5 seeds (~8 minutes)
    wibergian endtoend study --out runs/e2e_q --quick       # 1 seed, 60 updates
    wibergian endtoend drift --out runs/drift [--quick]     # drift.json + drift.png

Also runnable as ``python -m wibergian.experiments.endtoend.cli ...``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import time
from pathlib import Path
from typing import Any

import torch

from wibergian.progress import phase

from .data import LABEL, LineSpec
from .drift import run_drift
from .plots import plot_drift, plot_endtoend, plot_grad_norms
from .run import METHODS, StudySettings, markdown_table, run_study


def _study_settings(args: argparse.Namespace) -> StudySettings:
    st = StudySettings.quick() if args.quick else StudySettings()
    if args.steps is not None:
        st.steps = args.steps
    if args.seeds is not None:
        st.seeds = list(args.seeds)
    if args.methods is not None:
        st.methods = list(args.methods)
    if args.n_test is not None:
        st.n_test = args.n_test
    return st


def cmd_study(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    spec = LineSpec(n_points=args.n_points, outlier_frac=args.outlier_frac,
                    noise_bad=args.noise_bad, n_hypotheses=args.n_hypotheses)
    st = _study_settings(args)
    log = getattr(args, "log", None)
    with contextlib.ExitStack() as stack:
        if log is None:  # the command itself: a progress display over the method x seed runs
            p = stack.enter_context(phase("endtoend study", len(st.seeds) * len(st.methods),
                                          unit="run", quiet=args.quiet))
            log = lambda msg: (p.note(msg), p.update())  # noqa: E731
        res = run_study(out, st, spec, log=log, resume=getattr(args, "resume", False))
    plot_endtoend(res["records"], out / "endtoend.png")
    plot_grad_norms(out, out / "grad_norms.png")
    print(f"\n{LABEL}; held-out test set: {res['test_set']}\n")
    print(markdown_table(res["summary"]))
    print(f"\nwrote {out / 'endtoend_results.json'} and {out / 'endtoend.png'}")
    return res


def _drift_summary(res: dict[str, Any]) -> str:
    lines = ["| setting | λ | frac. h_min < λ | median rel. err. damped vs exact | 90th pct. |",
             "|---|---|---|---|---|"]
    sets = [("wells", res["wells"])] + [(f"MLESAC σ={k}", v) for k, v in res["mlesac"].items()]
    for name, r in sets:
        for lam, v in r["damped_vs_exact"].items():
            lines.append(f"| {name} | {lam} | {r['frac_hmin_below'][lam]:.3f} | "
                         f"{v['rel_err']['median']:.4f} | {v['rel_err']['q90']:.4f} |")
    lines += ["", "| setting | FD ε | basin jumps | exact vs FD rel. err. (median, no jump) |",
              "|---|---|---|---|"]
    for name, r in sets:
        for eps, v in r["finite_differences"].items():
            med = v["rel_err_exact_vs_fd_no_jump"].get("median", float("nan"))
            lines.append(f"| {name} | {eps} | {100 * v['jump_fraction']:.1f}% | {med:.2e} |")
    lines += ["", "| inner Newton iterations k | final step kept | median dist. to y* | "
              "implicit vs FD of map | newton_step vs FD of map | implicit vs exact at y* | "
              "newton_step vs exact at y* |", "|---|---|---|---|---|---|---|"]
    for row in res["early_stop"]["rows"]:
        lines.append(
            f"| {row['k']} | {100 * row['final_step_accepted']:.0f}% | "
            f"{row['dist_to_min']['median']:.2e} | "
            f"{row['implicit']['rel_err_vs_fd_of_map']['median']:.2e} | "
            f"{row['newton_step']['rel_err_vs_fd_of_map']['median']:.2e} | "
            f"{row['implicit']['rel_err_vs_true_minimiser']['median']:.2e} | "
            f"{row['newton_step']['rel_err_vs_true_minimiser']['median']:.2e} |")
    b = res["bifurcation"]
    i = min(range(len(b["h_min"])), key=lambda j: b["h_min"][j])
    lines += ["", f"Two-well sweep: smallest h_min {b['h_min'][i]:.4f} at s = {b['s'][i]:.2f}; "
              f"max |exact| {max(map(abs, b['exact'])):.3f}, max |damped| "
              f"{max(map(abs, b['damped'])):.3f}, basin jumps in FD: {sum(b['jump'])}."]
    return "\n".join(lines)


def cmd_drift(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    res = run_drift(quick=args.quick)
    res["seconds"] = time.perf_counter() - t0
    (out / "drift.json").write_text(json.dumps(res, indent=1))
    plot_drift(res, out / "drift.png")
    print(f"{res['label']}\n")
    print(_drift_summary(res))
    print(f"\nwrote {out / 'drift.json'} and {out / 'drift.png'} ({res['seconds']:.1f} s)")
    return res


def add_study_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/endtoend", help="output folder (run folders inside)")
    p.add_argument("--quick", action="store_true", help="1 seed, 60 updates, 300 test problems")
    p.add_argument("--steps", type=int, default=None, help="training updates per run")
    p.add_argument("--seeds", type=int, nargs="+", default=None)
    p.add_argument("--methods", nargs="+", choices=METHODS, default=None)
    p.add_argument("--n-test", type=int, default=None, help="held-out generated problems")
    p.add_argument("--n-points", type=int, default=40)
    p.add_argument("--outlier-frac", type=float, default=0.5)
    p.add_argument("--noise-bad", type=float, default=0.15,
                   help="noise of the imprecise half of the inliers (0.01 = all precise)")
    p.add_argument("--n-hypotheses", type=int, default=16, help="pair hypotheses per problem")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--resume", action="store_true",
                   help="continue the run folders in --out (finished runs are reloaded)")


def add_drift_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/drift", help="output folder")
    p.add_argument("--quick", action="store_true", help="100 instances instead of 1000")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")


def register(subparsers: Any) -> None:
    """Add ``endtoend`` with sub-commands ``study`` and ``drift``."""
    p = subparsers.add_parser("endtoend", help="network + argmin trained end to end; drift study")
    sub = p.add_subparsers(dest="endtoend_command", required=True)
    s = sub.add_parser("study", help="robust line fitting: 6 methods x seeds (generated data)")
    add_study_args(s)
    s.set_defaults(func=cmd_study)
    d = sub.add_parser("drift", help="damped vs exact vs finite differences (generated data)")
    add_drift_args(d)
    d.set_defaults(func=cmd_drift)


def reproduce(out_dir: Path, quick: bool, quiet: bool = False, progress: bool = True) -> str:
    """Run the study and the drift measurements; returns a markdown section (image links
    relative to ``out_dir``). ``quiet`` silences the tables printed on the way and prints one
    progress line per phase (study, drift)."""
    if quiet:
        with contextlib.redirect_stdout(io.StringIO()):
            return reproduce(out_dir, quick, quiet=False, progress=False)
    out_dir = Path(out_dir)
    ns = argparse.Namespace(out=str(out_dir / "endtoend"), quick=quick, steps=None, seeds=None,
                            methods=None, n_test=None, n_points=40, outlier_frac=0.5,
                            noise_bad=0.15, n_hypotheses=16, threads=torch.get_num_threads(),
                            quiet=True)
    st = _study_settings(ns)
    with phase("endtoend: study (method x seed runs)", len(st.seeds) * len(st.methods),
               unit="run", quiet=quiet or not progress) as p:
        ns.log = lambda msg: (p.note(msg), p.update())
        res = cmd_study(ns)
    with phase("endtoend: drift measurements", quiet=quiet or not progress):
        dres = cmd_drift(argparse.Namespace(out=str(out_dir / "drift"), quick=quick,
                                            threads=torch.get_num_threads()))
    return "\n".join([
        "## End to end: a network feeding an argmin layer (generated data)", "",
        f"{LABEL}; {res['test_set']}. Mean ± std over seeds {res['settings']['seeds']}.", "",
        markdown_table(res["summary"]), "", "![end to end](endtoend/endtoend.png)",
        "![gradient norms](endtoend/grad_norms.png)", "",
        "## Drift and the strong-convexity assumption (generated data)", "",
        _drift_summary(dres), "", "![drift](drift/drift.png)", ""])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="wibergian-endtoend", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    register(sub)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
