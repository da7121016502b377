"""``wibergian fuse {generate,train,evaluate}`` and the ``reproduce`` hook.

    wibergian fuse generate --out zoo/                      # generated VOT-format folder
    wibergian fuse train --data zoo/ --out runs/fuse        # both protocols, seeds 0 1 2
    wibergian fuse evaluate --run runs/fuse                 # results.json, figures, table
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

from wibergian.progress import phase
from wibergian.train import TrainConfig
from wibergian.train.config import OPTIMIZERS

from .data import PROTOCOLS, frames_from_dataset, split
from .evaluate import evaluate_run, load_model, markdown_table
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


def cmd_train(args: argparse.Namespace) -> None:
    settings = _settings_from(args)  # checked before any data is read or folder made:
    TrainConfig(steps=settings.steps, batch_size=settings.batch_size, lr=settings.lr,
                optimizer=settings.optimizer, momentum=settings.momentum)
    data = Path(args.data)
    generated = (data / "zoo_truth.json").is_file()
    label = args.label or (GENERATED if generated else f"VOT data from {data}")
    source = {"data": str(data.resolve()), "experiment": args.experiment, "label": label,
              "dtype": "float32"}
    ds = load_dataset(data, experiment=args.experiment)
    frames = frames_from_dataset(ds)
    print(f"[fuse] {label}: {len(ds.sequences)} sequences, {len(ds.trackers)} trackers, "
          f"{len(frames)} usable frames")
    t0 = time.perf_counter()
    train_run(frames, args.out, args.protocols, args.seeds, settings, source,
              quiet=not args.verbose)
    print(f"[fuse] trained in {time.perf_counter() - t0:.1f} s; models in {args.out}")


def make_figures(run_dir: Path, results: dict[str, Any]) -> list[Path]:
    """Landscape and weight figures for the first protocol and seed of a run."""
    run = json.loads((run_dir / "run.json").read_text())
    settings = FusionSettings(**run["settings"])
    src = run["source"]
    frames = frames_from_dataset(load_dataset(src["data"], experiment=src["experiment"]))
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
    results = evaluate_run(run_dir)
    print(f"[fuse] {results['label']}")
    print(markdown_table(results))
    for p, r in results["protocols"].items():
        print(f"[fuse] {p}: acceptance {json.dumps(r['summary']['acceptance'])}")
    if not args.no_figures:
        for f in make_figures(run_dir, results):
            print(f"[fuse] wrote {f}")
    print(f"[fuse] wrote {run_dir / 'results.json'}")


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

    t = sub.add_parser("train", help="train damped and λ=0 models for each protocol and seed")
    t.add_argument("--data", required=True, help="VOT folder (sequences/, results/)")
    t.add_argument("--out", required=True, help="run folder")
    t.add_argument("--experiment", default="baseline",
                   help="results/<tracker>/<experiment>/ (VOT2018 no-reinit runs: unsupervised)")
    t.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=PROTOCOLS)
    t.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    t.add_argument("--label", default=None, help="data label written in the results")
    t.add_argument("--verbose", action="store_true", help="trainer progress output")
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
    e.set_defaults(func=cmd_evaluate)


def reproduce(out_dir: Path, quick: bool, quiet: bool = False) -> str:
    """Generate the zoo, train both protocols, evaluate; returns a markdown section."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    overrides: dict[str, Any] = {}
    settings = FusionSettings()
    seeds = [0, 1, 2]
    if quick:
        overrides = {"n_sequences": 14, "length_min": 100, "length_max": 180}
        settings = FusionSettings(steps=80, batch_size=96)
        seeds = [0]
    zoo_dir = out_dir / "fusion_zoo"
    t0 = time.perf_counter()
    cfg = load_config(None, overrides)
    generate(zoo_dir, cfg)
    source = {"data": str(zoo_dir.resolve()), "experiment": "baseline", "label": GENERATED,
              "dtype": "float32"}
    frames = frames_from_dataset(load_dataset(zoo_dir))
    run_dir = out_dir / "fusion_run"
    with phase("fusion: training (damped and λ = 0 per protocol and seed)",
               2 * len(PROTOCOLS) * len(seeds), unit="model", quiet=quiet) as p:
        train_run(frames, run_dir, list(PROTOCOLS), seeds, settings, source,
                  log=lambda msg: (p.note(msg), p.update()))
    with phase("fusion: evaluation and figures", quiet=quiet):
        results = evaluate_run(run_dir, frames)
        figs = make_figures(run_dir, results)
    elapsed = time.perf_counter() - t0
    lines = [
        "## Tracker fusion (generated data)",
        "",
        f"Generated tracker zoo ({cfg['n_sequences']} sequences, {cfg['n_trackers']} trackers; "
        "**generated data, not VOT2018**), "
        + ("quick setting: " if quick else "default setting: ")
        + f"{settings.steps} training steps, seeds {seeds}. Mean IoU on held-out frames"
        + (" (mean ± std over seeds)." if len(seeds) > 1 else "."),
        "",
        markdown_table(results),
        "",
    ]
    for p, r in results["protocols"].items():
        acc = r["summary"]["acceptance"]
        lines.append(f"- {p}: fused − best single = "
                     + ", ".join(f"{m:+.3f}" for m in acc["margin_over_best_single"])
                     + "; fused − median fusion = "
                     + ", ".join(f"{m:+.3f}" for m in acc["margin_over_median_fusion"]))
    lines += ["", f"Run time {elapsed:.0f} s. Full numbers: `results.json` in the run folder "
              f"`{run_dir.name}/` of this experiment's output.", ""]
    for f in figs:
        rel = f.relative_to(out_dir)
        lines.append(f"![{f.stem}]({rel.as_posix()})")
    lines.append("")
    return "\n".join(lines)
