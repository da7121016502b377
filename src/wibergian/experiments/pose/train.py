"""Building, training, saving and loading the pose-lifting model.

Training minimises the mean per-joint position error (Protocol 1, root-centred, in metres)
of the fused reconstruction, through the minimum of the fitting energy (``wibergian.argmin`` and
``wibergian.lstsq``), with the shared trainer ``wibergian.train.Trainer``. A batch is a set of
frames: (points (F, C, J, 2) px, visible (F, C, J), ground truth (F, J, 3) mm, per-frame camera
tensors). In monocular mode each view of a frame is lifted separately and all views count.

The untrained model's pose prior is fit by PPCA on a *source* set of 3D poses (by default the
first half of the training frames in time: a stand-in for the generic motion-capture model of
Tome et al.); the "refit" ablation fits the same PPCA on all training poses instead.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

from wibergian.train import TrainConfig, Trainer

from . import skeleton as sk
from .datasets import PoseData
from .lifting import root_centre
from .model import CAMERA_KEYS, ModelConfig, PoseModel, camera_tensors
from .ppca import PPCAMixture, fit_mixture


@dataclass
class Arrays:
    """Frames as tensors: points (F, C, J, 2) px, visible (F, C, J), gt (F, J, 3) mm, cams."""

    points: Tensor
    visible: Tensor
    gt: Tensor
    cams: dict[str, Tensor]

    def as_tuple(self) -> tuple[Tensor, ...]:
        return (self.points, self.visible, self.gt, *(self.cams[k] for k in CAMERA_KEYS))


def arrays(data: PoseData, dtype: torch.dtype = torch.float64) -> Arrays:
    """All frames of ``data`` as :class:`Arrays`."""
    return Arrays(
        points=data.poses2d.to(dtype), visible=data.visible.to(dtype),
        gt=data.poses3d.to(dtype), cams=camera_tensors(data.camera_batch(), dtype),
    )


def unpack(batch: tuple[Tensor, ...]) -> Arrays:
    """Inverse of :meth:`Arrays.as_tuple`."""
    points, visible, gt, *cams = batch
    return Arrays(points, visible, gt, dict(zip(CAMERA_KEYS, cams, strict=True)))


def pose_loss(model: PoseModel, batch: tuple[Tensor, ...]) -> tuple[Tensor, dict[str, float]]:
    """Mean per-joint error (root-centred, metres) of the fused pose; metrics in mm."""
    b = unpack(batch)
    res = model(b.points, b.visible, b.cams)
    gt = root_centre(b.gt.to(res.pose.dtype) / 1000.0)
    if res.pose.dim() == 4:  # mono: (F, C, J, 3)
        gt = gt[:, None]
    err = (res.pose - gt).pow(2).sum(-1).add(1e-12).sqrt().mean()
    return err, {"P1_mm": float(err.detach()) * 1000.0}


#: the pose sets a PPCA prior can be fit on (:func:`source_poses`).
PRIOR_SOURCES = ("half", "train", "half_mirror", "train_mirror")


def mirrored(poses: Tensor) -> Tensor:
    """Mirror images of (T, 17, 3) poses: x -> -x about each frame's root, left/right labels
    swapped (a correctly handed person doing the mirror-image motion)."""
    root = poses[:, :1]
    q = (poses - root) * torch.tensor([-1.0, 1.0, 1.0], dtype=poses.dtype)
    return sk.flip_left_right(q) + root


def source_poses(data: PoseData, source: str) -> Tensor:
    """3D poses the PPCA prior is fit on: ``"half"`` (first half of the training frames),
    ``"train"`` (all training frames); ``"*_mirror"``: those poses and their mirror images
    (:func:`mirrored`), twice as many, so the subspace also spans the mirror-image motion."""
    if source not in PRIOR_SOURCES:
        raise ValueError(f"source must be one of {PRIOR_SOURCES}, got {source!r}")
    tr = data.poses3d[data.train_idx]
    base = tr[: max(tr.shape[0] // 2, 1)] if source.startswith("half") else tr
    return torch.cat([base, mirrored(base)]) if source.endswith("_mirror") else base


def build_model(data: PoseData, config: ModelConfig, num_models: int = 6, num_basis: int = 12,
                source: str = "half", seed: int = 0) -> PoseModel:
    """PPCA mixture on the source poses of ``data`` -> an untrained :class:`PoseModel`."""
    mix, scale = fit_mixture(source_poses(data, source), num_models, num_basis, seed=seed)
    return PoseModel(mix, scale, data.num_cameras, config)


def _padded(mix: PPCAMixture, num_basis: int) -> PPCAMixture:
    """``mix`` with zero basis vectors appended up to ``num_basis`` (their coefficients do not
    change the pose; a prior std of 1 mm keeps the normal equations definite)."""
    k, b, d = mix.basis.shape
    extra = num_basis - b
    return PPCAMixture(
        mean=mix.mean, basis=torch.cat([mix.basis, mix.basis.new_zeros(k, extra, d)], 1),
        std=torch.cat([mix.std, mix.std.new_ones(k, extra)], 1), noise=mix.noise,
        weight=mix.weight)


def build_hybrid_model(data: PoseData, config: ModelConfig, num_models: int = 3,
                       num_basis: int = 8, wide_basis: int = 16, seed: int = 0) -> PoseModel:
    """K PPCA models of B components on the first half of the training frames (as
    :func:`build_model`) plus one *wide* model of ``wide_basis`` components on all training
    poses, fused by the same learnt softmin: K + 1 models (bases zero-padded to the larger B).
    """
    mix, scale = fit_mixture(source_poses(data, "half"), num_models, num_basis, seed=seed)
    wide, _ = fit_mixture(source_poses(data, "train"), 1, wide_basis, seed=seed, scale=scale)
    b = max(num_basis, wide_basis)
    mix, wide = _padded(mix, b), _padded(wide, b)
    k = num_models
    both = PPCAMixture(**{f: torch.cat([getattr(mix, f), getattr(wide, f)])
                          for f in ("mean", "basis", "std", "noise")},
                       weight=torch.cat([mix.weight * k / (k + 1),
                                         mix.weight.new_full((1,), 1 / (k + 1))]))
    return PoseModel(both, scale, data.num_cameras, config)


def empty_model(meta: dict) -> PoseModel:
    """A :class:`PoseModel` of the shapes recorded in ``meta`` (values to be loaded)."""
    k, b, j = meta["num_models"], meta["num_basis"], 17
    mix = PPCAMixture(
        mean=torch.zeros(k, j * 3, dtype=torch.float64),
        basis=torch.zeros(k, b, j * 3, dtype=torch.float64),
        std=torch.ones(k, b, dtype=torch.float64), noise=torch.ones(k, dtype=torch.float64),
        weight=torch.full((k,), 1.0 / k, dtype=torch.float64),
    )
    return PoseModel(mix, meta["scale_mm"], meta["num_cameras"], ModelConfig(**meta["config"]))


def save_model(model: PoseModel, run_dir: Path, extra: dict | None = None) -> None:
    """Write ``pose_model.json`` (shapes and settings) and ``pose_model.pt`` (parameters)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    meta = {
        "num_models": model.num_models, "num_basis": model.num_basis,
        "num_cameras": model.num_cameras, "scale_mm": model.s0 * 1000.0,
        "config": model.config.to_dict(), **(extra or {}),
    }
    (run_dir / "pose_model.json").write_text(json.dumps(meta, indent=2))
    torch.save(model.state_dict(), run_dir / "pose_model.pt")


