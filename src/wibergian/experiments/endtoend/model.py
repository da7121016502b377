"""The robust line fit as an argmin layer, fed by a per-point weight network.

Energy of one problem (``θ = (a, b)``, residual ``r_i = v_i - a u_i - b``, Welsch kernel of
width ``c``, per-point weights ``w_i ≥ 0``)::

    E(θ) = Σ_i w_i (c²/2) (1 - exp(-r_i²/c²))
    ∇E   = -Σ_i w_i r_i e_i J_i,                 e_i = exp(-r_i²/c²),  J_i = (u_i, 1)
    ∇²E  =  Σ_i w_i (1 - 2 r_i²/c²) e_i J_i J_iᵀ

(near ``r = 0`` the kernel is ``r²/2``; beyond ``|r| = c/√2`` it is concave, so ``E`` is not
convex). The forward pass starts from the lowest-energy of the pair hypotheses and the weighted
least-squares line (``wibergian.lstsq``), then trust-region Newton (``wibergian.argmin``).
Gradients reach the weight network and ``c`` through the damped implicit adjoint.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

import wibergian


class WelschLineEnergy:
    """``E(θ; u, v, w, c)``: ``θ`` (B, 2), ``u, v, w`` (B, N), ``c`` (B, 1) -> (B,).

    Declares closed-form ``gradient`` and ``hessian`` (see the module docstring)."""

    @staticmethod
    def _parts(theta: Tensor, u: Tensor, v: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        r = v - theta[:, :1] * u - theta[:, 1:]
        return r, torch.exp(-(r * r) / (c * c))

    def __call__(self, theta: Tensor, u: Tensor, v: Tensor, w: Tensor, c: Tensor) -> Tensor:
        _, e = self._parts(theta, u, v, c)
        return (w * (c * c) / 2 * (1 - e)).sum(-1)

    def gradient(self, theta: Tensor, u: Tensor, v: Tensor, w: Tensor, c: Tensor) -> Tensor:
        r, e = self._parts(theta, u, v, c)
        k = w * r * e
        return -torch.stack([(k * u).sum(-1), k.sum(-1)], -1)

    def hessian(self, theta: Tensor, u: Tensor, v: Tensor, w: Tensor, c: Tensor) -> Tensor:
        r, e = self._parts(theta, u, v, c)
        k = w * (1 - 2 * r * r / (c * c)) * e
        huu, hu, h1 = (k * u * u).sum(-1), (k * u).sum(-1), k.sum(-1)
        return torch.stack([torch.stack([huu, hu], -1), torch.stack([hu, h1], -1)], -2)


welsch_line_energy = WelschLineEnergy()


def weighted_lstsq_line(u: Tensor, v: Tensor, w: Tensor) -> Tensor:
    """``argmin_θ Σ_i w_i (v_i - a u_i - b)²`` via ``wibergian.lstsq``: (B, N) -> (B, 2)."""
    sw = (w.clamp(min=0) + 1e-9).sqrt()
    a = torch.stack([u * sw, sw], -1)
    return wibergian.lstsq(a, v * sw)


def candidate_starts(batch: dict[str, Tensor], w: Tensor) -> Tensor:
    """Pair hypotheses plus the weighted least-squares line: (B, C + 1, 2), detached."""
    wls = weighted_lstsq_line(batch["u"], batch["v"], w.detach())
    return torch.cat([batch["hyp"], wls[:, None]], 1).detach()


def robust_fit(batch: dict[str, Tensor], w: Tensor, c: Tensor, *, damping: float = 0.1,
               adjoint: str = "implicit", return_info: bool = False):
    """The argmin layer: ``θ*`` (B, 2), differentiable w.r.t. ``w`` (B, N) and ``c`` ()."""
    cc = c.reshape(1, 1).expand(w.shape[0], 1)
    cands = candidate_starts(batch, w)
    return wibergian.argmin(
        welsch_line_energy, cands[:, -1], (batch["u"], batch["v"], w, cc), damping=damping,
        candidates=cands, adjoint=adjoint, return_info=return_info, warn=False,
    )


def unrolled_irls(batch: dict[str, Tensor], w: Tensor, c: Tensor, iters: int) -> Tensor:
    """Baseline (e): ``iters`` iteratively-reweighted least-squares steps for the same Welsch
    energy, differentiated by plain autograd through every step (no implicit gradient).

    IRLS for Welsch solves ``min Σ w_i e_i r_i²`` with ``e_i = exp(-r_i²/c²)`` frozen at the
    current ``θ``; it is the majorise-minimise iteration of ``E``. Start: the lowest-energy
    candidate (detached, as in the argmin layer)."""
    cands = candidate_starts(batch, w)
    cc = c.reshape(1, 1).expand(w.shape[0], 1)
    with torch.no_grad():
        e = torch.vmap(lambda t: welsch_line_energy(t, batch["u"], batch["v"], w, cc),
                       in_dims=1, out_dims=1)(cands)
        theta = cands[torch.arange(w.shape[0]), e.argmin(1)]
    u, v = batch["u"], batch["v"]
    for _ in range(iters):
        r = v - theta[:, :1] * u - theta[:, 1:]
        k = w * torch.exp(-(r * r) / (cc * cc)) + 1e-12
        ata = torch.stack([torch.stack([(k * u * u).sum(-1), (k * u).sum(-1)], -1),
                           torch.stack([(k * u).sum(-1), k.sum(-1)], -1)], -2)
        atb = torch.stack([(k * u * v).sum(-1), (k * v).sum(-1)], -1)
        eye = torch.eye(2, dtype=u.dtype)
        theta = torch.linalg.solve(ata + 1e-9 * eye, atb)
    return theta


def unrolled_newton(batch: dict[str, Tensor], w: Tensor, c: Tensor, iters: int,
                    mu0: float = 0.1) -> Tensor:
    """Baseline (f): ``iters`` Levenberg-Marquardt Newton steps ``θ - (H + μI)^-1 ∇E`` on the
    same energy, each kept only where it lowers the energy, differentiated by plain autograd
    through every step. ``μ`` (per problem, not differentiated) starts at ``mu0`` and is
    multiplied by 10 after a rejected step and divided by 3 after an accepted one. Start: the
    lowest-energy candidate (detached)."""
    cands = candidate_starts(batch, w)
    cc = c.reshape(1, 1).expand(w.shape[0], 1)
    u, v = batch["u"], batch["v"]
    e = welsch_line_energy
    with torch.no_grad():
        en = torch.vmap(lambda t: e(t, u, v, w, cc), in_dims=1, out_dims=1)(cands)
        theta = cands[torch.arange(w.shape[0]), en.argmin(1)]
    eye = torch.eye(2, dtype=u.dtype)
    mu = torch.full((w.shape[0], 1, 1), mu0, dtype=u.dtype)
    for _ in range(iters):
        g = e.gradient(theta, u, v, w, cc)
        h = e.hessian(theta, u, v, w, cc)
        new = theta - torch.linalg.solve(h + mu * eye, g.unsqueeze(-1)).squeeze(-1)
        ok = (e(new, u, v, w, cc) <= e(theta, u, v, w, cc)).unsqueeze(-1)
        theta = torch.where(ok, new, theta)
        mu = torch.where(ok.unsqueeze(-1), mu / 3, mu * 10).detach()
    return theta


class WeightNet(nn.Module):
    """Per-point MLP ``f_i (D) -> logit_i``; the weight is ``sigmoid(logit)`` in ``(0, 1)``."""

    def __init__(self, feat_dim: int, hidden: int = 32) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(feat_dim, hidden), nn.Tanh(),
                                 nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, feats: Tensor) -> Tensor:
        """``(B, N, D) -> (B, N)`` logits."""
        return self.mlp(feats).squeeze(-1)


MODES = ("argmin", "unrolled", "unrolled_newton", "uniform")


class LineFitModel(nn.Module):
    """Weight network + robust fit. ``mode``: ``"argmin"`` (damped implicit gradient; damping
    0 = Samuel & Tappen), ``"unrolled"`` (IRLS through autograd), ``"unrolled_newton"``
    (guarded LM-Newton steps through autograd) or ``"uniform"`` (w = 1, no network: only ``c``
    exists).

    Parameters: the network's and ``log_c`` (kernel width ``c = exp(log_c)``)."""

    def __init__(self, feat_dim: int, mode: str = "argmin", damping: float = 0.1,
                 c0: float = 0.1, unroll_iters: int = 10, hidden: int = 32) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
        self.mode = mode
        self.damping = damping
        self.unroll_iters = unroll_iters
        self.net = WeightNet(feat_dim, hidden) if mode != "uniform" else None
        self.log_c = nn.Parameter(torch.tensor(math.log(c0)))

    def weights(self, batch: dict[str, Tensor]) -> Tensor:
        if self.net is None:
            return torch.ones_like(batch["u"])
        return torch.sigmoid(self.net(batch["feats"]))

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        w = self.weights(batch)
        c = self.log_c.exp()
        if self.mode == "unrolled":
            return unrolled_irls(batch, w, c, self.unroll_iters)
        if self.mode == "unrolled_newton":
            return unrolled_newton(batch, w, c, self.unroll_iters)
        return robust_fit(batch, w, c, damping=self.damping)


def param_error(theta: Tensor, truth: Tensor) -> Tensor:
    """``||θ - θ_true||`` per problem (B,)."""
    return (theta - truth).norm(dim=-1)
