"""Lifting 2D joints to a 3D pose with a mixture of PPCA models (paper eq. 11-12).

Both settings reduce, for a fixed rotation θ about the vertical axis, to a weighted linear
least-squares problem in unknowns ``z`` (per frame f and model k):

    E_fk(θ, z) = Σ_rows ω · r² + Σ_b (π_kb b_b)²,      r = y - A(θ) z

(or, robustly, Σ over joint-and-camera pairs of the pseudo-Huber ``2δ²(√(1 + q/δ²) - 1)`` of
``q = ω_x r_x² + ω_y r_y²``, which equals ``q`` to first order). ``R_θ = P0 + cos θ P1 +
sin θ P2``, so ``A(θ) = A0 + cos θ A1 + sin θ A2`` and the normal equations of every angle of a
grid come from nine cross products (:func:`grid_search`), batched over frames, models and angles.

**Monocular** (Tome et al. 2017): weak perspective in one camera of known rotation ``R_c``.
The 2D pose (normalised camera coordinates) is centred on its visible joints and divided by its
RMS size; the model is divided by the training RMS pose size ``S0``, so the per-frame scale is
about 1. Unknowns ``z = (t (2), s, b (B))``, ``r = ũ - t - Π R_c R_θ (s μ + Σ b e)``; the
prior acts on ``b = s·a`` (``s ≈ 1``). Reconstruction ``R_θ (μ + Σ (b/s̃) e)``: monocular scale
comes from the model. The scale used there is bounded by construction,
``s̃ = clamp_smooth(s, SCALE_MIN, SCALE_MAX)`` (:func:`bounded_scale`), so a fit that drives
``s`` to 0 or below (an implausible, upside-down or vanishing pose) cannot put a joint
kilometres away; such a model also pays ``(s - s̃)²`` in the fusion energy and loses the
softmin.

**Multi-camera** (Tome et al. 2018): cameras of known rotation, centre and intrinsics. For a
world point X and normalised image point n the residual ``D (X - C)`` with ``D = n r3ᵀ - R[:2]``
(``r3`` the camera's optical axis) is the image error multiplied by the point's depth: a
perspective-exact residual, linear in X, in **metres** at the subject (so the default damping
λ = 0.1 acts on variables of order 1). Unknowns ``z = (T (3), s, b (B))``,
``X_j = T + R_θ (s μ_j + Σ b e_j)``.

Rotation: a grid of angles (closed-form solve at each, no gradient: the choice is discrete),
then refinement of ``(θ, z)`` from the best grid angle by ``wibergian.argmin`` (Newton; implicit
gradients). With the L2 loss the final ``z`` is recomputed at the refined θ by the closed form
``wibergian.lstsq`` (gradients through it and through θ*). With the pseudo-Huber loss the Newton
solve starts from the L2 solution. Models are fused by a softmin over their energies with a
learnt temperature plus per-model biases.

Shapes: F frames, C cameras (1 for monocular), J = 17 joints, K models, B basis vectors,
G grid angles, R = C·J·2 residual rows, n = nT + 1 + B unknowns (nT = 2 mono, 3 multi).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

import wibergian

from .fit_energy import FitEnergy
from .skeleton import ROOT

# R_θ = P0 + cos θ P1 + sin θ P2 (rotation about z)
_P = torch.tensor(
    [
        [[0.0, 0, 0], [0, 0, 0], [0, 0, 1]],
        [[1.0, 0, 0], [0, 1, 0], [0, 0, 0]],
        [[0.0, -1, 0], [1, 0, 0], [0, 0, 0]],
    ]
)


@dataclass
class LinearProblem:
    """The batched linear system ``r = y - (A0 + cos θ A1 + sin θ A2) z`` of every (f, k).

    Attributes:
        a: (3, F, K, R, n) the three design matrices A0, A1, A2.
        y: (F, K, R) targets (broadcast over K).
        w: (F, K, R) non-negative row weights ω (zero for missing joints).
        prior: (K, n) prior weights on z (zero for unpenalised unknowns).
    """

    a: Tensor
    y: Tensor
    w: Tensor
    prior: Tensor

    @property
    def shape(self) -> tuple[int, int, int, int]:
        _, f, k, r, n = self.a.shape
        return f, k, r, n


@dataclass
class LiftResult:
    """Output of a lifting: the fused pose and everything per model.

    Attributes:
        pose: (F, J, 3) fused root-centred pose, metres.
        poses: (F, K, J, 3) per-model root-centred poses, metres.
        weights: (F, K) fusion weights (sum to 1 over K).
        energy: (F, K) energy per model at its solution (per unit row weight).
        theta: (F, K) refined rotation of each model.
        z: (F, K, n) the linear unknowns of each model.
        scale: (F, K) the bounded scale s̃ used by the monocular reconstruction (None for
            multi-camera, where s multiplies the mean and nothing is divided by it).
    """

    pose: Tensor
    poses: Tensor
    weights: Tensor
    energy: Tensor
    theta: Tensor
    z: Tensor
    scale: Tensor | None = None


#: plausible range of the monocular scale s (the 2D pose and the model are both normalised to
#: unit RMS size, so s ≈ 1: 0.59-1.27 over every model and view of the default held-out data).
SCALE_MIN, SCALE_MAX = 0.4, 2.5
#: sharpness of the smooth clamp (s̃ differs from s by < 1e-3 inside [0.6, 2.3]).
SCALE_SHARPNESS = 20.0


def bounded_scale(s: Tensor, lo: float = SCALE_MIN, hi: float = SCALE_MAX,
                  beta: float = SCALE_SHARPNESS) -> Tensor:
    """Smooth clamp of ``s`` into [lo, hi]: ``lo + softplus(β(s - lo))/β``, then the mirror
    image at ``hi``. Differentiable everywhere, monotone, always inside [lo, hi]."""
    low = lo + torch.nn.functional.softplus(beta * (s - lo)) / beta
    return hi - torch.nn.functional.softplus(beta * (hi - low)) / beta


def model_columns(mean: Tensor, basis: Tensor) -> Tensor:
    """Stack μ and e as columns: mean (K, J, 3), basis (K, B, J, 3) -> (K, J, 3, 1 + B)."""
    return torch.cat([mean.unsqueeze(-1), basis.permute(0, 2, 3, 1)], dim=-1)


def build_problem(
    lin: Tensor, trans: Tensor, y: Tensor, w: Tensor, cols: Tensor, prior_b: Tensor
) -> LinearProblem:
    """Assemble :class:`LinearProblem` from the per-view linear maps.

    Args:
        lin: (F, C, J, 2, 3) maps a world-frame 3D offset to the residual (``D`` or ``Π R_c``).
        trans: (F, C, J, 2, nT) columns of the translation unknowns.
        y: (F, C, J, 2) targets.
        w: (F, K, C, J, 2) row weights.
        cols: (K, J, 3, 1 + B) model columns (μ, e).
        prior_b: (K, B) prior weights of the basis coefficients.
    """
    f, c, j = lin.shape[:3]
    k = cols.shape[0]
    nt = trans.shape[-1]
    p = _P.to(lin)
    # G_i = lin · P_i · cols : (3, F, K, C, J, 2, 1+B)
    lp = torch.einsum("fcjxd,ide->ifcjxe", lin, p)
    g = torch.einsum("ifcjxe,kjem->ifkcjxm", lp, cols)
    r = c * j * 2
    g = g.reshape(3, f, k, r, -1)
    t = trans.reshape(f, 1, r, nt).expand(f, k, r, nt)
    zeros = torch.zeros_like(t)
    a = torch.stack(
        [torch.cat([t, g[0]], -1), torch.cat([zeros, g[1]], -1), torch.cat([zeros, g[2]], -1)]
    )
    prior = torch.cat([torch.zeros(k, nt + 1, dtype=prior_b.dtype), prior_b], dim=-1)
    yy = y.reshape(f, 1, r).expand(f, k, r)
    return LinearProblem(a=a, y=yy, w=w.reshape(f, k, r), prior=prior)


def design(prob: LinearProblem, theta: Tensor) -> Tensor:
    """A(θ) for angles θ of shape (F, K) or (F, K, G): returns (F, K, [G,] R, n)."""
    c, s = torch.cos(theta), torch.sin(theta)
    a0, a1, a2 = prob.a
    if theta.dim() == 3:
        a0, a1, a2 = a0.unsqueeze(2), a1.unsqueeze(2), a2.unsqueeze(2)
    return a0 + c[..., None, None] * a1 + s[..., None, None] * a2


def grid_search(prob: LinearProblem, angles: Tensor, ridge: float = 1e-9) -> tuple[Tensor, Tensor]:
    """Closed-form L2 solution at every grid angle, without gradients.

    Returns ``(energy (F, K, G), z (F, K, G, n))``. The weighted normal equations
    ``N(θ) = Σ_ij φ_i φ_j A_iᵀ Ω A_j + diag(π²)``, ``φ = (1, cos θ, sin θ)``, are formed from
    nine precomputed cross products; a tiny ridge keeps unpenalised unknowns well posed.
    """
    with torch.no_grad():
        a, y, w = prob.a, prob.y, prob.w
        aw = a * w[None, ..., None]
        q = torch.einsum("ifkrn,jfkrm->ijfknm", aw, a)  # (3, 3, F, K, n, n)
        h = torch.einsum("ifkrn,fkr->ifkn", aw, y)  # (3, F, K, n)
        yy = (w * y * y).sum(-1)  # (F, K)
        phi = torch.stack([torch.ones_like(angles), torch.cos(angles), torch.sin(angles)])
        nmat = torch.einsum("ig,jg,ijfknm->fkgnm", phi, phi, q)
        prior2 = prob.prior.pow(2)[None, :, None, :]  # (1, K, 1, n)
        diag = prior2 + ridge * (1.0 + nmat.diagonal(dim1=-2, dim2=-1).mean(-1, True))
        nmat = nmat + torch.diag_embed(diag)
        hg = torch.einsum("ig,ifkn->fkgn", phi, h)
        chol, _ = torch.linalg.cholesky_ex(nmat)
        z = torch.cholesky_solve(hg.unsqueeze(-1), chol).squeeze(-1)
        energy = yy.unsqueeze(-1) - (hg * z).sum(-1)
    return energy, z


def _flat(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])


def solve(
    prob: LinearProblem,
    angles: Tensor,
    loss: str = "l2",
    delta: Tensor | float = 1.0,
    damping: float = 0.1,
    refine: bool = True,
    max_iter: int = 30,
) -> tuple[Tensor, Tensor, Tensor]:
    """Best grid angle, then refinement; returns ``(theta (F, K), z (F, K, n), energy (F, K))``.

    The returned tensors carry gradients to every tensor ``prob`` was built from.
    """
    f, k, r, n = prob.shape
    e_grid, z_grid = grid_search(prob, angles)
    best = e_grid.argmin(-1)
    theta0 = angles[best]
    z0 = torch.gather(z_grid, 2, best[..., None, None].expand(f, k, 1, n)).squeeze(2)
    a0, a1, a2 = (_flat(x) for x in prob.a)
    target, w = _flat(prob.y), _flat(prob.w)
    prior = prob.prior.unsqueeze(0).expand(f, k, n).reshape(f * k, n)
    delta_t = torch.as_tensor(delta, dtype=a0.dtype).reshape(-1).expand(f * k)
    params = (a0, a1, a2, target, w, prior, delta_t)
    theta = theta0.reshape(-1)
    z = z0.reshape(-1, n)
    if refine:
        y0 = torch.cat([theta[:, None], z], -1).detach()
        ystar = wibergian.argmin(FitEnergy("l2"), y0, params, damping=damping,
                                 max_iter=max_iter, warn=False)
        theta = ystar[:, 0]
        z = _lstsq_at(prob, theta.reshape(f, k)).reshape(-1, n)
    else:
        z = _lstsq_at(prob, theta.reshape(f, k)).reshape(-1, n)
    if loss == "huber":
        y0 = torch.cat([theta[:, None], z], -1).detach()
        ystar = wibergian.argmin(FitEnergy("huber"), y0, params, damping=damping,
                                 max_iter=max_iter, warn=False)
        theta, z = ystar[:, 0], ystar[:, 1:]
    energy = FitEnergy(loss)(torch.cat([theta[:, None], z], -1), *params)
    return theta.reshape(f, k), z.reshape(f, k, n), energy.reshape(f, k)


def _lstsq_at(prob: LinearProblem, theta: Tensor) -> Tensor:
    """Closed-form ``z`` at angles θ (F, K) by ``wibergian.lstsq``: (F, K, n)."""
    a = design(prob, theta)
    pos = prob.w > 0  # sqrt has an infinite derivative at 0: keep missing rows out of it
    sw = torch.where(pos, prob.w.clamp_min(torch.finfo(a.dtype).tiny).sqrt(), 0.0)
    f, k, r, n = prob.shape
    prior_rows = torch.diag_embed(prob.prior).expand(f, k, n, n)
    a_aug = torch.cat([a * sw[..., None], prior_rows], dim=-2)
    y_aug = torch.cat([prob.y * sw, torch.zeros(f, k, n, dtype=a.dtype)], dim=-1)
    return wibergian.lstsq(a_aug, y_aug)


def rotation_grid(num: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """``num`` equally spaced angles in [-π, π): (G,)."""
    return torch.arange(num, dtype=dtype) * (2 * math.pi / num) - math.pi


def softmin_fuse(energy: Tensor, temperature: Tensor, bias: Tensor) -> Tensor:
    """Fusion weights ``softmax(-E / T + β)`` over models: energy (F, K) -> (F, K)."""
    return torch.softmax(-energy / temperature + bias, dim=-1)


def root_centre(poses: Tensor) -> Tensor:
    """Subtract the root joint: (..., J, 3) -> (..., J, 3)."""
    return poses - poses[..., ROOT : ROOT + 1, :]


def rotate(theta: Tensor, x: Tensor) -> Tensor:
    """Apply R_θ (about z) to points: theta (...), x (..., J, 3) -> (..., J, 3)."""
    c, s = torch.cos(theta)[..., None], torch.sin(theta)[..., None]
    xr = c * x[..., 0] - s * x[..., 1]
    yr = s * x[..., 0] + c * x[..., 1]
    return torch.stack([xr, yr, x[..., 2]], dim=-1)


def normalise_2d(pts: Tensor, vis: Tensor) -> Tensor:
    """Centre each 2D pose on its visible joints and divide by their RMS spread.

    pts (..., J, 2), vis (..., J) -> (..., J, 2), zero at missing joints.
    """
    v = vis.to(pts.dtype)[..., None]
    pts = torch.where(v > 0, pts, torch.zeros_like(pts))
    cnt = v.sum(-2, keepdim=True).clamp_min(1.0)
    centre = (pts * v).sum(-2, keepdim=True) / cnt
    d = (pts - centre) * v
    rms = (d.pow(2).sum((-1, -2), keepdim=True) / cnt).sqrt().clamp_min(1e-9)
    return d / rms


def lift_mono(
    pts: Tensor, vis: Tensor, rcam: Tensor, mean: Tensor, basis: Tensor, prior_b: Tensor,
    joint_w: Tensor, s0: float, angles: Tensor, temperature: Tensor, bias: Tensor,
    loss: str = "l2", delta: Tensor | float = 1.0, damping: float = 0.1, refine: bool = True,
) -> LiftResult:
    """Monocular lifting (weak perspective, Tome et al. 2017), batched over F frames.

    Args:
        pts: (F, J, 2) normalised image coordinates ``(pixel - centre) / focal``.
        vis: (F, J) visibility (0/1).
        rcam: (F, 3, 3) world-to-camera rotation of each frame's camera.
        mean, basis: (K, J, 3), (K, B, J, 3) model in metres (aligned frame).
        prior_b: (K, B) prior weights π on the coefficients (metres⁻¹).
        joint_w: (K, J, 2) per-model, per-joint, per-image-coordinate weights.
        s0: model size (RMS, metres) used to bring the model to the 2D normalisation.
        angles: (G,) rotation grid; temperature: scalar; bias: (K,) fusion biases.
    """
    f, j = pts.shape[:2]
    u = normalise_2d(pts, vis)
    lin = rcam[:, None, None, :2, :].expand(f, 1, j, 2, 3)
    trans = torch.eye(2, dtype=pts.dtype).expand(f, 1, j, 2, 2)
    w = vis.to(pts.dtype)[:, None, None, :, None] * joint_w[None, :, None]
    cols = model_columns(mean, basis) / s0
    prob = build_problem(lin, trans, u[:, None], w, cols, prior_b)
    theta, z, energy = solve(prob, angles, loss, delta, damping, refine)
    s = z[..., 2]
    s_bounded = bounded_scale(s)
    coef = z[..., 3:] / s_bounded[..., None]
    poses = rotate(theta, mean + torch.einsum("fkb,kbjd->fkjd", coef, basis))
    penalty = (s - s_bounded).pow(2)  # per-row energy units: an out-of-range model loses
    res = _fuse(poses, energy, vis.sum(-1), theta, z, temperature, bias, penalty)
    res.scale = s_bounded
    return res


def lift_multi(
    pts: Tensor, vis: Tensor, rcam: Tensor, centre: Tensor, cam_w: Tensor, mean: Tensor,
    basis: Tensor, prior_b: Tensor, joint_w: Tensor, angles: Tensor, temperature: Tensor,
    bias: Tensor, loss: str = "l2", delta: Tensor | float = 1.0, damping: float = 0.1,
    refine: bool = True,
) -> LiftResult:
    """Multi-camera lifting with calibrated cameras (Tome et al. 2018), batched over F frames.

    Args:
        pts: (F, C, J, 2) normalised image coordinates; vis: (F, C, J).
        rcam: (F, C, 3, 3) world-to-camera rotations; centre: (F, C, 3) camera centres, metres
            (a leading F of 1 broadcasts).
        cam_w: (C,) camera weights. Other arguments as in :func:`lift_mono`.
    """
    f, c, j = pts.shape[:3]
    v = vis.to(pts.dtype)
    n = torch.where(v[..., None] > 0, pts, torch.zeros_like(pts))
    rcam = rcam.expand(f, c, 3, 3)
    centre = centre.expand(f, c, 3)
    r3 = rcam[..., 2, :]  # (F, C, 3)
    d = n[..., :, None] * r3[:, :, None, None, :] - rcam[:, :, None, :2, :]  # (F,C,J,2,3)
    y = torch.einsum("fcjxd,fcd->fcjx", d, centre)
    w = (v[:, None, :, :, None] * joint_w[None, :, None]) * cam_w[None, None, :, None, None]
    prob = build_problem(d, d, y, w, model_columns(mean, basis), prior_b)
    theta, z, energy = solve(prob, angles, loss, delta, damping, refine)
    s = z[..., 3:4]
    shape = s[..., None] * mean + torch.einsum("fkb,kbjd->fkjd", z[..., 4:], basis)
    poses = rotate(theta, shape)
    return _fuse(poses, energy, v.sum((-1, -2)), theta, z, temperature, bias)


def _fuse(poses: Tensor, energy: Tensor, rows: Tensor, theta: Tensor, z: Tensor,
          temperature: Tensor, bias: Tensor, penalty: Tensor | None = None) -> LiftResult:
    e = energy / rows.clamp_min(1.0)[:, None]
    if penalty is not None:
        e = e + penalty
    wts = softmin_fuse(e, temperature, bias)
    poses = root_centre(poses)
    pose = (wts[..., None, None] * poses).sum(1)
    return LiftResult(pose=pose, poses=poses, weights=wts, energy=e, theta=theta, z=z)
