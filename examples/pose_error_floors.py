"""How much of the pose lifting's held-out error can learning remove? Error floors.

The untrained Huber lifting (PPCA on the first half of the training frames, or refit on all
of them) evaluated on the held-out frames of the built-in data (REAL CMU motion) from three
kinds of 2D input: the simulated detections (GENERATED: noise, gross errors, swaps, misses),
detections with Gaussian noise only, and the exact projections (no detector at all). The
error that remains with exact 2D input is the pose model's: the held-out poses are not in the
span of the PPCA fit on other frames. Learning can move μ and e but cannot see the held-out
motion, so this bounds what the learnt energy can gain over the untrained one.

    python examples/pose_error_floors.py [--quick] [--models K] [--basis B]
    python examples/pose_error_floors.py --validate --modes multi --models 1 --basis 16 \
        --sources half train train_mirror        # on training frames (choosing the prior)
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import torch

from wibergian.experiments.pose import datasets
from wibergian.experiments.pose.augment import validation_data
from wibergian.experiments.pose.detector import DetectorConfig
from wibergian.experiments.pose.evaluate import evaluate_model
from wibergian.experiments.pose.model import ModelConfig
from wibergian.experiments.pose.train import PRIOR_SOURCES, build_model


def floors(mode: str, num_models: int, num_basis: int, grid: int, frames: int | None = None,
           sources: tuple[str, ...] = ("half", "train"), validate: bool = False, seed: int = 0
           ) -> dict[str, dict[str, float]]:
    """{pose prior: {input: held-out P1 mm}} for the untrained Huber lifting. ``validate``:
    on the validation split of the training frames instead (``pose study --validate``)."""
    def load(det: DetectorConfig):
        d = datasets.load_default(detector=det)
        return validation_data(d) if validate else d

    data = load(DetectorConfig(seed=seed))
    noise_only = load(DetectorConfig(seed=seed, gross_rate=0.0, swap_rate=0.0,
                                     missing_rate=0.0))
    pick = None if frames is None else torch.arange(frames)
    test = data.test() if pick is None else data.test().subset(pick)
    test_noise = noise_only.test() if pick is None else noise_only.test().subset(pick)
    exact = replace(test, poses2d=test.poses2d_clean.clone(),
                    visible=torch.ones_like(test.visible))
    out = {}
    for source in sources:
        model = build_model(data, ModelConfig(mode=mode, loss="huber", grid=grid), num_models,
                            num_basis, source=source, seed=seed)
        out[source] = {name: float(evaluate_model(model, d)["P1"])
                       for name, d in (("detections", test), ("noise only", test_noise),
                                       ("exact 2D", exact))}
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--models", type=int, default=3, help="K")
    ap.add_argument("--basis", type=int, default=8, help="B")
    ap.add_argument("--rotation-grid", type=int, default=16)
    ap.add_argument("--quick", action="store_true", help="4-camera only, 32 held-out frames")
    ap.add_argument("--sources", nargs="+", choices=PRIOR_SOURCES, default=["half", "train"],
                    help="poses the PPCA prior is fit on")
    ap.add_argument("--validate", action="store_true",
                    help="on the validation split of the training frames (used to choose "
                         "settings), not the held-out frames")
    ap.add_argument("--modes", nargs="+", choices=("multi", "mono"), default=["multi", "mono"])
    ap.add_argument("--seed", type=int, default=0, help="detector and k-means seed")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    res = {}
    where = "validation" if args.validate else "held-out"
    for mode in (("multi",) if args.quick else args.modes):
        res[mode] = floors(mode, args.models, args.basis, args.rotation_grid,
                           32 if args.quick else None, tuple(args.sources), args.validate,
                           args.seed)
        for source, row in res[mode].items():
            cells = ", ".join(f"{k} {v:.1f}" for k, v in row.items())
            print(f"{mode}, K {args.models}, B {args.basis}, PPCA on {source} (training "
                  f"frames): {where} P1 (mm) {cells}")
    return res


if __name__ == "__main__":
    main()
