"""The full Jacobian ``dy*/dw`` of a minimiser, for inspection and tests.

Training never needs it (the adjoint works with vector-Jacobian products); this helper builds it
explicitly as ``dy*/dw = -R(H) ∂(∇_y E)/∂w`` where ``R(H)`` is ``(H + λI)^-1`` (ridge) or the
eigenvalue-floored inverse (floor). Cost: one reverse pass per entry of ``∇_y E`` (``B·n``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .derivatives import gradient_and_hessian, gradient_graph
from .energy import EnergyFn
from .errors import nonfinite_derivative
from .linsolve import dense_solve


def argmin_jacobian(
    energy: EnergyFn,
    y_star: Tensor,
    params: Sequence[Tensor],
    *,
    damping: float = 0.1,
    regulariser: str = "ridge",
) -> list[Tensor]:
    """``dy*/dw`` for every parameter tensor, at the minimiser ``y_star``.

    Args:
        energy: the energy, as given to ``argmin``.
        y_star: minimisers ``(B, n)``.
        params: the energy's parameters.
        damping, regulariser: as in ``argmin``.

    Returns:
        One tensor per parameter, of shape ``(B, n, *param.shape)``: the derivative of
        ``y_star[b, i]`` with respect to the whole parameter tensor.
    """
    y_star = y_star.detach()
    b, n = y_star.shape
    g0, h = gradient_and_hessian(energy, y_star, params)
    for quantity, t in (("gradient ∇_y E", g0), ("Hessian ∇²_y E", h)):
        bad = ~torch.isfinite(t).reshape(b, -1).all(-1)
        if bool(bad.any()):
            raise nonfinite_derivative("argmin_jacobian", quantity, bad)
    out = []
    for k, p in enumerate(params):
        if not p.is_floating_point():
            out.append(torch.zeros(b, n, *p.shape, dtype=y_star.dtype, device=y_star.device))
            continue
        live = [q.detach() for q in params]
        live[k] = live[k].requires_grad_(True)
        with torch.enable_grad():
            _, g = gradient_graph(energy, y_star, live)
            rows = []
            for bi in range(b):
                for i in range(n):
                    (r,) = torch.autograd.grad(g[bi, i], live[k], retain_graph=True,
                                               allow_unused=True)
                    rows.append(torch.zeros_like(live[k]) if r is None else r)
        dg = torch.stack(rows).reshape(b, n, -1)  # ∂g_bi/∂w, (B, n, P)
        cols = []
        for j in range(dg.shape[-1]):
            v, _ = dense_solve(h, dg[..., j], damping, regulariser)
            cols.append(-v)
        jac = torch.stack(cols, dim=-1) if cols else dg
        out.append(jac.reshape(b, n, *p.shape))
    return out
