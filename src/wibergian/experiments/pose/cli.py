"""``wibergian pose {train,evaluate}`` and the ``reproduce`` hook.

    wibergian pose train --mode multi --models 6 --loss huber --out runs/pose
    wibergian pose evaluate --run runs/pose --poses my_poses.npy

Data: the built-in CMU clip seen by the four Human3.6M cameras through the simulated detector
(GENERATED 2D detections, real 3D motion) unless ``--poses FILE.npy`` ((T, 17, 3) mm,
Human3.6M joint order, z up; same cameras and detector) or ``--h36m ROOT`` (3d-pose-baseline
layout) is given.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from wibergian.progress import phase
from wibergian.train import TrainConfig, add_train_args, config_from_args, run_dir_from_args

from . import datasets
from .evaluate import evaluate_model, format_metrics, summary
from .model import ModelConfig
from .plots import plot_joint_weights, plot_reconstructions, plot_sorted_errors
from .suite import SuiteSettings, count_parameters, markdown_table, run_suite
from .train import build_model, load_model, train_model

GENERATED_NOTE = ("GENERATED 2D detections (simulated stacked-hourglass-like detector) of "
                  "REAL 3D motion (CMU mocap clip) seen by the 4 real Human3.6M cameras")


def _load_data(args: argparse.Namespace, train_fraction: float | None) -> datasets.PoseData:
    if getattr(args, "h36m", None):
        return datasets.load_h36m(args.h36m)
    if getattr(args, "poses", None):
        return datasets.load_npy(args.poses, train_fraction=train_fraction)
    return datasets.load_default()


#: `pose train` flags that shape the training trajectory: stored in config.json, compared
#: on --resume (with the data source).
TRAJECTORY_KEYS = ("mode", "models", "basis", "loss", "learn", "pose_prior", "grid", "damping")


def _trajectory_settings(args: argparse.Namespace) -> dict[str, Any]:
    data = args.h36m or args.poses
    return {**{k: getattr(args, k) for k in TRAJECTORY_KEYS},
            "data": str(data) if data else "built-in CMU clip"}


def cmd_train(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    run_dir, resume = run_dir_from_args(args, Path("runs/pose"))  # flags checked before data
    tcfg = config_from_args(args, TrainConfig(steps=200, batch_size=32, lr=1e-2),
                            extra=_trajectory_settings(args))
    data = _load_data(args, train_fraction=0.7)
    cfg = ModelConfig(mode=args.mode, loss=args.loss, grid=args.grid, damping=args.damping)
    model = build_model(data, cfg, args.models, args.basis, source=args.pose_prior,
                        seed=args.seed)
    print(f"[pose] {data.source}: {len(data.train_idx)} train / {len(data.test_idx)} test "
          f"frames; {'generated' if data.generated else 'real'} 2D detections")
    before = evaluate_model(model, data.test())
    print(f"[pose] untrained: {format_metrics(before)}")
    model, info = train_model(model, data.train(), tcfg, run_dir, learn=args.learn,
                              resume=resume)
    after = evaluate_model(model, data.test())
    print(f"[pose] trained ({info['learnable_parameters']} parameters, {info['seconds']:.0f} s):"
          f" {format_metrics(after)}")
    if run_dir is not None:
        out = {"untrained": summary(before), "trained": summary(after), "train": info,
               "parameters": count_parameters(model)}
        (Path(run_dir) / "metrics.json").write_text(json.dumps(out, indent=2))
        print(f"[pose] model and metrics in {run_dir}")


def cmd_evaluate(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    model = load_model(Path(args.run))
    data = _load_data(args, train_fraction=None)
    test = data.test()
    m = evaluate_model(model, test)
    name = Path(args.poses).stem if args.poses else ("h36m" if args.h36m else "default")
    out = Path(args.out) if args.out else Path(args.run) / f"eval_{name}.json"
    out.write_text(json.dumps({**summary(m), "per_frame_P1": m["per_frame_P1"]}, indent=2))
    print(f"[pose] {data.source} ({len(test.poses3d)} frames): {format_metrics(m)}")
    print(f"[pose] metrics written to {out}")


def register(subparsers: Any) -> None:
    """Add ``pose`` with its ``train`` and ``evaluate`` sub-commands."""
    p = subparsers.add_parser("pose", help="3D human pose from 2D detections (paper section 5)")
    sub = p.add_subparsers(dest="pose_command", required=True)

    def data_args(q: argparse.ArgumentParser) -> None:
        q.add_argument("--poses", type=Path, default=None,
                       help=".npy (T, 17, 3) mm, Human3.6M joint order, z up")
        q.add_argument("--h36m", type=Path, default=None,
                       help="Human3.6M root in the 3d-pose-baseline layout")
        q.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")

    t = sub.add_parser("train", help="learn the lifting energy's parameters")
    t.add_argument("--mode", choices=("mono", "multi"), default="multi")
    t.add_argument("--models", type=int, default=6, help="number of PPCA models K")
    t.add_argument("--basis", type=int, default=12, help="basis vectors per model B")
    t.add_argument("--loss", choices=("l2", "huber"), default="l2")
    t.add_argument("--learn", choices=("all", "basis"), default="all",
                   help="all parameters, or only μ, e, σ and the camera weights")
    t.add_argument("--pose-prior", choices=("half", "train"), default="half",
                   help="poses the initial PPCA is fit on: first half of the training frames "
                        "(default) or all of them")
    t.add_argument("--grid", type=int, default=24, help="rotation grid size")
    t.add_argument("--damping", type=float, default=0.1, help="λ of the implicit gradient")
    data_args(t)
    add_train_args(t, TrainConfig(steps=200, batch_size=32, lr=1e-2))
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="P1/P2/P3 of a trained run on held-out poses")
    e.add_argument("--run", type=Path, required=True, help="run folder of `pose train`")
    e.add_argument("--out", type=Path, default=None, help="metrics file (default: in --run)")
    data_args(e)
    e.set_defaults(func=cmd_evaluate)


def reproduce(out_dir: Path, quick: bool, quiet: bool = False) -> str:
    """Run the suite on the built-in data; write figures and ``pose_results.json`` in
    ``out_dir``; return the markdown section."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data = datasets.load_default()
    settings = SuiteSettings.quick() if quick else SuiteSettings()
    variants = sum(7 if m == "multi" else len(settings.mono_variants) for m in settings.modes)
    with phase("pose: variants (untrained, trained, grid search)", variants, unit="variant",
               quiet=quiet) as p:
        results, art = run_suite(data, settings, out_dir / "pose_runs",
                                 log=lambda msg: (p.note(msg), p.update()))
    results["note"] = GENERATED_NOTE
    results["seconds"] = time.perf_counter() - t0
    figs = make_figures(out_dir, results, art)
    huber = art["models"].get("trained_huber")
    if huber is not None:
        results["multi"]["trained_huber"]["parameters"] = count_parameters(huber)
    (out_dir / "pose_results.json").write_text(json.dumps(results, indent=2))
    lines = [
        "## 3D human pose (paper section 5)", "",
        f"Data: {GENERATED_NOTE}; {results['data']['train_frames']} training frames, "
        f"{results['data']['test_frames']} held-out later frames. "
        f"{'Quick' if quick else 'Full'} setting: K = {settings.num_models} models, "
        f"B = {settings.num_basis} basis vectors, {settings.steps} training steps of "
        f"{settings.batch_size} frames. Took {results['seconds']:.0f} s.", "",
        markdown_table(results), "",
    ]
    lines += [f"![{f.stem}]({f.name})" for f in figs]
    return "\n".join(lines) + "\n"


