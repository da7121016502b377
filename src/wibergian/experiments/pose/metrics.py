"""3D pose errors: Protocols 1, 2 and 3, batched, with per-action aggregation.

For a predicted pose ``X`` and ground truth ``Y`` (N joints, mm):

- P1 (MPJPE): root-centre both (subtract joint 0), then ``mean_j |X_j - Y_j|``.
- P2: similarity Procrustes alignment of X to Y over all 17 joints,
  ``min_{s, R, t} mean_j |s R X_j + t - Y_j|`` with R a proper rotation (det +1), using the
  closed form: centre both, ``H = X0^T Y0 = U S V^T``, ``D = diag(1, 1, sign det(V U^T))``,
  ``R = V D U^T``, ``s = tr(D S) / |X0|^2``, ``t = mean(Y) - s R mean(X)``; then MPJPE.
  (The closed form minimises the squared error; P2 is the mean Euclidean error after it.)
- P3: as P2 on the 14 joints of :data:`skeleton.P3_JOINTS` (alignment and error on those).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from . import skeleton as sk


def _check(pred: torch.Tensor, gt: torch.Tensor) -> None:
    if pred.shape != gt.shape or pred.shape[-1] != 3 or pred.dim() < 2:
        raise ValueError(f"pred and gt must both be (..., N, 3); got {tuple(pred.shape)} "
                         f"and {tuple(gt.shape)}")


def per_joint_error(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Euclidean distance per joint: (..., N, 3) x2 -> (..., N)."""
    _check(pred, gt)
    return (pred - gt).norm(dim=-1)


def root_centre(poses: torch.Tensor, root: int = sk.ROOT) -> torch.Tensor:
    """Subtract the root joint: (..., N, 3) -> (..., N, 3)."""
    return poses - poses[..., root : root + 1, :]


def procrustes_align(pred: torch.Tensor, gt: torch.Tensor, scale: bool = True) -> torch.Tensor:
    """Similarity-align ``pred`` to ``gt`` (closed form above): (..., N, 3) -> (..., N, 3)."""
    _check(pred, gt)
    mu_x = pred.mean(-2, keepdim=True)
    mu_y = gt.mean(-2, keepdim=True)
    x0, y0 = pred - mu_x, gt - mu_y
    H = x0.transpose(-1, -2) @ y0
    U, S, Vh = torch.linalg.svd(H)
    V = Vh.transpose(-1, -2)
    d = torch.sign(torch.linalg.det(V @ U.transpose(-1, -2)))
    d = torch.where(d == 0, torch.ones_like(d), d)
    D = torch.ones_like(S)
    D[..., -1] = d
    R = V @ torch.diag_embed(D) @ U.transpose(-1, -2)
    if scale:
        s = (D * S).sum(-1) / x0.pow(2).sum((-1, -2)).clamp_min(torch.finfo(x0.dtype).tiny)
    else:
        s = torch.ones_like(S[..., 0])
    return s[..., None, None] * x0 @ R.transpose(-1, -2) + mu_y


def p1(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Protocol 1 per pose: (..., 17, 3) -> (...), mm."""
    return per_joint_error(root_centre(pred), root_centre(gt)).mean(-1)


def p2(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Protocol 2 per pose (Procrustes on 17 joints): (..., 17, 3) -> (...), mm."""
    return per_joint_error(procrustes_align(pred, gt), gt).mean(-1)


def p3(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Protocol 3 per pose (Procrustes on the 14 joints of P3_JOINTS): -> (...), mm."""
    idx = list(sk.P3_JOINTS)
    return p2(pred[..., idx, :], gt[..., idx, :])


PROTOCOLS = {"P1": p1, "P2": p2, "P3": p3}


def evaluate(
    pred: torch.Tensor, gt: torch.Tensor, actions: Sequence[str] | None = None
) -> dict[str, object]:
    """All three protocols on (T, 17, 3) poses, with optional per-frame action labels.

    Returns ``{"P1": mean over frames, "P2": ..., "P3": ..., "frames": T}`` and, with actions,
    ``"per_action": {action: {"P1", "P2", "P3", "frames"}}`` and ``"action_mean"``: the mean of
    the per-action means (the usual Human3.6M table average).
    """
    _check(pred, gt)
    if pred.dim() != 3 or pred.shape[1] != sk.NUM_JOINTS:
        raise ValueError(f"expected (T, {sk.NUM_JOINTS}, 3) poses, got {tuple(pred.shape)}")
    with torch.no_grad():
        per_frame = {k: f(pred.double(), gt.double()) for k, f in PROTOCOLS.items()}
    out: dict[str, object] = {k: float(v.mean()) for k, v in per_frame.items()}
    out["frames"] = int(pred.shape[0])
    if actions is not None:
        if len(actions) != pred.shape[0]:
            raise ValueError(f"{len(actions)} action labels for {pred.shape[0]} frames")
        per_action: dict[str, dict[str, float]] = {}
        for name in sorted(set(actions)):
            mask = torch.tensor([a == name for a in actions])
            row = {k: float(v[mask].mean()) for k, v in per_frame.items()}
            row["frames"] = int(mask.sum())
            per_action[name] = row
        out["per_action"] = per_action
        out["action_mean"] = {
            k: sum(r[k] for r in per_action.values()) / len(per_action) for k in PROTOCOLS
        }
    return out


def per_frame_errors(pred: torch.Tensor, gt: torch.Tensor) -> dict[str, torch.Tensor]:
    """{"P1": (T,), "P2": (T,), "P3": (T,)} per-frame errors (for sorted-error plots)."""
    with torch.no_grad():
        return {k: f(pred.double(), gt.double()) for k, f in PROTOCOLS.items()}
