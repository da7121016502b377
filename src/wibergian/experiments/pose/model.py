"""The learnable pose-lifting model: every hand-set quantity of the fitting energy as a parameter.

Parameters (initialised to the untrained model: PPCA values, multipliers 1, additive terms 0):

==================  ============  =====================================================
name                shape         role
==================  ============  =====================================================
``mean``            (K, J, 3)     PPCA mean poses μ_k, metres (aligned frame)
``basis``           (K, B, J, 3)  PPCA basis e_k (orthonormal at initialisation)
``log_sigma``       (K, B)        prior weights σ_kb = exp(.) = 1/std_kb at initialisation
``log_joint_w``     (K, J, 2)     per-model, per-joint, per-image-coordinate residual weights
``log_cam_w``       (C,)          camera weights (multi-camera only)
``log_reg``         ()            regularisation scale ρ = reg0 · exp(.) (prior π = ρ σ)
``log_robust``      ()            pseudo-Huber scale δ = robust0 · exp(.) (Huber loss only)
``log_temp``        ()            fusion temperature T = temp0 · exp(.)
``fusion_bias``     (K,)          per-model additive fusion bias
==================  ============  =====================================================

Units: multi-camera residuals are metres at the subject (see ``lifting.py``); monocular
residuals are in units of the 2D pose's RMS size. ``reg0``, ``robust0`` and ``temp0`` are the
hand-set scalars (the ones a grid search would tune).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from .cameras import Camera
from .lifting import LiftResult, lift_mono, lift_multi, rotation_grid
from .ppca import PPCAMixture

BASIS_GROUP = ("mean", "basis", "log_sigma", "log_cam_w")
#: ``learn`` presets: which parameters are trained.
LEARN_GROUPS: dict[str, tuple[str, ...] | None] = {
    "all": None,  # every parameter
    "basis": BASIS_GROUP,  # only μ, e, σ and the camera weights
    # everything except the pose vectors μ and e (~300 scalars instead of ~4,300)
    "no_basis": ("log_sigma", "log_joint_w", "log_cam_w", "log_reg", "log_robust",
                 "log_temp", "fusion_bias"),
    # only the hand-set scalars and the fusion biases (what a grid search could tune, + K)
    "scalars": ("log_reg", "log_robust", "log_temp", "log_cam_w", "fusion_bias"),
}


@dataclass
class ModelConfig:
    """Hand-set settings of the lifting (the untrained model's values).

    Attributes:
        mode: "mono" or "multi".
        loss: "l2" or "huber".
        grid: number of rotation angles of the grid search.
        reg0: regularisation scale ρ (relative residual noise level; see module docstring).
        robust0: pseudo-Huber scale δ (same unit as the residuals).
        temp0: fusion temperature (energy per residual row).
        damping: λ of the trust-region implicit gradient (``wibergian.argmin``).
        refine: refine the rotation after the grid search.
        undistort: remove lens distortion from the 2D input before lifting.
    """

    mode: str = "multi"
    loss: str = "l2"
    grid: int = 24
    reg0: float | None = None
    robust0: float | None = None
    temp0: float | None = None
    damping: float = 0.1
    refine: bool = True
    undistort: bool = True

    def __post_init__(self) -> None:
        if self.mode not in ("mono", "multi"):
            raise ValueError(f"mode must be 'mono' or 'multi', got {self.mode!r}")
        if self.loss not in ("l2", "huber"):
            raise ValueError(f"loss must be 'l2' or 'huber', got {self.loss!r}")
        if self.grid < 4:
            raise ValueError(f"grid must have at least 4 angles, got {self.grid}")
        mono = self.mode == "mono"
        # defaults: multi residuals in metres (detector noise ~ 7 px at f ~ 1150 px, 5 m away
        # is ~3 cm); mono residuals relative to the 2D pose size (~ 5 %).
        if self.reg0 is None:
            self.reg0 = 0.05 if mono else 0.03
        if self.robust0 is None:
            self.robust0 = 0.1 if mono else 0.05
        if self.temp0 is None:
            self.temp0 = 2e-3 if mono else 1e-3

    def to_dict(self) -> dict:
        return asdict(self)


CAMERA_KEYS = ("rot", "centre", "focal", "pp", "radial", "tangential")


def camera_tensors(cameras: Camera, dtype: torch.dtype = torch.float64) -> dict[str, Tensor]:
    """Model-side camera tensors from a batched :class:`Camera` of batch shape S:
    world-to-camera rotations ``rot`` (S, 3, 3), centres in metres ``centre`` (S, 3), focal
    lengths and principal points ``focal``, ``pp`` (S, 2) px, distortion ``radial`` (S, 3) and
    ``tangential`` (S, 2)."""
    return {
        "rot": cameras.R.transpose(-1, -2).to(dtype),
        "centre": cameras.t.to(dtype) / 1000.0,
        "focal": cameras.f.to(dtype),
        "pp": cameras.c.to(dtype),
        "radial": cameras.k.to(dtype),
        "tangential": cameras.p.to(dtype),
    }


class PoseModel(nn.Module):
    """Mixture-of-PPCA lifting with learnable energy (see module docstring).

    ``forward(points, visible, cams)`` takes pixels ``(F, C, J, 2)``, visibility ``(F, C, J)``
    and the per-frame cameras ``cams`` (:func:`camera_tensors` with S = (F, C)) and returns a
    :class:`LiftResult` whose ``pose`` is ``(F, J, 3)`` (multi) or ``(F, C, J, 3)`` (mono: one
    lifting per view), root-centred, metres.
    """

    def __init__(self, mixture: PPCAMixture, scale_mm: float, num_cameras: int,
                 config: ModelConfig | None = None, dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        cfg = config or ModelConfig()
        self.config = cfg
        k, b, d = mixture.basis.shape
        j = d // 3
        self.num_models, self.num_basis = k, b
        self.s0 = float(scale_mm) / 1000.0
        self.mean = nn.Parameter((mixture.mean / 1000.0).reshape(k, j, 3).to(dtype).clone())
        self.basis = nn.Parameter(mixture.basis.reshape(k, b, j, 3).to(dtype).clone())
        std_m = (mixture.std / 1000.0).to(dtype)
        self.log_sigma = nn.Parameter(-torch.log(std_m).clone())
        self.log_joint_w = nn.Parameter(torch.zeros(k, j, 2, dtype=dtype))
        self.num_cameras = int(num_cameras)
        if cfg.mode == "multi":
            self.log_cam_w = nn.Parameter(torch.zeros(self.num_cameras, dtype=dtype))
        self.log_reg = nn.Parameter(torch.zeros((), dtype=dtype))
        if cfg.loss == "huber":
            self.log_robust = nn.Parameter(torch.zeros((), dtype=dtype))
        self.log_temp = nn.Parameter(torch.zeros((), dtype=dtype))
        self.fusion_bias = nn.Parameter(torch.zeros(k, dtype=dtype))
        self.register_buffer("angles", rotation_grid(cfg.grid, dtype))

    # -------------------------------------------------------------- parameters
    def set_learnable(self, learn: str) -> None:
        """Train the parameters of preset ``learn`` (:data:`LEARN_GROUPS`): ``"all"``;
        ``"basis"`` (μ, e, σ, camera weights); ``"no_basis"`` (all but μ and e);
        ``"scalars"`` (ρ, δ, T, camera weights, fusion biases)."""
        if learn not in LEARN_GROUPS:
            raise ValueError(f"learn must be one of {sorted(LEARN_GROUPS)}, got {learn!r}")
        group = LEARN_GROUPS[learn]
        for name, p in self.named_parameters():
            p.requires_grad_(group is None or name in group)

    def num_learnable(self) -> int:
        """Number of scalars that require grad."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def scalars(self) -> dict[str, float]:
        """The hand-set scalars as currently set (for logs and the grid search)."""
        cfg = self.config
        out = {
            "reg": cfg.reg0 * math.exp(float(self.log_reg.detach())),
            "temp": cfg.temp0 * math.exp(float(self.log_temp.detach())),
        }
        if hasattr(self, "log_robust"):
            out["robust"] = cfg.robust0 * math.exp(float(self.log_robust.detach()))
        return out

    # -------------------------------------------------------------- forward
    def normalised_points(self, points: Tensor, cams: dict[str, Tensor]) -> Tensor:
        """Pixels (F, C, J, 2) -> normalised, undistorted camera coordinates (F, C, J, 2).

        Undistortion inverts ``u_d = u (radial(|u|²) + p1 u_y + p2 u_x) + (p2, p1) |u|²`` by
        fixed-point iteration (differentiable, exact to ~1e-10 for Human3.6M distortions).
        """
        u = (points - cams["pp"][..., None, :]) / cams["focal"][..., None, :]
        if not self.config.undistort:
            return u
        k = cams["radial"][..., None, :]
        p = cams["tangential"][..., None, :]
        if not bool((k != 0).any() or (p != 0).any()):
            return u
        ud = u
        for _ in range(8):
            r2 = (u * u).sum(-1, keepdim=True)
            radial = 1 + k[..., 0:1] * r2 + k[..., 1:2] * r2**2 + k[..., 2:3] * r2**3
            tan = p[..., 0:1] * u[..., 1:2] + p[..., 1:2] * u[..., 0:1]
            u = (ud - torch.cat([p[..., 1:2], p[..., 0:1]], -1) * r2) / (radial + tan)
        return u

    def forward(self, points: Tensor, visible: Tensor, cams: dict[str, Tensor]) -> LiftResult:
        cfg = self.config
        if points.dim() != 4 or points.shape[1] != self.num_cameras or points.shape[-1] != 2:
            raise ValueError(f"points must be (F, {self.num_cameras}, J, 2), got "
                             f"{tuple(points.shape)}")
        missing = [k for k in CAMERA_KEYS if k not in cams]
        if missing:
            raise ValueError(f"cams lacks {missing}; build it with camera_tensors()")
        cams = {k: v.to(self.mean.dtype) for k, v in cams.items()}
        pts = self.normalised_points(points.to(self.mean.dtype), cams)
        vis = visible.to(pts.dtype)
        prior = cfg.reg0 * torch.exp(self.log_reg) * torch.exp(self.log_sigma)
        joint_w = torch.exp(self.log_joint_w)
        temp = cfg.temp0 * torch.exp(self.log_temp)
        delta = cfg.robust0 * torch.exp(self.log_robust) if cfg.loss == "huber" else 1.0
        if cfg.mode == "multi":
            return lift_multi(
                pts, vis, cams["rot"], cams["centre"], torch.exp(self.log_cam_w), self.mean,
                self.basis,
                prior, joint_w, self.angles, temp, self.fusion_bias, cfg.loss, delta,
                cfg.damping, cfg.refine,
            )
        f, c, j, _ = pts.shape
        rcam = cams["rot"].expand(f, c, 3, 3).reshape(f * c, 3, 3)
        res = lift_mono(
            pts.reshape(f * c, j, 2), vis.reshape(f * c, j), rcam, self.mean, self.basis, prior,
            joint_w, self.s0, self.angles, temp, self.fusion_bias, cfg.loss, delta, cfg.damping,
            cfg.refine,
        )
        res.pose = res.pose.reshape(f, c, j, 3)
        return res

    def predict(self, points: Tensor, visible: Tensor, cams: dict[str, Tensor],
                chunk: int = 128) -> Tensor:
        """Root-centred poses in mm, detached, in chunks of frames: (F, J, 3) multi,
        (F, C, J, 3) mono."""
        outs = []
        for i in range(0, points.shape[0], chunk):
            sl = slice(i, i + chunk)
            res = self(points[sl], visible[sl], {k: v[sl] for k, v in cams.items()})
            outs.append(res.pose.detach() * 1000.0)
        return torch.cat(outs)
