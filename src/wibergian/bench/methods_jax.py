"""JAX anchors: unrolled autodiff, JAXopt implicit differentiation, Optimistix (all jit-compiled).

Importing this module switches JAX to float64 (``jax_enable_x64``). Each method jit-compiles a
forward ``params ↦ (loss, vjp_fn)`` (``jax.vjp``, so the forward keeps exactly the residuals its
backward needs) and a backward ``vjp_fn ↦ ∂loss/∂params``; ``prepare`` runs both once and
returns the seconds of that first call (tracing + compilation + one run), which the runner
reports apart from the steady-state times.

The per-problem solvers are written for one problem and ``jax.vmap``-ed over the batch, the
idiomatic way to batch independent problems in JAX (a single CG over the whole block-diagonal
system would need far more iterations).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from .common import (  # noqa: E402
    DAMPING,
    TOL_DIRECT,
    TOL_ITERATIVE,
    TOL_UNROLLED,
    W1_ITERS,
    BenchMethod,
    MethodInfo,
)
from .workloads import W1Data, W2Data  # noqa: E402


def versions() -> dict[str, str]:
    """Versions of the JAX stack (for the report)."""
    out = {"jax": jax.__version__}
    for mod in ("jaxlib", "jaxopt", "optimistix"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - optional packages
            out[mod] = "not installed"
    return out


class _JaxMethod(BenchMethod):
    """Jit-compiled ``loss(params, data)``; ``params`` a dict of arrays."""

    jit_compiled = True

    def __init__(self, loss: Callable[..., Any], params: dict[str, np.ndarray],
                 data: dict[str, np.ndarray], info: MethodInfo):
        self.info = info
        self.params = {k: jnp.asarray(v) for k, v in params.items()}
        self.data = {k: jnp.asarray(v) for k, v in data.items()}
        self._fwd = jax.jit(lambda p, d: jax.vjp(lambda q: loss(q, d), p))
        self._bwd = jax.jit(lambda f: f(jnp.ones((), jnp.float64))[0])

    def prepare(self) -> float:
        import time

        t = time.perf_counter()
        self.gradient()
        return time.perf_counter() - t

    def forward(self) -> Any:
        out = self._fwd(self.params, self.data)
        jax.block_until_ready(out[0])
        return out

    def backward(self, ctx: Any) -> dict[str, np.ndarray]:
        g = jax.block_until_ready(self._bwd(ctx[1]))
        return {k: np.asarray(v, dtype=np.float64) for k, v in g.items()}


# ---------------------------------------------------------------------------------------- W1


def _w1_energy(y, a, c, m, s0, s1):
    """One problem: ``y`` (2,), ``a, c`` (K,)."""
    u = (y[0] - a) ** 2 / s0**2 + (y[1] - c) ** 2 / s1**2
    return -jnp.sum(m * jnp.exp(-u))


_w1_grad = jax.grad(_w1_energy)
_w1_hess = jax.hessian(_w1_energy)


def _w1_best(a, c, m, s0, s1):
    """Best candidate of one problem: energies of all K candidates (K² terms, fused by XLA)."""
    u = (a[:, None] - a[None, :]) ** 2 / s0**2 + (c[:, None] - c[None, :]) ** 2 / s1**2
    e = -jnp.sum(m * jnp.exp(-u), axis=1)
    j = jnp.argmin(e)
    return jnp.stack([a[j], c[j]])


def _w1_newton(y0, a, c, m, s0, s1, iters: int = W1_ITERS, mu0: float = 1e-3):
    """The core's trust-region Newton rule, one problem, fixed iterations."""
    eye = jnp.eye(2, dtype=y0.dtype)

    def body(_, st):
        y, e, mu = st
        g = _w1_grad(y, a, c, m, s0, s1)
        h = _w1_hess(y, a, c, m, s0, s1)
        chol = jnp.linalg.cholesky(h + mu * eye)
        pd = jnp.all(jnp.isfinite(chol))
        d = -jax.scipy.linalg.cho_solve((chol, True), g)
        d = jnp.where(pd, d, 0.0)
        y_new = y + d
        e_new = _w1_energy(y_new, a, c, m, s0, s1)
        pred = -(g @ d + 0.5 * d @ (h @ d))
        actual = e - e_new
        ok = pd & jnp.isfinite(e_new) & (actual >= 0) & (pred > 0)
        rho = jax.lax.stop_gradient(jnp.where(ok, actual / jnp.where(pred > 0, pred, 1.0), 0.0))
        ok = jax.lax.stop_gradient(ok)
        mu = jnp.where(ok & (rho > 0.75), mu / 3.0, mu)
        mu = jnp.where(ok & (rho < 0.25), mu * 2.0, mu)
        mu = jnp.clip(jnp.where(~ok, mu * 4.0, mu), 1e-12, 1e12)
        return jnp.where(ok, y_new, y), jnp.where(ok, e_new, e), mu

    e0 = _w1_energy(y0, a, c, m, s0, s1)
    y, _, _ = jax.lax.fori_loop(0, iters, body, (y0, e0, jnp.asarray(mu0, y0.dtype)))
    return y