def load_model(run_dir: Path) -> PoseModel:
    """Load a model written by :func:`save_model`; errors name the missing file."""
    run_dir = Path(run_dir)
    meta_path, state_path = run_dir / "pose_model.json", run_dir / "pose_model.pt"
    for p in (meta_path, state_path):
        if not p.exists():
            raise FileNotFoundError(f"{p}: not found; is {run_dir} a `wibergian pose train` run?")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{meta_path}: invalid JSON ({err})") from None
    model = empty_model(meta)
    model.load_state_dict(torch.load(state_path, weights_only=True))
    return model


#: learning-rate multipliers per parameter: the pose vectors (entries ~0.1 m) move slowly,
#: the log-scales of the hand-set scalars fast.
LR_FACTORS: dict[str, float] = {
    "mean": 0.1, "basis": 0.1, "log_reg": 3.0, "log_robust": 3.0, "log_temp": 3.0,
    "log_cam_w": 3.0, "fusion_bias": 3.0,
}


def make_optimizer(model: PoseModel, cfg: TrainConfig,
                   factors: dict[str, float] | None = None) -> torch.optim.Optimizer:
    """Adam (or SGD) with per-parameter learning rates ``cfg.lr × factors[name]`` (default 1)."""
    factors = LR_FACTORS if factors is None else factors
    groups = [{"params": [p], "lr": cfg.lr * factors.get(n, 1.0)}
              for n, p in model.named_parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "asgd":  # averaged SGD (wibergian.train.averaging)
        from wibergian.train.averaging import make_asgd
        return make_asgd(groups, cfg.lr, cfg.weight_decay, cfg.momentum)
    return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def anchor_penalty(model: PoseModel, init: dict[str, Tensor]) -> Tensor:
    """``Σ_learnable ||p - p0||²``: squared distance of the learnable parameters from their
    values ``init`` (the untrained model). Entries of μ, e are metres (~0.1), the others are
    log-scales or biases (~1), so a plain sum weighs a 1 cm change of a pose vector like a
    0.01 change of a log-weight."""
    total = torch.zeros((), dtype=model.mean.dtype)
    for n, p in model.named_parameters():
        if p.requires_grad:
            total = total + (p - init[n]).pow(2).sum()
    return total


def train_model(model: PoseModel, train: PoseData, cfg: TrainConfig, run_dir: Path | None = None,
                learn: str = "all", resume: bool = False,
                lr_factors: dict[str, float] | None = None, *, anchor: float = 0.0,
                validation: PoseData | None = None) -> tuple[PoseModel, dict]:
    """Train ``model`` on the frames of ``train`` (all of them). Returns (model, summary).

    ``lr_factors`` multiplies the learning rate per parameter name (default :data:`LR_FACTORS`;
    pass ``{}`` for one rate for all). ``anchor`` > 0 adds ``anchor · Σ ||p - p0||²``
    (:func:`anchor_penalty`, regularisation toward the untrained values) to the loss.
    ``validation``: frames scored (P1, mm) every ``cfg.eval_every`` steps (default every
    ``max(steps // 5, 1)``) and at the end; the parameters of the best score are restored
    (early stopping; ``summary["best_step"]``). Progress: the trainer's (``cfg.quiet``)."""
    model.set_learnable(learn)
    data = arrays(train).as_tuple()
    t0 = time.perf_counter()
    opt = make_optimizer(model, cfg, lr_factors)
    init = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss_fn = pose_loss
    if anchor > 0:
        def loss_fn(m: PoseModel, batch: tuple[Tensor, ...]) -> tuple[Tensor, dict[str, float]]:
            err, metrics = pose_loss(m, batch)
            pen = anchor * anchor_penalty(m, init)
            metrics["anchor"] = float(pen.detach())
            return err + pen, metrics

    best: dict = {"p1": float("inf"), "step": 0, "state": None}
    eval_fn = None
    steps_seen = [0]
    if validation is not None:
        from .evaluate import evaluate_model  # evaluate imports this module

        if cfg.eval_every is None:
            cfg = replace(cfg, eval_every=max(cfg.steps // 5, 1))

        def eval_fn(m: PoseModel) -> dict[str, float]:
            steps_seen[0] += cfg.eval_every
            p1 = float(evaluate_model(m, validation)["P1"])
            if p1 < best["p1"]:
                best.update(p1=p1, step=min(steps_seen[0], cfg.steps),
                            state={k: v.detach().clone() for k, v in m.state_dict().items()})
            return {"val_P1_mm": p1}

        best.update(p1=float(evaluate_model(model, validation)["P1"]), step=0,
                    state={k: v.detach().clone() for k, v in model.state_dict().items()})
    result = Trainer(model, loss_fn, data, cfg, run_dir=run_dir, resume=resume,
                     optimizer=opt, eval_fn=eval_fn).fit()
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    seconds = time.perf_counter() - t0
    summary = {
        "steps": result.steps_done, "final_loss_mm": None if result.final_loss is None
        else 1000.0 * result.final_loss, "seconds": seconds, "learn": learn,
        "learnable_parameters": model.num_learnable(), "anchor": anchor,
    }
    if validation is not None:
        summary.update(best_step=best["step"], best_val_P1=best["p1"],
                       validation_frames=validation.num_frames)
    if run_dir is not None:
        save_model(model, run_dir, {"train": summary})
    return model, summary
