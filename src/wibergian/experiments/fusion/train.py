"""Training the fusion model with the shared trainer; the λ = 0 (Samuel & Tappen) baseline.

Loss (per batch of frames): ``L = mean |ŷ - y_gt|`` over both corners and both coordinates, in
the frame's normalised coordinates (pixels / median tracker box size), so that every frame
weighs the same whatever the object's size.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from wibergian.train import NonFiniteError, TrainConfig, Trainer

from .data import Frames
from .energy import FusionModel, normalised_gt
from .geometry import iou


@dataclass
class FusionSettings:
    """Model and training settings (defaults = the documented default run)."""

    steps: int = 300
    batch_size: int = 128
    lr: float = 0.03
    optimizer: str = "adam"
    momentum: float = 0.0      # for optimizer="sgd"
    damping: float = 0.1
    solver: str = "newton"
    max_iter: int = 30
    sigma0: float = 1.0        # initial well width (normalised units: ~1 box size = broad)
    sigma_size0: float = 2.0   # initial σ_w, σ_h of the relative size-change term
    temporal0: float = 0.1     # initial A_t, B_t (non-zero: the gradient of A² vanishes at 0)
    explode_threshold: float = 1e4  # |parameter| above this counts as diverged
    normalise: bool = True     # False: ablation in raw pixels (then give --sigma0 in pixels)

    def model(self, n_trackers: int, damping: float | None = None) -> FusionModel:
        return FusionModel(n_trackers, sigma0=self.sigma0, sigma_size0=self.sigma_size0,
                           temporal0=self.temporal0, damping=self.damping if damping is None
                           else damping, solver=self.solver, max_iter=self.max_iter,
                           normalise=self.normalise)


@contextlib.contextmanager
def torch_threads(n: int = 1) -> Iterator[None]:
    """Run with ``n`` intra-op threads (small tensors: extra threads only add contention)."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def fusion_loss(model: FusionModel, batch: tuple[torch.Tensor, ...]
                ) -> tuple[torch.Tensor, dict[str, float]]:
    """L1 between fused and ground-truth corners (normalised coordinates)."""
    boxes, valid, frame, first, gt = batch
    y, c, z = model(boxes, valid, frame, first)
    loss = (y - normalised_gt(gt, c, z)).abs().mean()
    return loss, {}


@torch.no_grad()
def predict(model: FusionModel, frames: Frames, chunk: int = 512,
            damping: float | None = None) -> torch.Tensor:
    """Fused boxes (N, 4) in pixels for every frame."""
    out = [model.predict_boxes(*frames.subset(torch.arange(i, min(i + chunk, len(frames))))
                               .inputs(), damping=damping)
           for i in range(0, len(frames), chunk)]
    return torch.cat(out) if out else frames.gt.new_zeros(0, 4)


def mean_iou(model: FusionModel, frames: Frames) -> float:
    return float(iou(predict(model, frames), frames.gt).mean())


class _Counter:
    """Wraps the loss to know which update a failure happened at."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, model: FusionModel, batch: tuple[torch.Tensor, ...]
                 ) -> tuple[torch.Tensor, dict[str, float]]:
        self.calls += 1
        return fusion_loss(model, batch)


def train_model(train: Frames, settings: FusionSettings, seed: int, damping: float,
                run_dir: Path | None = None, quiet: bool = True
                ) -> tuple[FusionModel, dict[str, Any]]:
    """Train one model; returns it and a record.

    ``record["status"]`` is ``"completed"`` or ``"diverged"``; when diverged, ``"step"`` is the
    update at which the loss, a gradient or a parameter became non-finite (the trainer's
    :class:`NonFiniteError`), the solver failed, or a parameter exceeded
    ``settings.explode_threshold`` in magnitude; ``"reason"`` says which.
    """
    torch.manual_seed(seed)
    model = settings.model(len(train.trackers), damping)
    model = model.to(train.gt.dtype)
    cfg = TrainConfig(steps=settings.steps, batch_size=min(settings.batch_size, len(train)),
                      lr=settings.lr, optimizer=settings.optimizer,
                      momentum=settings.momentum, seed=seed,
                      checkpoint_every=max(settings.steps, 1),
                      log_every=max(settings.steps // 10, 1),
                      quiet=quiet, plot=False)
    counter = _Counter()
    model.record_infos = True
    record: dict[str, Any] = {"damping": damping, "settings": asdict(settings), "seed": seed}
    t0 = time.perf_counter()
    with torch_threads(1):
        try:
            result = Trainer(model, counter, train.tensors(), cfg, run_dir=run_dir).fit()
            record.update(status="completed", steps=result.steps_done,
                          final_loss=result.final_loss)
        except NonFiniteError as err:
            record.update(status="diverged", step=err.step, reason=str(err))
        except (FloatingPointError, ValueError, RuntimeError) as err:
            record.update(status="diverged", step=counter.calls,
                          reason=f"{type(err).__name__}: {err}")
    record["train_seconds"] = time.perf_counter() - t0
    model.record_infos = False
    record["solver_counts"] = model.solver_counts()
    model.infos.clear()
    if record["status"] == "completed":
        biggest = max(float(p.detach().abs().max()) for p in model.parameters())
        if biggest > settings.explode_threshold:
            record.update(status="diverged", step=record["steps"],
                          reason=f"parameters exploded (max |w| = {biggest:.3g})")
    return model, record


# ----------------------------------------------------------------------------- a whole run


def run_layout(out_dir: Path, protocol: str, seed: int) -> Path:
    return Path(out_dir) / protocol / f"seed{seed}"


def train_run(frames: Frames, out_dir: Path | str, protocols: list[str], seeds: list[int],
              settings: FusionSettings, source: dict[str, Any], quiet: bool = True,
              log: Any = print) -> Path:
    """Train, for every protocol and seed, the damped model and the λ = 0 model.

    Writes ``<out>/run.json`` (data source, settings, protocols, seeds) and, per protocol and
    seed, ``model_damped.pt``, ``model_lambda0.pt`` and ``records.json`` (training status,
    divergence step, time). The split is re-derived from the seed by ``evaluate``.
    """
    import json

    from .data import split

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "run.json").write_text(json.dumps(
        {"source": source, "settings": asdict(settings), "protocols": protocols,
         "seeds": seeds}, indent=2))
    for protocol in protocols:
        for seed in seeds:
            tr, _ = split(frames, protocol, seed)
            train_frames = frames.subset(tr)
            d = run_layout(out, protocol, seed)
            d.mkdir(parents=True, exist_ok=True)
            records = {}
            for tag, lam in (("damped", settings.damping), ("lambda0", 0.0)):
                model, rec = train_model(train_frames, settings, seed, lam, quiet=quiet)
                torch.save(model.state_dict(), d / f"model_{tag}.pt")
                records[tag] = rec
                log(f"[fuse] {protocol} seed {seed} {tag} (λ={lam}): {rec['status']}"
                    + (f" at step {rec['step']}" if rec["status"] == "diverged" else "")
                    + f", {rec['train_seconds']:.1f} s")
            (d / "records.json").write_text(json.dumps(records, indent=2, default=str))
    return out
