"""``wibergian damping``: does damping matter? (issue 16) and its ``reproduce`` section."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from wibergian.argtypes import positive_int

from .optim import KINDS
from .regimes import METHODS
from .run import SECTIONS, StudySettings, merge, run_section


def _sections(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in names if s not in SECTIONS]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"unknown section(s) {bad or text!r}; choose from {', '.join(SECTIONS)}")
    return names



def _methods(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = [m for m in names if m not in METHODS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown method(s) {bad or text!r}; choose from "
                                         f"{', '.join(METHODS)}")
    return names


def _grid(text: str) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for part in text.split(";"):
        if not part.strip():
            continue
        if "=" not in part:
            raise argparse.ArgumentTypeError(f"expected OPT=LR,LR in {part!r}")
        k, v = part.split("=", 1)
        k = k.strip()
        if k not in KINDS:
            raise argparse.ArgumentTypeError(f"unknown optimiser {k!r}; choose from "
                                             f"{', '.join(KINDS)}")
        try:
            lrs = [float(x) for x in v.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"learning rates must be numbers: {v!r}") from None
        if not lrs or any(not (x > 0 and x < float("inf")) for x in lrs):
            raise argparse.ArgumentTypeError(f"learning rates must be finite and > 0: {v!r}")
        out[k] = lrs
    if not out:
        raise argparse.ArgumentTypeError("empty --grid")
    return out


def override(st: StudySettings, steps: int | None, seeds: int | None,
             methods: list[str] | None, grid: dict[str, list[float]] | None) -> StudySettings:
    """Apply the command-line overrides to every Trainer-based section's sweep."""
    for budget in (st.fusion, st.endtoend, st.pose):
        sw = budget.sweep
        if steps is not None:
            sw.steps = steps
        if seeds is not None:
            sw.seeds = list(range(seeds))
        if methods is not None:
            sw.methods = list(methods)
        if grid is not None:
            sw.lrs = dict(grid)
    return st


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``damping`` sub-command."""
    p = subparsers.add_parser(
        "damping",
        help="study: when does the damped gradient matter (λ = 0 vs 0.1, floor, clipping, "
             "optimisers, learning rates) on every experiment",
        description=(
            "For each experiment (MLESAC toy, tracker fusion on the generated zoo and on a "
            "VOT-format folder such as real trackers' output, end-to-end line fitting, pose): "
            "gradient-norm CCDFs with tail exponents at fixed parameters for λ = 0, λ = 0.1 "
            "ridge and the eigenvalue floor; a training sweep over optimisers (SGD, SGD + "
            "momentum, averaged SGD, Adam), learning rates, methods (λ = 0, ridge, floor, "
            "scale-relative λ, clipping with λ = 0 and λ = 0.1) and seeds, with divergence and "
            "collapse counts and paired differences; on the toy also the basin-switching "
            "analysis. Writes DIR/damping.json, damping_<section>.json and PNG figures. "
            "Sections already in DIR are kept, so sections can be run one at a time "
            "(--only) and merged. See docs/damping.md."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--quick", action="store_true",
                   help="small sizes (a few minutes); numbers indicative only")
    p.add_argument("--only", type=_sections, default=None, metavar="S,S,...",
                   help=f"sections to run (default: all): {', '.join(SECTIONS)}")
    p.add_argument("--fusion-data", type=Path, default=None, metavar="DIR",
                   help="VOT-format folder for the fusion_real section (e.g. real trackers' "
                        "output); default: the fusion experiment's shipped real-tracker set "
                        "(fusion.real.load_real), skipped if not installed")
    p.add_argument("--fusion-label", default=None,
                   help="what the --fusion-data data are (written in the results)")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="override the training updates of the Trainer-based sections")
    p.add_argument("--seeds", type=positive_int, default=None,
                   help="override the number of seeds (0..N-1) of the Trainer-based sections")
    p.add_argument("--methods", type=_methods, default=None, metavar="M,M,...",
                   help=f"override the methods of the Trainer-based sweeps: {', '.join(METHODS)}")
    p.add_argument("--grid", type=_grid, default=None, metavar="OPT=LR,LR;OPT=LR",
                   help="override the optimiser x lr grid of the Trainer-based sections, e.g. "
                        "'momentum=10,30;sgd=30' (optimisers: sgd, momentum, asgd, adam)")
    p.add_argument("--out", type=Path, default=Path("runs/damping"), help="output folder")
    p.add_argument("--quiet", action="store_true", help="one line per phase")
    p.set_defaults(func=_main)


#: Set to 1 to shrink ``--quick`` further (tests only).
TINY_ENV = "WIBERGIAN_DAMPING_TINY"


def settings(quick: bool) -> StudySettings:
    if quick and os.environ.get(TINY_ENV) == "1":
        return StudySettings.tiny()
    return StudySettings.quick_settings() if quick else StudySettings.full()


def _main(args: argparse.Namespace) -> int:
    from wibergian.cli import UsageError, prepare_out_dir

    if args.fusion_data is not None and not Path(args.fusion_data).is_dir():
        raise UsageError(f"--fusion-data {args.fusion_data} is not a folder; give a VOT-format "
                         "folder (sequences/, results/)")
    out = prepare_out_dir(args.out)
    st = override(settings(args.quick), args.steps, args.seeds, args.methods, args.grid)
    names = args.only or list(SECTIONS)
    for name in names:
        t0 = time.perf_counter()
        block = run_section(name, st, out, args.quiet, args.fusion_data, args.fusion_label)
        if block is None:
            print(f"[damping] {name}: skipped (no real-tracker data in this installation; "
                  "pass --fusion-data DIR)")
        else:
            print(f"[damping] {name}: done in {time.perf_counter() - t0:.0f} s")
    result = merge(out, st)
    print(markdown_summary(result))
    print(f"wrote {out / 'damping.json'}")
    return 0


def _fmt(v: Any, nd: int = 3) -> str:
    return "—" if v is None else f"{v:.{nd}g}"


def markdown_summary(result: dict[str, Any]) -> str:
    """Per section: tail exponents and the stability table (diverged/collapsed, median metric,
    paired difference vs ridge)."""
    lines: list[str] = []
    for name, sec in result["sections"].items():
        lines += [f"### {name}", "", f"Data: {sec['data']}", ""]
        g = sec["gradients"]
        blocks = ({f"σ = {k}": v for k, v in g["at"].items()} if "at" in g and
                  isinstance(g["at"], dict) else {"initial parameters": g["methods"]})
        lines += ["| at | method | per-problem α (Hill) | per-batch α | max/median per problem "
                  "| max/median per batch |", "|---|---|---|---|---|---|"]
        for at, ms in blocks.items():
            for m in ("lambda0", "ridge", "floor"):
                if m not in ms:
                    continue
                pp, pb = ms[m]["per_problem"], ms[m]["per_batch"]
                lines.append(
                    f"| {at} | {m} | {_fmt(pp.get('tail', {}).get('alpha'))} "
                    f"| {_fmt(pb.get('tail', {}).get('alpha'))} "
                    f"| {_fmt(pp.get('max_over_median'))} | {_fmt(pb.get('max_over_median'))} |")
        sweep = sec.get("sweep")
        if sweep and sweep.get("cells"):
            methods = list(sweep["cells"][0]["methods"])
            lines += ["", "| optimiser | lr | " + " | ".join(methods) + " |",
                      "|---|---|" + "---|" * len(methods)]
            for c in sweep["cells"]:
                row = []
                for m in methods:
                    b = c["methods"][m]
                    txt = f"{b['diverged']}d {b['collapsed']}c {_fmt(b['median_metric'])}"
                    pr = c.get("paired_vs_ridge", {}).get(m)
                    if pr and pr.get("ci95"):
                        txt += f" Δ {pr['mean']:+.3g} [{pr['ci95'][0]:+.3g}, {pr['ci95'][1]:+.3g}]"
                    row.append(txt)
                lines.append(f"| {c['optimizer']} | {c['lr']:g} | " + " | ".join(row) + " |")
            lines += ["", "cells: diverged (d), collapsed (c), median held-out metric, paired "
                      "difference vs ridge [95 % CI]", ""]
        if "basin" in sec:
            b = sec["basin"]
            lines += [f"Best fixed σ on {b['n_test']} held-out problems: {b['best_fixed_sigma']:g}"
                      f" (MSE {b['best_fixed_mse']:.1f} ± {b['best_fixed_mse_se']:.1f} s.e.)", ""]
        lines += [f"![{f}]({f})" for f in sec.get("figures", [])] + [""]
    if result.get("missing"):
        lines.append("Sections without results here: " + ", ".join(result["missing"]))
    return "\n".join(lines)


def reproduce(out_dir: Path, quick: bool, quiet: bool = False) -> str:
    """Every section except fusion_real (needs data); returns the report's markdown."""
    st = settings(quick)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in SECTIONS:
        run_section(name, st, out_dir, quiet)
    result = merge(out_dir, st)
    head = ["## Does damping matter? (issue 16)", "",
            "Toy and end-to-end: **generated** data; fusion: the **generated** tracker zoo and "
            "(section fusion_real, when the real-tracker set is installed) **real trackers' "
            "output on generated video**; pose: real CMU mocap through 4 real camera rigs with "
            "**simulated** 2D detections."
            + (" *Quick setting: tiny sizes, numbers indicative only.*" if quick else ""), ""]
    return "\n".join(head) + markdown_summary(result)
