"""Training the fusion model with the shared trainer; the λ = 0 (Samuel & Tappen) baseline.

Loss (per batch of frames): ``L = mean |ŷ - y_gt|`` over both corners and both coordinates, in
the frame's normalised coordinates (pixels / median tracker box size), so that every frame
weighs the same whatever the object's size.
"""

from __future__ import annotations

import contextlib
import math
import statistics
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
    grad_explode_ratio: float = 1e3  # a gradient norm above this × the early median: diverged
    normalise: bool = True     # False: ablation in raw pixels (then give --sigma0 in pixels)
    learn: str = "all"         # which parameters are learnt: all | mass | mass_scale
    reg_init: float = 0.0      # weight of the mean squared distance of the parameters to init
    early_stop: bool = False   # keep the step with the best IoU on a validation split
    val_fraction: float = 0.2  # of the training frames (whole sequences on "sequences")

    def model(self, n_trackers: int, damping: float | None = None) -> FusionModel:
        m = FusionModel(n_trackers, sigma0=self.sigma0, sigma_size0=self.sigma_size0,
                        temporal0=self.temporal0, damping=self.damping if damping is None
                        else damping, solver=self.solver, max_iter=self.max_iter,
                        normalise=self.normalise)
        if self.learn not in LEARNT:
            raise ValueError(f"learn must be one of {sorted(LEARNT)}, got {self.learn!r}")
        keep = LEARNT[self.learn]
        for name, p in m.named_parameters():
            p.requires_grad_(keep is None or name in keep)
        return m


#: ``learn`` settings: the learnt parameters (None = all 11 per tracker). ``mass``: ρ_t only
#: (1 per tracker); ``mass_scale``: ρ_t and the box-scale correction κ_t (3 per tracker).
LEARNT: dict[str, tuple[str, ...] | None] = {
    "all": None, "mass": ("log_mass",), "mass_scale": ("log_mass", "log_box_scale")}


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