def _w1_loss_with(solve_one: Callable[..., Any]):
    def loss(p, d):
        sg = jax.lax.stop_gradient
        y0 = jax.vmap(_w1_best, (0, 0, None, None, None))(
            d["a"], d["c"], sg(p["m"]), sg(p["s0"]), sg(p["s1"])
        )
        y = jax.vmap(solve_one, (0, 0, 0, None, None, None))(y0, d["a"], d["c"], p["m"],
                                                             p["s0"], p["s1"])
        return jnp.mean(jnp.sum(jnp.abs(y - d["g"]), axis=-1))

    return loss


def _jaxopt_solver(solve: Callable[..., Any]):
    from jaxopt import implicit_diff

    @implicit_diff.custom_root(_w1_grad, solve=solve)
    def solve_one(y0, a, c, m, s0, s1):
        return _w1_newton(y0, a, c, m, s0, s1)

    return solve_one


def _optimistix_solver():
    import optimistix as optx

    def solve_one(y0, a, c, m, s0, s1):
        fn = lambda y, args: _w1_grad(y, *args)  # noqa: E731
        sol = optx.root_find(fn, optx.Newton(rtol=1e-12, atol=1e-12), y0, (a, c, m, s0, s1),
                             max_steps=W1_ITERS, throw=False, adjoint=optx.ImplicitAdjoint())
        return sol.value

    return solve_one


def w1_methods(data: W1Data, damping: float = DAMPING) -> list[BenchMethod]:
    """JAX unrolled, JAXopt ridge-CG (λ = ``damping``) and Optimistix Newton on W1."""
    arr = data.numpy()
    params = {k: arr[k] for k in ("m", "s0", "s1")}
    dd = {k: arr[k] for k in ("a", "c", "g")}
    out: list[BenchMethod] = [
        _JaxMethod(_w1_loss_with(_w1_newton), params, dd,
                   MethodInfo("jax unrolled", f"jax {jax.__version__}",
                              f"jax.vjp through {W1_ITERS} Newton iterations", 0.0,
                              TOL_UNROLLED))
    ]
    try:
        from jaxopt import linear_solve

        solve = partial(linear_solve.solve_cg, ridge=damping, tol=1e-12, maxiter=50)
        out.append(_JaxMethod(_w1_loss_with(_jaxopt_solver(solve)), params, dd,
                              MethodInfo("jaxopt ridge-CG", "jaxopt",
                                         f"custom_root, CG with ridge={damping}", damping,
                                         TOL_ITERATIVE)))
    except ImportError:
        pass
    try:
        out.append(_JaxMethod(_w1_loss_with(_optimistix_solver()), params, dd,
                              MethodInfo("optimistix Newton", "optimistix",
                                         "root_find(∇E) Newton, ImplicitAdjoint (λ=0), "
                                         f"≤ {W1_ITERS} steps, stops when converged", 0.0,
                                         TOL_ITERATIVE, stops_when_converged=True)))
    except ImportError:
        pass
    return out


# ---------------------------------------------------------------------------------------- W2


def _w2_energy(y, w, x, A, sigma):
    r = A @ y - x
    return jnp.sum(w * r * r) + jnp.sum((sigma * y) ** 2)


def _w2_closed(w, x, A, sigma):
    """One problem's minimiser by Cholesky of ``Aᵀ W A + diag σ²``."""
    m = (A.T * w) @ A + jnp.diag(sigma**2)
    chol = jnp.linalg.cholesky(m)
    return jax.scipy.linalg.cho_solve((chol, True), A.T @ (w * x))


def _w2_loss_with(solve_one: Callable[..., Any]):
    def loss(p, d):
        y = jax.vmap(solve_one, (0, 0, None, None))(d["w"], d["x"], p["A"], p["sigma"])
        return jnp.mean((y - d["y_true"]) ** 2)

    return loss


