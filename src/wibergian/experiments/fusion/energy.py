"""The tracker-fusion energy (supplementary section 3) and the fusion model.

For one frame and one corner (top-left or bottom-right), in normalised coordinates ``y``
(2-vector), with ``T`` trackers::

    E(y) = - Σ_t m_t exp(-(y_0 - a_t)² / σ_{0,t}² - (y_1 - b_t)² / σ_{1,t}²)

(minimised: every tracker digs a Gaussian well at its corner ``(a_t, b_t)``), with mixing weight

    m_t = s_t · exp(-(w_{f,t} - w_{0,t})² / σ_{w,t}² - (h_{f,t} - h_{0,t})² / σ_{h,t}²) · θ_f,
    θ_f = 1 / (1 + A_t² f + B_t² f²).

Conventions of this implementation (documented in docs/fusion.md):

- **normalisation per frame**: pixel coordinates are mapped to ``(x - c_f) / z_f`` where
  ``c_f`` is the per-coordinate median of the valid trackers' box centres and ``z_f`` the
  median of their ``sqrt(w h)``; a box is then about 1 unit wide and λ = 0.1 is a fixed
  fraction of a unit-width well's curvature whatever the image resolution;
- sizes in ``m_t`` are relative: ``(w_{f,t} - w_{0,t}) / w_{0,t}`` (and likewise ``h``);
- ``f`` is the frame index divided by ``frame_unit`` (100 frames);
- ``s_t = exp(ρ_t) / T`` (total initial mass 1), ``σ = exp(log σ)``;
- ``(a_t, b_t)`` is the corner of tracker t's box after the learnt scale correction: the box is
  rescaled about its centre by ``exp(κ_{w,t})``, ``exp(κ_{h,t})``;
- trackers without a region on the frame (special codes) have ``m_t = 0``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

import wibergian

from .geometry import corners_to_box


class CornerEnergy:
    """``E(y; centres, weights, inv_var)`` for a batch of 2-D corner problems.

    Shapes: ``y`` (B, 2); ``centres`` (B, T, 2); ``weights`` (B, T) (``m_t``); ``inv_var``
    (B, T, 2) (``1/σ²`` per coordinate). Returns (B,). Closed-form gradient and Hessian::

        g_t = exp(-Σ_k d_{t,k}² v_{t,k}),  d = y - centre
        ∂E/∂y_k = Σ_t m_t g_t 2 v_{t,k} d_{t,k}
        ∂²E/∂y_k∂y_l = Σ_t m_t g_t (2 v_{t,k} δ_kl - 4 v_{t,k} d_{t,k} v_{t,l} d_{t,l})
    """

    @staticmethod
    def _parts(y: Tensor, centres: Tensor, inv_var: Tensor) -> tuple[Tensor, Tensor]:
        d = y.unsqueeze(1) - centres
        return d, torch.exp(-(d * d * inv_var).sum(-1))

    def __call__(self, y: Tensor, centres: Tensor, weights: Tensor, inv_var: Tensor) -> Tensor:
        _, g = self._parts(y, centres, inv_var)
        return -(weights * g).sum(-1)

    def gradient(self, y: Tensor, centres: Tensor, weights: Tensor, inv_var: Tensor) -> Tensor:
        d, g = self._parts(y, centres, inv_var)
        return ((weights * g).unsqueeze(-1) * 2 * inv_var * d).sum(1)

    def hessian(self, y: Tensor, centres: Tensor, weights: Tensor, inv_var: Tensor) -> Tensor:
        d, g = self._parts(y, centres, inv_var)
        mg = (weights * g)[..., None, None]
        vd = inv_var * d
        eye = torch.diag_embed(2 * inv_var)
        return (mg * (eye - 4 * vd.unsqueeze(-1) * vd.unsqueeze(-2))).sum(1)


corner_energy = CornerEnergy()


def frame_normaliser(boxes: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """Per-frame centre ``c_f`` (N, 2) and scale ``z_f`` (N,) from the valid trackers' boxes.

    ``boxes`` (N, T, 4) ``x, y, w, h``; ``valid`` (N, T) bool (at least one per frame).
    """
    nan = torch.full_like(boxes[..., 0], float("nan"))
    cx = torch.where(valid, boxes[..., 0] + boxes[..., 2] / 2, nan)
    cy = torch.where(valid, boxes[..., 1] + boxes[..., 3] / 2, nan)
    sz = torch.where(valid, (boxes[..., 2] * boxes[..., 3]).clamp(min=1e-6).sqrt(), nan)
    centre = torch.stack((cx.nanmedian(1).values, cy.nanmedian(1).values), -1)
    scale = sz.nanmedian(1).values.clamp(min=1e-3)
    return centre, scale


class FusionModel(nn.Module):
    """Learnt fusion energy for ``n_trackers`` trackers; forward returns fused corners.

    Parameters (all learnt): ``log_mass`` (T,) ρ_t; ``log_sigma`` (2, T, 2) log σ per corner,
    tracker, coordinate; ``log_sigma_size`` (T, 2) log σ_w, log σ_h; ``temporal`` (T, 2) A_t,
    B_t; ``log_box_scale`` (T, 2) κ_w, κ_h. ``normalise=False`` (ablation only) works in raw
    pixel coordinates instead of the per-frame normalised ones.
    """

    def __init__(self, n_trackers: int, sigma0: float = 1.0, sigma_size0: float = 2.0,
                 temporal0: float = 0.1, frame_unit: float = 100.0, damping: float = 0.1,
                 solver: str = "newton", max_iter: int = 50, tol: float | None = None,
                 normalise: bool = True) -> None:
        super().__init__()
        T = n_trackers
        self.n_trackers = T
        self.frame_unit = frame_unit
        self.damping = damping
        self.solver = solver
        self.max_iter = max_iter
        self.tol = tol
        self.normalise = normalise
        self.infos: list[wibergian.ArgminInfo] = []  # kept while ``record_infos`` is True
        self.record_infos = False
        self.log_mass = nn.Parameter(torch.zeros(T))
        self.log_sigma = nn.Parameter(torch.full((2, T, 2), math.log(sigma0)))
        self.log_sigma_size = nn.Parameter(torch.full((T, 2), math.log(sigma_size0)))
        self.temporal = nn.Parameter(torch.full((T, 2), temporal0))
        self.log_box_scale = nn.Parameter(torch.zeros(T, 2))

    def solver_counts(self) -> dict[str, int]:
        """Totals over the recorded ``argmin`` calls: problems solved, not converged, and
        backward linear solves that needed the core's eigenvalue-clamp fallback (a
        non-positive-definite ``H + λI``)."""
        return {
            "problems": sum(int(i.converged.numel()) for i in self.infos),
            "not_converged": sum(i.num_not_converged for i in self.infos),
            "backward_fallbacks": sum(int(i.backward.get("backward_fallbacks", 0))
                                      for i in self.infos),
        }

    def mixing_weights(self, boxes: Tensor, valid: Tensor, frame: Tensor,
                       first_size: Tensor) -> Tensor:
        """``m_t`` (N, T); zero where the tracker gave no region."""
        rel = (boxes[..., 2:] - first_size) / first_size.clamp(min=1e-6)
        size_term = -(rel**2 * torch.exp(-2 * self.log_sigma_size)).sum(-1)
        f = (frame / self.frame_unit).unsqueeze(-1)
        a, b = self.temporal.unbind(-1)
        theta = 1.0 / (1.0 + a**2 * f + b**2 * f**2)
        m = torch.exp(self.log_mass) / self.n_trackers * torch.exp(size_term) * theta
        return torch.where(valid, m, torch.zeros_like(m))

    def wells(self, boxes: Tensor, valid: Tensor, frame: Tensor, first_size: Tensor
              ) -> dict[str, Tensor]:
        """Energy parameters of every frame, in normalised coordinates.

        Returns ``centres`` (N, 2, T, 2) (corner, tracker, xy), ``weights`` (N, T),
        ``inv_var`` (2, T, 2), ``centre`` (N, 2) and ``scale`` (N,) of the normalisation.
        """
        c, z = frame_normaliser(boxes.detach(), valid)
        if not self.normalise:  # ablation: raw pixel coordinates (σ then in pixels)
            c, z = torch.zeros_like(c), torch.ones_like(z)
        xy, wh = boxes[..., :2], boxes[..., 2:]
        mid = xy + wh / 2
        half = wh * torch.exp(self.log_box_scale) / 2
        tl = (mid - half - c.unsqueeze(1)) / z[:, None, None]
        br = (mid + half - c.unsqueeze(1)) / z[:, None, None]
        zero = torch.zeros_like(tl)
        vm = valid.unsqueeze(-1)
        centres = torch.stack((torch.where(vm, tl, zero), torch.where(vm, br, zero)), 1)
        return {"centres": centres,
                "weights": self.mixing_weights(boxes, valid, frame, first_size),
                "inv_var": torch.exp(-2 * self.log_sigma), "centre": c, "scale": z}

    def solve(self, w: dict[str, Tensor], valid: Tensor, damping: float | None = None
              ) -> Tensor:
        """Minimise both corners of every frame -> normalised corners (N, 2, 2).

        Start: the valid tracker corner of lowest energy (evaluated at every tracker's corner);
        then ``wibergian.argmin`` (Newton or L-BFGS, final damped step, damped implicit
        gradient with λ = ``damping``).
        """
        N, _, T, _ = w["centres"].shape
        centres = w["centres"].reshape(N * 2, T, 2)
        weights = w["weights"].repeat_interleave(2, 0)
        inv_var = w["inv_var"].repeat(N, 1, 1)
        mask = valid.repeat_interleave(2, 0)
        with torch.no_grad():
            d = centres.unsqueeze(1) - centres.unsqueeze(2)            # (B, cand, well, 2)
            e = -(weights.unsqueeze(1) * torch.exp(-(d * d * inv_var.unsqueeze(1)).sum(-1)))
            e = e.sum(-1).masked_fill(~mask, float("inf"))
            y0 = centres[torch.arange(N * 2), e.argmin(1)]
        lam = self.damping if damping is None else damping
        y, info = wibergian.argmin(corner_energy, y0.detach(), (centres, weights, inv_var),
                                   damping=lam, solver=self.solver, max_iter=self.max_iter,
                                   tol=self.tol, warn=False, return_info=True)
        if self.record_infos and torch.is_grad_enabled():
            self.infos.append(info)
        return y.reshape(N, 2, 2)

    def forward(self, boxes: Tensor, valid: Tensor, frame: Tensor, first_size: Tensor,
                damping: float | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Fused corners: normalised (N, 2, 2), plus the normaliser centre (N, 2), scale (N,)."""
        w = self.wells(boxes, valid, frame, first_size)
        return self.solve(w, valid, damping), w["centre"], w["scale"]

    def predict_boxes(self, boxes: Tensor, valid: Tensor, frame: Tensor, first_size: Tensor,
                      damping: float | None = None) -> Tensor:
        """Fused boxes ``x, y, w, h`` in pixels (N, 4)."""
        y, c, z = self(boxes, valid, frame, first_size, damping)
        px = y * z[:, None, None] + c.unsqueeze(1)
        return corners_to_box(px.reshape(-1, 4))


def normalised_gt(gt: Tensor, centre: Tensor, scale: Tensor) -> Tensor:
    """Ground-truth corners (N, 2, 2) in the frame's normalised coordinates."""
    corners = torch.stack((gt[:, :2], gt[:, :2] + gt[:, 2:]), 1)
    return (corners - centre.unsqueeze(1)) / scale[:, None, None]