def init_penalty(model: FusionModel, init: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean over the learnt numbers of ``(θ − θ_init)²`` (regularisation toward the init)."""
    sq = [((p - init[n]) ** 2).sum() for n, p in model.named_parameters() if p.requires_grad]
    count = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return torch.stack(sq).sum() / max(count, 1)


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
    """Wraps the loss: counts updates, adds the penalty toward the init, and records the
    global gradient norm of every update (tensor hooks on the learnt parameters)."""

    def __init__(self, model: FusionModel, reg_init: float) -> None:
        self.calls = 0
        self.reg_init = reg_init
        self.init = {n: p.detach().clone() for n, p in model.named_parameters()}
        self.sq: dict[int, float] = {}
        self.losses: list[float] = []
        for p in model.parameters():
            if p.requires_grad:
                p.register_hook(self._hook)

    def _hook(self, g: torch.Tensor) -> None:
        self.sq[self.calls] = self.sq.get(self.calls, 0.0) + float(g.detach().double()
                                                                     .pow(2).sum())

    def grad_norms(self) -> list[float]:
        """Global gradient norm of each update, in order (inf/nan where non-finite)."""
        return [math.sqrt(self.sq[k]) if math.isfinite(self.sq[k]) else self.sq[k]
                for k in sorted(self.sq)]

    def __call__(self, model: FusionModel, batch: tuple[torch.Tensor, ...]
                 ) -> tuple[torch.Tensor, dict[str, float]]:
        self.calls += 1
        loss, info = fusion_loss(model, batch)
        self.losses.append(float(loss.detach()))
        if self.reg_init > 0:
            loss = loss + self.reg_init * init_penalty(model, self.init)
        return loss, info


def grad_norm_summary(norms: list[float]) -> dict[str, float | int]:
    """``median`` and ``max`` of per-step gradient norms (non-finite values count as inf)."""
    if not norms:
        return {"median": float("nan"), "max": float("nan"), "steps": 0}
    clean = [v if math.isfinite(v) else math.inf for v in norms]
    return {"median": float(statistics.median(clean)), "max": float(max(clean)),
            "steps": len(clean)}


def run_status(record: dict[str, Any], grad_norms: list[float], settings: FusionSettings,
               max_param: float) -> dict[str, Any]:
    """``completed`` or ``diverged`` (with ``step`` and ``reason``) for one training run.

    Diverged when the trainer stopped (non-finite loss/gradient/parameter, solver failure:
    ``record`` already says so), or when a gradient norm was non-finite or exceeded
    ``settings.grad_explode_ratio`` × the median of the first 10 updates' norms (exploding
    gradients, detected on the gradients themselves), or a parameter exceeded
    ``settings.explode_threshold`` in magnitude. ``collapsed`` is decided at evaluation
    (it needs the held-out IoU): see ``evaluate.apply_collapse``.
    """
    if record.get("status") == "diverged":
        return record
    early = [v for v in grad_norms[:10] if math.isfinite(v)]
    ref = statistics.median(early) if early else math.nan
    for k, v in enumerate(grad_norms):
        if not math.isfinite(v):
            return {**record, "status": "diverged", "step": k + 1,
                    "reason": f"non-finite gradient norm ({v})"}
        if math.isfinite(ref) and ref > 0 and v > settings.grad_explode_ratio * ref:
            return {**record, "status": "diverged", "step": k + 1,
                    "reason": f"exploding gradient: norm {v:.3g} > "
                              f"{settings.grad_explode_ratio:g} × early median {ref:.3g}"}
    if max_param > settings.explode_threshold:
        return {**record, "status": "diverged", "step": record.get("steps"),
                "reason": f"parameters exploded (max |w| = {max_param:.3g})"}
    return {**record, "status": "completed"}


def _val_split(train: Frames, settings: FusionSettings, seed: int
               ) -> tuple[Frames, Frames | None]:
    """(fit, validation) frames: the validation part is whole sequences when the training
    frames hold several, else random frames (``settings.val_fraction`` of them)."""
    from .data import split

    if not settings.early_stop:
        return train, None
    n_seq = int(torch.unique(train.seq).numel())
    proto = "sequences" if n_seq >= 4 else "frames"
    fit_idx, val_idx = split(train, proto, seed + 7919, 1 - settings.val_fraction)
    return train.subset(fit_idx), train.subset(val_idx)


def train_model(train: Frames, settings: FusionSettings, seed: int, damping: float,
                run_dir: Path | None = None, quiet: bool = True
                ) -> tuple[FusionModel, dict[str, Any]]:
    """Train one model; returns it and a record.

    ``record["status"]`` is ``"completed"`` or ``"diverged"`` (:func:`run_status`); when
    diverged, ``"step"`` is the update at which it happened and ``"reason"`` says what.
    ``record["grad_norms"]`` holds every update's global gradient norm and
    ``record["grad_norm"]`` their median and max. With ``settings.early_stop`` the model
    returned is the one with the best validation IoU (checked every ``steps // 10`` updates;
    ``record["best_step"]``).
    """
    torch.manual_seed(seed)
    model = settings.model(len(train.trackers), damping)
    model = model.to(train.gt.dtype)
    fit, val = _val_split(train, settings, seed)
    every = max(settings.steps // 10, 1)
    cfg = TrainConfig(steps=settings.steps, batch_size=min(settings.batch_size, len(fit)),
                      lr=settings.lr, optimizer=settings.optimizer,
                      momentum=settings.momentum, seed=seed,
                      checkpoint_every=max(settings.steps, 1),
                      log_every=every, eval_every=every if val is not None else None,
                      quiet=quiet, plot=False)
    counter = _Counter(model, settings.reg_init)
    best: dict[str, Any] = {"iou": -1.0, "step": 0, "state": None}

    def validate(m: FusionModel) -> dict[str, float]:
        v = mean_iou(m, val)
        if v > best["iou"]:
            best.update(iou=v, step=counter.calls,
                        state={k: t.detach().clone() for k, t in m.state_dict().items()})
        return {"val_iou": v}

    if val is not None:
        validate(model)   # the initialisation is a candidate too (step 0)
    model.record_infos = True
    record: dict[str, Any] = {"damping": damping, "settings": asdict(settings), "seed": seed}
    t0 = time.perf_counter()
    with torch_threads(1):
        try:
            result = Trainer(model, counter, fit.tensors(), cfg, run_dir=run_dir,
                             eval_fn=validate if val is not None else None).fit()
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
    norms = counter.grad_norms()
    record["grad_norms"] = norms
    record["grad_norm"] = grad_norm_summary(norms)
    record["train_losses"] = counter.losses
    biggest = max(float(p.detach().abs().max()) for p in model.parameters())
    record.update(run_status(record, norms, settings, biggest))
    if val is not None and best["state"] is not None and record["status"] == "completed":
        model.load_state_dict(best["state"])
        record.update(best_step=best["step"], best_val_iou=best["iou"], n_val_frames=len(val))
    return model, record


# ----------------------------------------------------------------------------- a whole run


def run_layout(out_dir: Path, protocol: str, seed: int) -> Path:
    return Path(out_dir) / protocol / f"seed{seed}"


def train_run(frames: Frames, out_dir: Path | str, protocols: list[str], seeds: list[int],
              settings: FusionSettings, source: dict[str, Any], quiet: bool = True,
              log: Any = print, lambda0: bool = True, progress_quiet: bool = False) -> Path:
    """Train, for every protocol and seed, the damped model and (``lambda0``) the λ = 0 model.

    Writes ``<out>/run.json`` (data source, settings, protocols, seeds) and, per protocol and
    seed, ``model_damped.pt``, ``model_lambda0.pt``, ``records.json`` (status, divergence step,
    time, gradient norms) and ``metrics.jsonl`` (one line per update: run, step, loss,
    grad_norm; then one summary line per run with the median and max gradient norm and the
    status). The split is re-derived from the seed by ``evaluate``.
    """
    import json

    from wibergian.progress import phase

    from .data import split

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "run.json").write_text(json.dumps(
        {"source": source, "settings": asdict(settings), "protocols": protocols,
         "seeds": seeds, "lambda0": lambda0}, indent=2))
    tags = [("damped", settings.damping)] + ([("lambda0", 0.0)] if lambda0 else [])
    total = len(protocols) * len(seeds) * len(tags)
    with phase("fusion: training", total=total, unit="run", quiet=progress_quiet) as prog:
        for protocol in protocols:
            for seed in seeds:
                tr, _ = split(frames, protocol, seed)
                train_frames = frames.subset(tr)
                d = run_layout(out, protocol, seed)
                d.mkdir(parents=True, exist_ok=True)
                records, lines = {}, []
                for tag, lam in tags:
                    model, rec = train_model(train_frames, settings, seed, lam, quiet=quiet)
                    torch.save(model.state_dict(), d / f"model_{tag}.pt")
                    records[tag] = rec
                    lines += [{"run": tag, "step": k + 1, "grad_norm": g,
                               "loss": rec["train_losses"][k]
                               if k < len(rec["train_losses"]) else None}
                              for k, g in enumerate(rec["grad_norms"])]
                    lines.append({"run": tag, "summary": True, "grad_norm": rec["grad_norm"],
                                  "status": rec["status"]})
                    msg = (f"{protocol} seed {seed} {tag} (λ={lam}): {rec['status']}"
                           + (f" at step {rec['step']}" if rec["status"] == "diverged" else "")
                           + f", {rec['train_seconds']:.1f} s, grad norm median "
                           f"{rec['grad_norm']['median']:.3g} max {rec['grad_norm']['max']:.3g}")
                    log(f"[fuse] {msg}")
                    prog.update(1)
                (d / "records.json").write_text(json.dumps(records, indent=2, default=str))
                (d / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return out
