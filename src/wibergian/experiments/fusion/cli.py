"""``wibergian fuse {generate,make-real,train,evaluate}`` and the ``reproduce`` hook.

    wibergian fuse generate --out zoo/                      # generated VOT-format folder
    wibergian fuse make-real --out real/                    # real OpenCV trackers (extra)
    wibergian fuse train --data zoo/ --out runs/fuse        # both protocols, seeds 0 1 2
    wibergian fuse train --data real --out runs/real        # the shipped real-tracker set
    wibergian fuse evaluate --run runs/fuse                 # results.json, figures, table
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

from wibergian.train import TrainConfig
from wibergian.train.config import OPTIMIZERS

from . import real
from .data import PROTOCOLS, frames_from_dataset, split
from .evaluate import evaluate_run, load_frames, load_model, markdown_table
from .plots import pick_frame, plot_landscape, plot_weights
from .train import FusionSettings, run_layout, torch_threads, train_run
from .vot import load_dataset
from .zoo import generate, load_config

GENERATED = "generated data (tracker zoo), not real VOT results"


def _parse_sets(items: list[str]) -> dict[str, str]:
    out = {}
    for it in items:
        if "=" not in it:
            raise SystemExit(f"--set expects key=value, got {it!r}")
        k, v = it.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def _parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def cmd_generate(args: argparse.Namespace) -> None:
    cfg = load_config(args.config, _parse_sets(args.set))
    out = generate(args.out, cfg)
    print(f"[fuse] wrote generated zoo ({cfg['n_sequences']} sequences, "
          f"{cfg['n_trackers']} trackers) to {out}")


def _settings_from(args: argparse.Namespace) -> FusionSettings:
    kw = {f.name: getattr(args, f.name) for f in fields(FusionSettings)
          if getattr(args, f.name, None) is not None}
    return FusionSettings(**kw)


def cmd_make_real(args: argparse.Namespace) -> None:
    try:
        import cv2  # noqa: F401
        import skimage  # noqa: F401
    except ImportError as err:
        raise SystemExit(f"make-real needs OpenCV and scikit-image ({err}); install the extra: "
                         "pip install 'wibergian[trackers]'") from None
    out = real.build(args.out, n_sequences=args.sequences, length_min=args.length_min,
                     length_max=args.length_max, seed=args.seed, workers=args.workers,
                     quiet=args.quiet)
    print(f"[fuse] wrote the real-tracker data set to {out} (VOT folder and "
          f"{real.PACKED_NAME}); train on it with: wibergian fuse train --data {out}")


def cmd_train(args: argparse.Namespace) -> None:
    settings = _settings_from(args)  # checked before any data is read or folder made:
    TrainConfig(steps=settings.steps, batch_size=settings.batch_size, lr=settings.lr,
                optimizer=settings.optimizer, momentum=settings.momentum)
    if real.is_real_source(args.data) or args.data.endswith(".npz"):
        label = args.label or real.LABEL + (" (shipped with the package)"
                                            if real.is_real_source(args.data) else "")
        data = args.data if real.is_real_source(args.data) else str(Path(args.data).resolve())
        source = {"data": data, "experiment": "baseline", "label": label,
                  "dtype": "float32"}
    else:
        data = Path(args.data)
        generated = (data / "zoo_truth.json").is_file()
        label = args.label or (GENERATED if generated else f"VOT data from {data}")
        source = {"data": str(data.resolve()), "experiment": args.experiment, "label": label,
                  "dtype": "float32"}
    frames = load_frames(source)
    print(f"[fuse] {label}: {len(frames.names)} sequences, {len(frames.trackers)} trackers, "
          f"{len(frames)} usable frames")
    t0 = time.perf_counter()
    train_run(frames, args.out, args.protocols, args.seeds, settings, source,
              quiet=not args.verbose, lambda0=not args.no_lambda0)
    print(f"[fuse] trained in {time.perf_counter() - t0:.1f} s; models in {args.out}")


def make_figures(run_dir: Path, results: dict[str, Any]) -> list[Path]:
    """Landscape and weight figures for the first protocol and seed of a run."""
    run = json.loads((run_dir / "run.json").read_text())
    settings = FusionSettings(**run["settings"])
    src = run["source"]
    frames = load_frames(src)
    label = "generated data" if src.get("label") == GENERATED else src.get("label", "")
    out = []
    protocol, seed = run["protocols"][0], run["seeds"][0]
    tr, te = split(frames, protocol, seed)
    d = run_layout(run_dir, protocol, seed)
    T, dt = len(frames.trackers), frames.gt.dtype
    with torch_threads(1):
        trained = load_model(d / "model_damped.pt", settings, T, settings.damping, dt)
        init = settings.model(T).to(dt)
        test = frames.subset(te)
        idx = pick_frame(init, trained, test)
        out.append(plot_landscape(init, trained, test, idx, run_dir / "fusion_landscape.png",
                                  label))
        truth = Path(src["data"]) / "zoo_truth.json"
        out.append(plot_weights(trained, frames.subset(tr), run_dir / "fusion_weights.png",
                                truth, label))
    return out


def cmd_evaluate(args: argparse.Namespace) -> None:
    run_dir = Path(args.run)
    results = evaluate_run(run_dir, curvature=not args.no_curvature, train_iou=args.train_iou)
    print(f"[fuse] {results['label']}")
    print(markdown_table(results))
    if not args.no_figures:
        for f in make_figures(run_dir, results):
            print(f"[fuse] wrote {f}")
    print(f"[fuse] wrote {run_dir / 'results.json'}")


def cmd_compare(args: argparse.Namespace) -> None:
    from .evaluate import compare_runs, fmt_ci

    for protocol, m in compare_runs(args.run_a, args.run_b).items():
        print(f"[fuse] {protocol}: ({args.run_a}) − ({args.run_b}) fused IoU = {fmt_ci(m)}")


def cmd_diagnose(args: argparse.Namespace) -> None:
    from .data import oracle_iou, rank_consistency

    source = {"data": args.data if real.is_real_source(args.data)
              else str(Path(args.data).resolve()), "experiment": args.experiment}
    frames = load_frames(source)
    out = rank_consistency(frames)
    out["per_frame_oracle"] = oracle_iou(frames)
    out["valid_fraction"] = float(frames.valid.double().mean())
    print(json.dumps(out, indent=2))


def register(subparsers: Any) -> None:
    """Add ``fuse`` with sub-commands ``generate``, ``train``, ``evaluate``."""
    p = subparsers.add_parser("fuse", help="tracker fusion (paper section 4)")
    sub = p.add_subparsers(dest="fuse_command", required=True)

    g = sub.add_parser("generate", help="write a generated tracker zoo (VOT folder format)")
    g.add_argument("--out", required=True, help="output folder")
    g.add_argument("--config", default=None, help="zoo TOML (default: the packaged default)")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting, e.g. --set trackers.correlation=0.3")
    g.set_defaults(func=cmd_generate)

    m = sub.add_parser("make-real", help="run real OpenCV trackers on video built from real "
                       "photographs; write a VOT folder (needs the [trackers] extra)")
    m.add_argument("--out", required=True, help="output folder (a finished sequence is cached)")
    m.add_argument("--sequences", type=int, default=real.FULL["n_sequences"])
    m.add_argument("--length-min", type=int, default=real.FULL["length_min"])
    m.add_argument("--length-max", type=int, default=real.FULL["length_max"])
    m.add_argument("--seed", type=int, default=real.FULL["seed"])
    m.add_argument("--workers", type=int, default=2, choices=(1, 2),
                   help="2: one extra process beside this one")
    m.add_argument("--quiet", action="store_true")
    m.set_defaults(func=cmd_make_real)

    t = sub.add_parser("train", help="train damped and λ=0 models for each protocol and seed")
    t.add_argument("--data", required=True,
                   help="VOT folder (sequences/, results/), a packed .npz written by "
                        "make-real, or `real` / `real-quick`: the shipped real-tracker outputs")
    t.add_argument("--out", required=True, help="run folder")
    t.add_argument("--experiment", default="baseline",
                   help="results/<tracker>/<experiment>/ (VOT2018 no-reinit runs: unsupervised)")
    t.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=PROTOCOLS)
    t.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    t.add_argument("--label", default=None, help="data label written in the results")
    t.add_argument("--verbose", action="store_true", help="trainer progress output")
    t.add_argument("--no-lambda0", action="store_true", help="train only the damped model")
    d = FusionSettings()
    for f in fields(FusionSettings):
        default = getattr(d, f.name)
        kind = _parse_bool if isinstance(default, bool) else type(default)
        t.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=kind, default=None,
                       choices=OPTIMIZERS if f.name == "optimizer" else None,
                       help=f"default {default}")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="results.json, table and figures of a trained run")
    e.add_argument("--run", required=True, help="run folder written by `fuse train`")
    e.add_argument("--no-figures", action="store_true")
    e.add_argument("--no-curvature", action="store_true",
                   help="skip the Hessian eigenvalue statistics at the fused minima")
    e.add_argument("--train-iou", action="store_true",
                   help="also score the damped and untrained models on their training frames")
    e.set_defaults(func=cmd_evaluate)

    c = sub.add_parser("compare", help="paired difference (95 %% CI over seeds) of the fused "
                       "IoU of two evaluated runs on the same data")
    c.add_argument("run_a")
    c.add_argument("run_b")
    c.set_defaults(func=cmd_compare)

    dg = sub.add_parser("diagnose", help="is tracker quality a property of the tracker or of "
                        "the sequence? (rank consistency across sequences)")
    dg.add_argument("--data", required=True, help="as for `fuse train`")
    dg.add_argument("--experiment", default="baseline")
    dg.set_defaults(func=cmd_diagnose)


def _margin_lines(results: dict[str, Any]) -> list[str]:
    out = []
    for p, r in results["protocols"].items():
        pm = r["summary"]["paired_margins"]
        out.append(f"- {p}: " + "; ".join(
            f"{name}: " + ", ".join(f"{v:+.3f}" for v in m["values"])
            for name, m in pm.items() if m["n"]))
    return out


def reproduce(out_dir: Path, quick: bool, quiet: bool = False) -> str:
    """Zoo and real-tracker fusion: train both protocols, evaluate; returns markdown."""
    from wibergian.progress import phase

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    overrides: dict[str, Any] = {}
    settings = FusionSettings()
    seeds = [0, 1, 2]
    real_seeds = list(range(10))
    if quick:
        overrides = {"n_sequences": 14, "length_min": 100, "length_max": 180}
        settings = FusionSettings(steps=80, batch_size=96)
        seeds = real_seeds = [0]
    zoo_dir = out_dir / "fusion_zoo"
    t0 = time.perf_counter()
    cfg = load_config(None, overrides)
    with phase("fusion: generating the zoo", quiet=quiet):
        generate(zoo_dir, cfg)
    source = {"data": str(zoo_dir.resolve()), "experiment": "baseline", "label": GENERATED,
              "dtype": "float32"}
    frames = frames_from_dataset(load_dataset(zoo_dir))
    run_dir = out_dir / "fusion_run"
    train_run(frames, run_dir, list(PROTOCOLS), seeds, settings, source, log=lambda *_: None,
              progress_quiet=quiet)
    results = evaluate_run(run_dir, frames, quiet=quiet)
    figs = make_figures(run_dir, results)
    t_zoo = time.perf_counter() - t0
    mode = "quick setting: " if quick else "default setting: "
    lines = [
        "## Tracker fusion (generated data)",
        "",
        f"Generated tracker zoo ({cfg['n_sequences']} sequences, {cfg['n_trackers']} trackers; "
        "**generated data, not VOT2018**), " + mode
        + f"{settings.steps} training steps, seeds {seeds}. Mean IoU on held-out frames"
        + (" (mean ± std over seeds)." if len(seeds) > 1 else "."),
        "",
        markdown_table(results),
        "",
        "Paired margins per seed:", "", *_margin_lines(results), "",
        f"Run time {t_zoo:.0f} s. Full numbers: `results.json` in the run folder "
        f"`{run_dir.name}/` of this experiment's output.", ""]
    for f in figs:
        lines.append(f"![{f.stem}]({f.relative_to(out_dir).as_posix()})")
    # real trackers' outputs (shipped with the package; no OpenCV needed)
    t1 = time.perf_counter()
    real_source = {"data": "real-quick" if quick else "real", "experiment": "baseline",
                   "label": real.LABEL + " (shipped with the package)", "dtype": "float32"}
    rframes = load_frames(real_source)
    real_dir = out_dir / "fusion_real_run"
    train_run(rframes, real_dir, list(PROTOCOLS), real_seeds, settings, real_source,
              log=lambda *_: None, progress_quiet=quiet)
    rresults = evaluate_run(real_dir, rframes, quiet=quiet, curvature=False)
    lines += [
        "", "## Tracker fusion (real trackers' output)", "",
        f"{len(rframes.trackers)} real OpenCV tracker configurations run on "
        f"{len(rframes.names)} sequences ({len(rframes)} usable frames) rendered from real "
        "photographs with synthetic motion and exact ground truth (the data set shipped in "
        "the package, built by `wibergian fuse make-real`); " + mode
        + f"{settings.steps} training steps, seeds {real_seeds}.",
        "", markdown_table(rresults), "",
        f"Run time {time.perf_counter() - t1:.0f} s. Full numbers: `results.json` in "
        f"`{real_dir.name}/`.", ""]
    return "\n".join(lines)
