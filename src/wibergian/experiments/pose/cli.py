"""``wibergian pose {train,evaluate,study}`` and the ``reproduce`` hook.

    wibergian pose train --mode multi --models 6 --loss huber --out runs/pose
    wibergian pose evaluate --run runs/pose --poses my_poses.npy
    wibergian pose evaluate --untrained --mode mono --poses my_poses.npy
    wibergian pose study --poses my_poses.npy --seeds 3 --out runs/study

Data: the built-in CMU clip seen by the four Human3.6M cameras through the simulated detector
(GENERATED 2D detections, real 3D motion) unless ``--poses FILE.npy`` ((T, 17, 3), Human3.6M
joint order; mm and z up, or say ``--units``/``--up``; same cameras and detector) or
``--h36m ROOT`` (3d-pose-baseline layout) is given.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from wibergian.train import TrainConfig, add_train_args, config_from_args, run_dir_from_args

from . import datasets, plausibility
from .detector import DetectorConfig
from .evaluate import evaluate_model, format_metrics, summary
from .model import LEARN_GROUPS, ModelConfig
from .plots import plot_joint_weights, plot_reconstructions, plot_sorted_errors
from .suite import SuiteSettings, count_parameters, markdown_table, run_suite
from .train import (
    PRIOR_SOURCES,
    build_hybrid_model,
    build_model,
    load_model,
    source_poses,
    train_model,
)

GENERATED_NOTE = ("GENERATED 2D detections (simulated stacked-hourglass-like detector) of "
                  "REAL 3D motion (CMU mocap clip) seen by the 4 real Human3.6M cameras")
FORMATTER = argparse.ArgumentDefaultsHelpFormatter


def _load_data(args: argparse.Namespace, train_fraction: float | None,
               reference_bones: list[float] | None = None,
               detector_seed: int | None = None) -> datasets.PoseData:
    seed = args.detector_seed if detector_seed is None else detector_seed
    det = DetectorConfig(seed=seed)
    if getattr(args, "h36m", None):
        return datasets.load_h36m(args.h36m, detector=det)
    if getattr(args, "poses", None):
        return datasets.load_npy(
            args.poses, detector=det, train_fraction=train_fraction, units=args.units,
            up=args.up, mirror=args.mirror, subsample=args.subsample, gap=args.gap,
            reference_bones=reference_bones,
            allow_skeleton_mismatch=args.allow_skeleton_mismatch)
    if train_fraction is None:
        train_fraction = 0.7
    return datasets.load_default(step=5 * args.subsample, detector=det,
                                 train_fraction=train_fraction,
                                 gap_seconds=args.gap / (24.0 / args.subsample),
                                 held_out=args.held_out, body=args.body)


#: `pose train` flags that shape the training trajectory: stored in config.json, compared
#: on --resume (with the data source).
TRAJECTORY_KEYS = ("mode", "models", "basis", "loss", "learn", "pose_prior", "grid", "damping",
                   "anchor", "validation_fraction", "augment", "train_fraction", "gap",
                   "subsample", "units", "up", "mirror")


def _trajectory_settings(args: argparse.Namespace) -> dict[str, Any]:
    data = getattr(args, "h36m", None) or getattr(args, "poses", None)
    wide = getattr(args, "wide_basis", 0) or 0  # recorded only when used (older runs resume)
    return {**{k: getattr(args, k, None) for k in TRAJECTORY_KEYS},
            **({"wide_basis": wide} if wide > 0 else {}),
            "data": str(data) if data else "built-in CMU clip" + (
                ", other body" if getattr(args, "body", "cmu") == "other" else "")}


def cmd_train(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    run_dir, resume = run_dir_from_args(args, Path("runs/pose"))  # flags checked before data
    tcfg = config_from_args(args, TrainConfig(steps=90, batch_size=16, lr=1e-2),
                            extra=_trajectory_settings(args))
    data = _load_data(args, train_fraction=args.train_fraction)
    cfg = ModelConfig(mode=args.mode, loss=args.loss, grid=args.grid, damping=args.damping)
    if args.wide_basis > 0:  # K models on --pose-prior half + one wide model (study: *_hybrid)
        if args.pose_prior != "half":
            raise SystemExit("--wide-basis builds its K models on the first half of the "
                             "training frames; leave --pose-prior at half")
        model = build_hybrid_model(data, cfg, args.models, args.basis, args.wide_basis,
                                   seed=args.seed)
    else:
        model = build_model(data, cfg, args.models, args.basis, source=args.pose_prior,
                            seed=args.seed)
    print(f"[pose] {data.source}: {len(data.train_idx)} train / {len(data.test_idx)} test "
          f"frames; {'generated' if data.generated else 'real'} 2D detections")
    before = evaluate_model(model, data.test(), progress="pose: untrained model",
                            quiet=args.quiet)
    print(f"[pose] untrained: {format_metrics(before)}")
    train, validation = data.train(), None
    if args.validation_fraction > 0:
        from .augment import validation_split
        train, validation = validation_split(train, args.validation_fraction, args.gap // 2)
    if args.augment > 0:
        from .augment import augmented_training_data
        train = augmented_training_data(train, args.augment, args.seed)
    model, info = train_model(model, train, tcfg, run_dir, learn=args.learn, resume=resume,
                              anchor=args.anchor, validation=validation)
    after = evaluate_model(model, data.test(), progress="pose: trained model",
                           quiet=args.quiet)
    print(f"[pose] trained ({info['learnable_parameters']} parameters, {info['seconds']:.0f} s):"
          f" {format_metrics(after)}")
    if run_dir is not None:
        bones = plausibility.bone_medians(source_poses(data, "train")).tolist()
        out = {"untrained": summary(before), "trained": summary(after), "train": info,
               "parameters": count_parameters(model)}
        (Path(run_dir) / "metrics.json").write_text(json.dumps(out, indent=2))
        meta_path = Path(run_dir) / "pose_model.json"
        meta = json.loads(meta_path.read_text())
        meta["skeleton_bone_median_mm"] = bones
        meta_path.write_text(json.dumps(meta, indent=2))
        print(f"[pose] model and metrics in {run_dir}")


def cmd_evaluate(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    if args.untrained:
        if args.run is not None:
            raise SystemExit("wibergian pose evaluate: give --run or --untrained, not both")
        data = _load_data(args, train_fraction=args.train_fraction)
        prior = data if len(data.train_idx) else datasets.load_default()
        cfg = ModelConfig(mode=args.mode, loss=args.loss, grid=args.grid)
        model = build_model(prior, cfg, args.models, args.basis, seed=args.seed)
        label = f"untrained_{args.mode}_{args.loss}"
    else:
        if args.run is None:
            raise SystemExit("wibergian pose evaluate: give --run RUN_DIR (a `pose train` "
                             "folder) or --untrained")
        model = load_model(Path(args.run))
        meta = json.loads((Path(args.run) / "pose_model.json").read_text())
        data = _load_data(args, train_fraction=args.train_fraction,
                          reference_bones=meta.get("skeleton_bone_median_mm"))
        label = None
    test = data.test()
    m = evaluate_model(model, test, progress="pose evaluate", quiet=args.quiet)
    name = Path(args.poses).stem if args.poses else ("h36m" if args.h36m else "default")
    if args.out:
        out = Path(args.out)
    elif label is None:
        out = Path(args.run) / f"eval_{name}.json"
    else:
        out = Path(f"eval_{label}_{name}.json")
    out.write_text(json.dumps({**summary(m), "skeleton": data.skeleton,
                               "per_frame_P1": m["per_frame_P1"]}, indent=2))
    print(f"[pose] {data.source} ({len(test.poses3d)} frames): {format_metrics(m)}")
    print(f"[pose] metrics written to {out}")


def data_args(q: argparse.ArgumentParser, train_fraction: float | None) -> None:
    """Data flags shared by train, evaluate and study."""
    g = q.add_argument_group("data")
    g.add_argument("--poses", type=Path, default=None,
                   help=".npy (T, 17, 3), Human3.6M joint order (docs/pose-data.md); "
                        "default: the built-in CMU clip")
    g.add_argument("--units", choices=sorted(plausibility.UNITS_MM), default="mm",
                   help="length unit of --poses")
    g.add_argument("--up", choices=("z", "y"), default="z", help="vertical axis of --poses "
                   "(y up is turned to z up by (x, y, z) -> (x, -z, y))")
    g.add_argument("--mirror", action="store_true",
                   help="swap the left/right joint labels of --poses")
    g.add_argument("--allow-skeleton-mismatch", action="store_true",
                   help="warn instead of refusing when bone lengths differ from the model's "
                        f"skeleton by more than {round(100 * plausibility.SKELETON_TOLERANCE)} %%")
    g.add_argument("--h36m", type=Path, default=None,
                   help="Human3.6M root in the 3d-pose-baseline layout")
    g.add_argument("--subsample", type=int, default=1,
                   help="keep every n-th frame (built-in clip: of its 24 fps)")
    g.add_argument("--train-fraction", type=float, default=train_fraction,
                   help="first fraction of the frames that trains (None: all frames test)")
    g.add_argument("--gap", type=int, default=24,
                   help="frames dropped between the training and test frames (24 = 1 s at "
                        "the built-in clip's 24 fps), so test frames are not near-copies of "
                        "the last training frames")
    g.add_argument("--held-out", choices=("end", "start"), default="end",
                   help="built-in clip: hold out its end (default split) or its start")
    g.add_argument("--body", choices=("cmu", "other"), default="cmu",
                   help="built-in clip: the recorded CMU subject, or 'other': the clip's real "
                        "joint angles through a generated body with other bone proportions, "
                        "mirrored (a second motion source; docs/pose.md)")
    g.add_argument("--detector-seed", type=int, default=0,
                   help="seed of the simulated 2D detector")
    g.add_argument("--threads", type=int, default=1, help="torch CPU threads")


def model_args(q: argparse.ArgumentParser) -> None:
    q.add_argument("--mode", choices=("mono", "multi"), default="multi")
    # K = 3, B = 8 (and 90 steps of 16 frames for train): chosen on the validation split of
    # the training frames over K = 6, B = 12 with 200 steps of 32 (docs/pose.md)
    q.add_argument("--models", type=int, default=3, help="number of PPCA models K")
    q.add_argument("--basis", type=int, default=8, help="basis vectors per model B")
    q.add_argument("--loss", choices=("l2", "huber"), default="huber",
                   help="data term of the fitting energy")
    q.add_argument("--rotation-grid", "--grid", dest="grid", type=int, default=24,
                   help="angles of the lifting's rotation search (not the reviewers' grid "
                        "search of hand-set scalars: see `pose study`)")


def register(subparsers: Any) -> None:
    """Add ``pose`` with its ``train``, ``evaluate`` and ``study`` sub-commands."""
    p = subparsers.add_parser("pose", help="3D human pose from 2D detections (paper section 5)",
                              formatter_class=FORMATTER)
    sub = p.add_subparsers(dest="pose_command", required=True)

    t = sub.add_parser("train", help="learn the lifting energy's parameters",
                       formatter_class=FORMATTER)
    model_args(t)
    t.add_argument("--learn", choices=sorted(LEARN_GROUPS), default="all",
                   help="parameters learnt: all; basis = μ, e, σ, camera weights; no_basis = "
                        "all but μ, e; scalars = ρ, δ, T, camera weights, fusion biases")
    t.add_argument("--pose-prior", choices=PRIOR_SOURCES, default="half",
                   help="poses the initial PPCA is fit on: first half of the training frames "
                        "or all of them; *_mirror: and their mirror images")
    t.add_argument("--wide-basis", type=int, default=0,
                   help="add one wide PPCA model of this many components, fit on all training "
                        "poses, to the K models (the study's *_hybrid variants; 0: none)")
    t.add_argument("--damping", type=float, default=0.1, help="λ of the implicit gradient")
    t.add_argument("--anchor", type=float, default=0.0,
                   help="weight of Σ||p - p0||² pulling parameters toward the untrained ones")
    t.add_argument("--validation-fraction", type=float, default=0.0,
                   help="last fraction of the training frames kept for early stopping")
    t.add_argument("--augment", type=int, default=0,
                   help="augmented copies of the training poses (rotated, scaled, mirrored)")
    data_args(t, 0.7)
    add_train_args(t, TrainConfig(steps=90, batch_size=16, lr=1e-2))
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="P1/P2/P3 (mean, median, p90, outliers) of a trained "
                       "run or of the untrained model", formatter_class=FORMATTER)
    e.add_argument("--run", type=Path, default=None, help="run folder of `pose train`")
    e.add_argument("--untrained", action="store_true",
                   help="evaluate the untrained model (PPCA on the training frames of the "
                        "data, or of the built-in clip when every frame is a test frame)")
    model_args(e)
    e.add_argument("--seed", type=int, default=0, help="k-means seed of --untrained")
    e.add_argument("--out", type=Path, default=None,
                   help="metrics file (default: eval_<data>.json in --run, or in the current "
                        "folder with --untrained)")
    e.add_argument("--quiet", action="store_true", help="one progress line at the end")
    data_args(e, None)
    e.set_defaults(func=cmd_evaluate)

    from .study_cli import register_study
    register_study(sub, data_args, FORMATTER)


def reproduce(out_dir: Path, quick: bool, quiet: bool = False) -> str:
    """Run the suite on the built-in data; write figures and ``pose_results.json`` in
    ``out_dir``; return the markdown section."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data = datasets.load_default()
    settings = SuiteSettings.quick() if quick else SuiteSettings()
    results, art = run_suite(data, settings, out_dir / "pose_runs", quiet=quiet)
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
