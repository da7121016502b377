"""``wibergian pose study``: every variant over seeds, with paired confidence intervals.

    wibergian pose study --out runs/study                       # built-in clip
    wibergian pose study --poses my_poses.npy --seeds 3 --out runs/study_mine

Writes ``study.json`` (every run, every seed, the aggregated table) and ``study.md`` (the
table) in ``--out``; ``study.json`` is rewritten after every seed, so an interrupted study
keeps what it finished.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .augment import validation_data
from .study import VARIANTS, StudySettings, markdown, run_study
from .train import PRIOR_SOURCES


def cmd_study(args: argparse.Namespace) -> None:
    from .cli import _load_data

    base = StudySettings.tiny() if args.tiny else StudySettings()
    n_seeds = len(base.seeds) if args.seeds is None else args.seeds
    seeds = tuple(range(args.first_seed, args.first_seed + n_seeds))
    variants = tuple(args.variants) if args.variants else base.variants
    s = StudySettings(
        seeds=seeds, modes=tuple(args.modes or base.modes), variants=variants,
        mono_variants=tuple(v for v in base.mono_variants if v in variants)
        if args.mono_variants is None else tuple(args.mono_variants),
        num_models=args.models or base.num_models, num_basis=args.basis or base.num_basis,
        steps=args.steps or base.steps, batch_size=args.batch_size or base.batch_size,
        rotation_grid=args.rotation_grid or base.rotation_grid, grid_frames=base.grid_frames,
        prior=args.pose_prior, damping=args.damping, lr=args.lr)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def make_data(seed: int):  # the detector seed follows the study seed
        data = _load_data(args, train_fraction=args.train_fraction,
                          detector_seed=args.detector_seed + seed)
        if args.validate:  # choose settings here, on training frames only
            data = validation_data(data, s.validation_fraction, s.validation_gap)
        return data

    results = run_study(make_data, s, quiet=args.quiet, out=out / "study.json")
    table = markdown(results)
    d = results.get("data", {})
    head = (f"Data: {d.get('source')} ({'generated' if d.get('generated_2d') else 'real'} 2D "
            f"detections); {d.get('train_frames')} training / {d.get('test_frames')} held-out "
            f"frames; seeds {list(seeds)} (detector seed = {args.detector_seed} + seed); "
            f"K = {s.num_models}, B = {s.num_basis}, {s.steps} steps of {s.batch_size} frames.")
    (out / "study.md").write_text(head + "\n\n" + table + "\n")
    (out / "study.json").write_text(__import__("json").dumps(results, indent=2))
    print(head)
    print(table)
    print(f"[pose study] written {out / 'study.md'} and {out / 'study.json'}")


def register_study(sub: Any, data_args: Callable, formatter: type) -> None:
    q = sub.add_parser(
        "study", formatter_class=formatter,
        help="untrained L2/Huber, PPCA refit, trained L2/Huber, parameter-group ablations, "
             "grid search at matched time and the generalisation recipes, over seeds, with "
             "paired CIs against untrained Huber",
        description=__doc__.split("\n\n")[0])
    q.add_argument("--seeds", type=int, default=None, help="number of seeds (default 3)")
    q.add_argument("--first-seed", type=int, default=0)
    q.add_argument("--modes", nargs="+", choices=("multi", "mono"), default=None,
                   help="lifting modes (default: multi and mono)")
    q.add_argument("--variants", nargs="+", choices=tuple(VARIANTS), default=None,
                   help="variants to run (default: all); untrained_huber is the baseline")
    q.add_argument("--mono-variants", nargs="+", choices=tuple(VARIANTS), default=None,
                   help="variants run in monocular mode (default: the study's mono set)")
    q.add_argument("--models", type=int, default=None, help="K (default 3)")
    q.add_argument("--basis", type=int, default=None, help="B (default 8)")
    q.add_argument("--pose-prior", choices=PRIOR_SOURCES, default="half",
                   help="poses the PPCA prior of the untrained and trained variants is fit on "
                        "(half: first half of the training frames; train: all; *_mirror: and "
                        "their mirror images); refit_ppca always uses train, *_wide variants "
                        "their own")
    q.add_argument("--steps", type=int, default=None, help="training steps (default 60)")
    q.add_argument("--lr", type=float, default=1e-2, help="base learning rate (Adam)")
    q.add_argument("--damping", type=float, default=0.1,
                   help="λ of the implicit gradient through the lifting's minimum")
    q.add_argument("--batch-size", type=int, default=None, help="frames per step (default 16)")
    q.add_argument("--rotation-grid", type=int, default=None,
                   help="angles of the lifting's rotation search (default 16)")
    q.add_argument("--validate", action="store_true",
                   help="run on the validation split of the TRAINING frames (fit on the first "
                        "80 %%, evaluate on the last 20 %% after a 12-frame gap; the held-out "
                        "frames are dropped): for choosing settings")
    q.add_argument("--tiny", action="store_true",
                   help="tiny settings for a smoke run (2 seeds, 3 steps, 4-camera only)")
    q.add_argument("--out", type=Path, default=Path("runs/pose_study"), help="output folder")
    q.add_argument("--quiet", action="store_true", help="one progress line at the end")
    data_args(q, 0.7)
    q.set_defaults(func=cmd_study)
