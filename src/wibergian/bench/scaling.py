"""How our method's time grows: with the batch size ``B`` (W1), with the dimension ``n`` of
dense problems, and with ``n`` for matrix-free problems (W3's energy on larger images).

The growth exponent ``p`` of ``t ≈ c·xᵖ`` is fitted by least squares on ``(log x, log t)``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

import wibergian
from wibergian.solvers import LBFGS, NewtonTrustRegion

from .common import DAMPING
from .methods_torch import W1Ours
from .workloads import W3Energy, make_w1, make_w3, w3_loss


def growth_exponent(xs: Sequence[float], ts: Sequence[float]) -> float:
    """Slope of the least-squares line through ``(log x, log t)``."""
    if len(xs) != len(ts) or len(xs) < 2:
        raise ValueError("growth_exponent needs at least two (x, t) pairs of equal length")
    lx, lt = np.log(np.asarray(xs, float)), np.log(np.asarray(ts, float))
    slope, _ = np.polyfit(lx, lt, 1)
    return float(slope)


def _time_steps(step: Callable[[], tuple[float, float]], repeats: int) -> dict[str, float]:
    fw, bw = [], []
    step()  # warm-up
    for _ in range(repeats):
        f, b = step()
        fw.append(f)
        bw.append(b)
    return {"forward_s": float(np.median(fw)), "backward_s": float(np.median(bw)),
            "total_s": float(np.median(np.add(fw, bw)))}


def _torch_step(loss_fn: Callable[[], Tensor], params: Sequence[Tensor]):
    def step() -> tuple[float, float]:
        t0 = time.perf_counter()
        loss = loss_fn()
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        for p in params:
            p.grad = None
        return t1 - t0, t2 - t1

    return step


def scale_batch(batches: Sequence[int], repeats: int = 3, log=print) -> dict[str, Any]:
    """W1 (ours, closed-form derivatives) at each batch size."""
    rows = []
    for b in batches:
        m = W1Ours(make_w1(b))
        r = _time_steps(_torch_step(m.loss, list(m.params.values())), repeats)
        r["x"] = b
        rows.append(r)
        log(f"[scaling B] B={b:>7d} total {r['total_s']:.4f}s")
    return _fit("W1 ours, batch size B", "B", rows)


class DenseScalingEnergy:
    """``E(y) = ½ yᵀQy - bᵀy + Σ_j c_j log cosh(y_j - d_bj)`` with closed-form derivatives;
    ``Q = MᵀM/n + I`` (generated, shared), learnable ``b, c`` ``(n,)``, data ``d`` ``(B, n)``.
    Hessian ``Q + diag(c_j sech²(y_j - d_bj))``: dense ``n×n`` per problem."""

    def __init__(self, q: Tensor):
        self.q = q

    def __call__(self, y: Tensor, d: Tensor, b: Tensor, c: Tensor) -> Tensor:
        lc = torch.nn.functional.softplus(2 * (y - d)) - (y - d) - math.log(2.0)  # log cosh
        return 0.5 * ((y @ self.q) * y).sum(-1) - (b * y).sum(-1) + (c * lc).sum(-1)

    def gradient(self, y: Tensor, d: Tensor, b: Tensor, c: Tensor) -> Tensor:
        return y @ self.q - b + c * torch.tanh(y - d)

    def hessian(self, y: Tensor, d: Tensor, b: Tensor, c: Tensor) -> Tensor:
        s = 1.0 - torch.tanh(y - d) ** 2
        return self.q + torch.diag_embed(c * s)


def scale_dense(dims: Sequence[int], batch: int = 8, repeats: int = 3, log=print) -> dict[str, Any]:
    """Dense Newton + dense Cholesky adjoint at each dimension ``n``."""
    rows = []
    for n in dims:
        gen = torch.Generator().manual_seed(0)
        mm = torch.randn(n, n, generator=gen, dtype=torch.float64)
        q = mm.T @ mm / n + torch.eye(n, dtype=torch.float64)
        d = torch.randn(batch, n, generator=gen, dtype=torch.float64)
        target = torch.randn(batch, n, generator=gen, dtype=torch.float64)
        b = torch.zeros(n, dtype=torch.float64, requires_grad=True)
        c = torch.ones(n, dtype=torch.float64, requires_grad=True)
        energy = DenseScalingEnergy(q)
        solver = NewtonTrustRegion(max_iter=10, fixed_iterations=True)

        def loss(energy=energy, d=d, b=b, c=c, target=target, solver=solver) -> Tensor:
            y = wibergian.argmin(energy, d.clone(), (d, b, c), damping=DAMPING, solver=solver,
                                 linear_solver="dense", final_step=False, warn=False)
            return ((y - target) ** 2).mean()

        r = _time_steps(_torch_step(loss, [b, c]), repeats)
        r["x"] = n
        rows.append(r)
        log(f"[scaling n dense] n={n:>5d} total {r['total_s']:.4f}s")
    return _fit(f"dense, B={batch}, 10 Newton iterations, dense adjoint", "n", rows)


def scale_matrix_free(sizes: Sequence[int], iters: int = 10, repeats: int = 1,
                      log=print) -> dict[str, Any]:
    """W3's energy on ``size × size`` images: L-BFGS forward, CG adjoint (``cg_tol=1e-6``)."""
    rows = []
    for s in sizes:
        data = make_w3(s)
        energy = W3Energy(data.shape)
        ps = [data.filters.clone().requires_grad_(True), data.alpha.clone().requires_grad_(True),
              data.scale.clone().requires_grad_(True)]
        solver = LBFGS(max_iter=iters, tol=1e-9)

        def loss(data=data, energy=energy, ps=ps, solver=solver) -> Tensor:
            y = wibergian.argmin(energy, data.noisy, (data.noisy, *ps), damping=DAMPING,
                                 solver=solver, linear_solver="cg", cg_tol=1e-6,
                                 final_step=False, warn=False)
            return w3_loss(y, data.clean)

        r = _time_steps(_torch_step(loss, ps), repeats)
        r["x"] = s * s
        rows.append(r)
        log(f"[scaling n matrix-free] n={s * s:>8d} total {r['total_s']:.4f}s")
    return _fit(f"matrix-free W3 energy, {iters} L-BFGS iterations, CG adjoint", "n", rows)


def _fit(what: str, var: str, rows: list[dict[str, float]]) -> dict[str, Any]:
    xs = [r["x"] for r in rows]
    out: dict[str, Any] = {"what": what, "variable": var, "rows": rows}
    if len(rows) >= 2:
        for key in ("forward_s", "backward_s", "total_s"):
            out[f"exponent_{key[:-2]}"] = growth_exponent(xs, [r[key] for r in rows])
    return out