def w2_methods(data: W2Data, damping: float = DAMPING, autodiff: bool = True
               ) -> list[BenchMethod]:
    """JAX autodiff through Cholesky (when ``autodiff``), JAXopt Cholesky and ridge-CG
    implicit differentiation on W2."""
    arr = data.numpy()
    params = {"A": arr["A"], "sigma": arr["sigma"]}
    dd = {k: arr[k] for k in ("w", "x", "y_true")}
    out: list[BenchMethod] = []
    if autodiff:
        out.append(_JaxMethod(_w2_loss_with(_w2_closed), params, dd,
                              MethodInfo("jax autodiff (cholesky)", f"jax {jax.__version__}",
                                         "jax.vjp through cholesky + cho_solve", 0.0,
                                         TOL_DIRECT)))
    try:
        from jaxopt import implicit_diff, linear_solve
    except ImportError:
        return out
    grad_e = jax.grad(_w2_energy)

    def wrapped(solve):
        @implicit_diff.custom_root(grad_e, solve=solve)
        def solve_one(y_init, w, x, A, sigma):
            return _w2_closed(w, x, A, sigma)

        def one(w, x, A, sigma):
            return solve_one(jnp.zeros(A.shape[1], A.dtype), w, x, A, sigma)

        return one

    out.append(_JaxMethod(_w2_loss_with(wrapped(linear_solve.solve_cholesky)), params, dd,
                          MethodInfo("jaxopt cholesky", "jaxopt",
                                     "custom_root, solve_cholesky (λ=0)", 0.0, TOL_DIRECT)))
    cg = partial(linear_solve.solve_cg, ridge=damping, tol=1e-12, maxiter=200)
    out.append(_JaxMethod(_w2_loss_with(wrapped(cg)), params, dd,
                          MethodInfo("jaxopt ridge-CG", "jaxopt",
                                     f"custom_root, CG with ridge={damping}", damping,
                                     TOL_ITERATIVE)))
    return out


# ------------------------------------------------------------------------- dense ridge-logistic


def _dense_energy(y, x, t, log_lam, mu):
    """One problem: ``y`` (n,), ``x`` (M, n), ``t`` (M,)."""
    z = x @ y
    return jnp.sum(jax.nn.softplus(z) - t * z) + 0.5 * jnp.exp(log_lam) * jnp.sum((y - mu) ** 2)


_dense_grad = jax.grad(_dense_energy)
_dense_hess = jax.hessian(_dense_energy)


def _dense_newton(y0, x, t, log_lam, mu, tol: float, max_steps: int = 50):
    """Plain Newton until ``||∇E||∞ ≤ tol`` (a while loop; vmapped, it runs until all stop)."""

    def cond(st):
        y, k = st
        return (jnp.max(jnp.abs(_dense_grad(y, x, t, log_lam, mu))) > tol) & (k < max_steps)

    def body(st):
        y, k = st
        g = _dense_grad(y, x, t, log_lam, mu)
        h = _dense_hess(y, x, t, log_lam, mu)
        chol = jnp.linalg.cholesky(h)
        return y - jax.scipy.linalg.cho_solve((chol, True), g), k + 1

    y, _ = jax.lax.while_loop(cond, body, (y0, 0))
    return y


def _dense_loss_with(solve_one: Callable[..., Any]):
    def loss(p, d):
        y0 = jnp.zeros_like(d["y_true"])
        y = jax.vmap(solve_one, (0, 0, 0, None, None))(y0, d["x"], d["t"], p["log_lam"],
                                                        p["mu"])
        return jnp.mean(jnp.sum((y - d["y_true"]) ** 2, axis=-1))

    return loss


def dense_methods(arr: dict[str, np.ndarray], tol: float, damping: float = DAMPING
                  ) -> list[BenchMethod]:
    """Optimistix Newton (ImplicitAdjoint) and JAXopt ridge-CG ``custom_root`` on the dense
    ridge-logistic workload (``bench/user.py``)."""
    params = {"log_lam": arr["log_lam"], "mu": arr["mu"]}
    dd = {k: arr[k] for k in ("x", "t", "y_true")}
    out: list[BenchMethod] = []
    try:
        import optimistix as optx

        def ox_one(y0, x, t, log_lam, mu):
            fn = lambda y, args: _dense_grad(y, *args)  # noqa: E731
            sol = optx.root_find(fn, optx.Newton(rtol=tol, atol=tol), y0, (x, t, log_lam, mu),
                                 max_steps=50, throw=False, adjoint=optx.ImplicitAdjoint())
            return sol.value

        out.append(_JaxMethod(_dense_loss_with(ox_one), params, dd,
                              MethodInfo("optimistix Newton", "optimistix",
                                         "root_find(∇E) Newton, ImplicitAdjoint (λ=0), stops "
                                         "when converged", 0.0, TOL_ITERATIVE,
                                         stops_when_converged=True)))
    except ImportError:
        pass
    try:
        from jaxopt import implicit_diff, linear_solve

        solve = partial(linear_solve.solve_cg, ridge=damping, tol=1e-12, maxiter=200)

        @implicit_diff.custom_root(_dense_grad, solve=solve)
        def jo_one(y0, x, t, log_lam, mu):
            return _dense_newton(y0, x, t, log_lam, mu, tol)

        out.append(_JaxMethod(_dense_loss_with(jo_one), params, dd,
                              MethodInfo("jaxopt ridge-CG", "jaxopt",
                                         f"custom_root, CG with ridge={damping}, Newton until "
                                         "converged", damping, TOL_ITERATIVE,
                                         stops_when_converged=True)))
    except ImportError:
        pass
    return out
