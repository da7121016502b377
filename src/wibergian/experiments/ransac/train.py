"""Learning σ by SGD with momentum, vectorised over independent runs.

Each run r (a seed, possibly with its own step size and momentum in a sweep) owns one σ_r.
Update k draws fresh problems for every run (``data.train_batch``), computes the minimisers of
all runs in ONE batched ``wibergian.argmin`` call, and takes one heavy-ball step per run:

    g_r   = d/dσ_r  mean_{b in run r} (t*_b(σ_r) - mu_b)²      (core's damped implicit gradient)
    v_r  <- m_r v_r + g_r                                        (torch.optim.SGD's momentum rule)
    σ_r  <- σ_r - lr_r v_r

The problems of different runs are independent, so the batched loss Σ_r loss_r has exactly the
per-run gradients. A run *diverges* at the first update after which σ_r is non-finite or
|σ_r| > ``sigma_max`` (default 1000: twelve times the data range of 80, where E is
indistinguishable from a quadratic, t* is the plain mean and the gradient vanishes, so the run
never comes back). A diverged run is frozen: its loss is masked out and its momentum reset.

Why this loop does not go through `wibergian.train.Trainer`: freezing one run requires resetting
its entry of the momentum buffer, and the Trainer (by design) stops the whole run at the first
non-finite value, which would end every other seed of the batch. The single-run path
`train_with_trainer` does use the Trainer, and the tests check both paths give the same σ.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from wibergian.progress import phase

from .data import PAPER_SPEC, ToySpec, train_batch
from .energy import estimate_mean

SIGMA_MAX = 1000.0


@dataclass
class RunSpec:
    """The runs trained together: one entry per run (seed, step size, momentum)."""

    seeds: list[int]
    lr: list[float]
    momentum: list[float]

    def __post_init__(self) -> None:
        n = len(self.seeds)
        if n == 0 or len(self.lr) != n or len(self.momentum) != n:
            raise ValueError(f"seeds, lr and momentum need the same length >= 1; got "
                             f"{n}, {len(self.lr)}, {len(self.momentum)}")
        if any(not (v > 0 and np.isfinite(v)) for v in self.lr):
            raise ValueError(f"every lr must be a finite number > 0; got {self.lr}")
        if any(not (0 <= v < 1) for v in self.momentum):
            raise ValueError(f"every momentum must be in [0, 1); got {self.momentum}")

    @classmethod
    def uniform(cls, seeds: Sequence[int], lr: float, momentum: float) -> RunSpec:
        return cls(list(seeds), [lr] * len(seeds), [momentum] * len(seeds))


@dataclass
class MethodRun:
    """The trajectories of one method (one damping) over R runs.

    Attributes:
        damping: λ used for the gradient.
        sigma: ``(steps + 1, R)`` σ before the first update (row 0) and after each update
            (NaN after a run diverged).
        loss: ``(steps, R)`` training squared error of each update (NaN after divergence).
        max_abs_step: ``(R,)`` largest |Δσ| of one update (including the diverging one).
        diverged_step: per run, the update after which σ blew up, or None.
        blowup_value: per run, σ right after the diverging update (may be inf/nan), or None.
    """

    damping: float
    sigma: np.ndarray
    loss: np.ndarray
    max_abs_step: np.ndarray
    diverged_step: list[int | None]
    blowup_value: list[float | None] = field(default_factory=list)
    average: np.ndarray | None = None

    @property
    def final_sigma(self) -> list[float | None]:
        """The σ a run is evaluated with, None where the run diverged: σ after the last update,
        or with averaged SGD (``average`` set) the running average of the iterates."""
        last = self.sigma[-1] if self.average is None else self.average
        return [None if d is not None else float(s)
                for s, d in zip(last, self.diverged_step, strict=True)]

    @property
    def n_diverged(self) -> int:
        return sum(d is not None for d in self.diverged_step)


def train_runs(
    runs: RunSpec,
    damping: float,
    steps: int,
    sigma0: float,
    per_seed: int = 1,
    sigma_max: float = SIGMA_MAX,
    spec: ToySpec = PAPER_SPEC,
    quiet: bool = False,
    desc: str = "",
    optimizer: str = "sgd",
) -> MethodRun:
    """Train every run of ``runs`` for ``steps`` updates with one damping (see module doc).

    ``optimizer="asgd"``: averaged SGD (the paper authors' optimiser): plain SGD steps (the
    momenta must be 0) and the running mean of the iterates σ_1..σ_K, as the shared trainer's
    ``"asgd"`` (``wibergian.train.averaging``); the run is evaluated with the average.
    """
    if steps < 1 or per_seed < 1:
        raise ValueError(f"steps and per_seed must be >= 1; got {steps}, {per_seed}")
    if optimizer not in ("sgd", "asgd"):
        raise ValueError(f"optimizer must be 'sgd' or 'asgd'; got {optimizer!r}")
    if optimizer == "asgd" and any(m != 0 for m in runs.momentum):
        raise ValueError("averaged SGD has no momentum: give momentum 0 with optimizer 'asgd'")
    if not (np.isfinite(sigma0) and sigma0 != 0):
        raise ValueError(f"sigma0 must be finite and non-zero; got {sigma0}")
    r = len(runs.seeds)
    dt = torch.float64
    lr = torch.tensor(runs.lr, dtype=dt)
    mom = torch.tensor(runs.momentum, dtype=dt)
    sigma = torch.full((r,), float(sigma0), dtype=dt)
    buf = torch.zeros(r, dtype=dt)
    alive = torch.ones(r, dtype=torch.bool)
    sig_hist = np.full((steps + 1, r), np.nan)
    sig_hist[0] = sigma0
    loss_hist = np.full((steps, r), np.nan)
    max_step = np.zeros(r)
    div_step: list[int | None] = [None] * r
    blow: list[float | None] = [None] * r
    avg = sigma.clone()
    with phase(f"ransac {desc}" if desc else f"ransac λ={damping:g}", steps, unit="update",
               quiet=quiet) as bar:  # quiet: one line when the phase ends
        for k in range(1, steps + 1):
            batch = train_batch(runs.seeds, k, per_seed, spec, dt)
            s = torch.where(alive, sigma, torch.ones_like(sigma)).requires_grad_(True)
            t = estimate_mean(batch.x, s.repeat_interleave(per_seed), damping)
            err = ((t - batch.mu) ** 2).view(r, per_seed).mean(dim=1)
            (err * alive).sum().backward()
            g = torch.where(alive, s.grad, torch.zeros_like(sigma))
            buf = torch.where(alive, mom * buf + g, torch.zeros_like(buf))
            new = sigma - lr * buf
            step_abs = (new - sigma).abs().numpy()
            a = alive.numpy()
            max_step[a] = np.maximum(max_step[a], np.nan_to_num(step_abs[a], nan=np.inf))
            loss_hist[k - 1, a] = err.detach().numpy()[a]
            bad = alive & (~torch.isfinite(new) | (new.abs() > sigma_max))
            for i in torch.nonzero(bad).flatten().tolist():
                div_step[i] = k
                blow[i] = float(new[i])
            sigma = torch.where(alive & ~bad, new, sigma)
            avg = torch.where(alive & ~bad, avg + (sigma - avg) / k, avg)  # mean of σ_1..σ_k
            alive = alive & ~bad
            sig_hist[k] = np.where(alive.numpy(), sigma.numpy(), np.nan)
            bar.update()
            if not quiet and k % max(1, steps // 4) == 0:
                live = sigma[alive]
                med = f"{float(live.median()):.3g}" if live.numel() else "-"
                bar.note(f"update {k}: diverged {int((~alive).sum())}, median σ {med}")
    return MethodRun(damping, sig_hist, loss_hist, max_step, div_step, blow,
                     avg.numpy().copy() if optimizer == "asgd" else None)


class _Blowup(Exception):
    def __init__(self, step: int, value: float) -> None:
        super().__init__(f"σ = {value} after update {step}")
        self.step, self.value = step, value


class SigmaModel(nn.Module):
    """A single learnable kernel width σ (shape ``(1,)``)."""

    def __init__(self, sigma0: float) -> None:
        super().__init__()
        self.sigma = nn.Parameter(torch.tensor([float(sigma0)], dtype=torch.float64))


def train_with_trainer(
    seed: int,
    damping: float,
    steps: int,
    sigma0: float,
    lr: float,
    momentum: float,
    per_seed: int = 1,
    sigma_max: float = SIGMA_MAX,
    spec: ToySpec = PAPER_SPEC,
    run_dir: str | Path | None = None,
    quiet: bool = False,
    optimizer: str = "sgd",
) -> MethodRun:
    """One seed through the shared `wibergian.train.Trainer` (SGD with momentum, or averaged
    SGD with ``optimizer="asgd"``: then evaluated with the Trainer's average).

    The data are the same as `train_runs` draws for this seed (``train_batch([seed], step)``),
    so both paths produce the same σ trajectory. A blow-up (σ non-finite or |σ| > sigma_max
    after some update, or the Trainer's own non-finite stop) ends the run and is recorded.
    """
    from wibergian.train import NonFiniteError, TrainConfig, Trainer

    model = SigmaModel(sigma0)
    sig_hist = [float(sigma0)]
    losses: list[float] = []

    def check(step_done: int) -> None:
        v = float(model.sigma.detach()[0])
        if step_done > 0:
            sig_hist.append(v)
        if not np.isfinite(v) or abs(v) > sigma_max:
            raise _Blowup(step_done, v)

    def data(step: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        b = train_batch([seed], step, per_seed, spec, torch.float64)
        return b.x, b.mu

    calls = [0]

    def loss_fn(m: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]):
        check(calls[0])
        calls[0] += 1
        x, mu = batch
        t = estimate_mean(x, m.sigma.expand(x.shape[0]), damping)
        loss = ((t - mu) ** 2).mean()
        losses.append(float(loss.detach()))
        return loss, {"sigma": float(m.sigma.detach()[0])}

    cfg = TrainConfig(steps=steps, batch_size=per_seed, lr=lr, optimizer=optimizer,
                      momentum=momentum, seed=seed, checkpoint_every=0, quiet=quiet,
                      plot=False, log_every=max(1, min(100, steps)),
                      extra={"damping": damping, "sigma0": sigma0, "sigma_max": sigma_max,
                             "spec": repr(spec)})
    div: int | None = None
    blow: float | None = None
    average = None
    try:
        Trainer(model, loss_fn, data, cfg, run_dir=run_dir).fit()
        # with asgd, fit() leaves the average in the model: the last recorded σ is then the
        # average (the raw last iterate is not kept by the trainer)
        check(calls[0])
        if optimizer == "asgd":
            average = np.array([float(model.sigma.detach()[0])])
    except _Blowup as e:
        div, blow = e.step, e.value
    except NonFiniteError as e:
        div, blow = e.step, float("nan")
    sig = np.full(steps + 1, np.nan)
    sig[: len(sig_hist)] = sig_hist
    if div is not None:
        sig[div:] = np.nan
    loss = np.full(steps, np.nan)
    loss[: len(losses)] = losses
    steps_seen = np.abs(np.diff(np.asarray(sig_hist)))
    max_abs = float(np.nan_to_num(steps_seen, nan=np.inf).max()) if steps_seen.size else 0.0
    return MethodRun(damping, sig[:, None], loss[:, None], np.array([max_abs]), [div], [blow],
                     average if div is None else None)