def make_figures(out_dir: Path, results: dict, art: dict) -> list[Path]:
    """Reconstructions, sorted errors and joint-weight heatmaps from a suite run."""
    figs = []
    preds = {k: v for k, v in art["pred"].items() if k in ("untrained", "trained_l2",
                                                              "trained_huber")}
    per_frame = {k: v for k, v in art.get("per_frame", {}).items() if k in preds}
    if "trained_huber" in preds:
        figs.append(plot_reconstructions(
            preds, art["gt"], per_frame["trained_huber"], out_dir / "pose_reconstructions.png",
            "4-camera reconstructions (red) vs ground truth (blue); generated 2D detections"))
        figs.append(plot_sorted_errors(
            per_frame, "trained_huber", out_dir / "pose_sorted_errors.png",
            "per-frame P1, 4 cameras, held-out frames (generated 2D detections)"))
        m = art["models"]["trained_huber"]
        figs.append(plot_joint_weights(
            m.log_joint_w, m.mean * 1000.0, out_dir / "pose_joint_weights_multi.png",
            "learnt joint weights, 4-camera Huber model"))
    mono = art["models"].get("mono_trained_l2")
    if mono is not None:
        figs.append(plot_joint_weights(
            mono.log_joint_w, mono.mean * 1000.0, out_dir / "pose_joint_weights_mono.png",
            "learnt joint weights, monocular L2 model"))
    return figs
