"""``wibergian damping``: does damping matter? (issue 16) and its ``reproduce`` section."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from .run import SECTIONS, StudySettings, merge, run_section


def _sections(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in names if s not in SECTIONS]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"unknown section(s) {bad or text!r}; choose from {', '.join(SECTIONS)}")
    return names


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
                        "output); without it that section is skipped")
    p.add_argument("--fusion-label", default=None,
                   help="what the --fusion-data data are (written in the results)")
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
    st = settings(args.quick)
    names = args.only or list(SECTIONS)
    for name in names:
        t0 = time.perf_counter()
        block = run_section(name, st, out, args.quiet, args.fusion_data, args.fusion_label)
        if block is None:
            print(f"[damping] {name}: skipped (no data; pass --fusion-data DIR)")
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
            "Toy and end-to-end: **generated** data; fusion: the **generated** tracker zoo "
            "(fusion on real trackers' output needs `wibergian damping --fusion-data DIR`); "
            "pose: real CMU mocap through 4 real camera rigs with **simulated** 2D detections."
            + (" *Quick setting: tiny sizes, numbers indicative only.*" if quick else ""), ""]
    return "\n".join(head) + markdown_summary(result)
