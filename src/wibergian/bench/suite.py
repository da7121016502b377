"""Which methods run on which workload, and the reference gradient each is checked against."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

import numpy as np

from .common import DAMPING, BenchMethod, check_agreement
from .methods_torch import (
    W1Ours,
    W1Unrolled,
    W2AutogradCholesky,
    W2OursArgmin,
    W2OursLstsq,
    W3Ours,
    W3Unrolled,
    w1_iterations_to_converge,
)
from .workloads import make_w1, make_w2, make_w3

Reference = Callable[[float], dict[str, np.ndarray]]

#: W1's second stopping rule, like Optimistix's (``rtol = atol = 1e-12``): at most 20
#: iterations, each problem stopping once converged (4 iterations for all here at B = 20,000);
#: the unrolled baseline then gets that many iterations.
W1_EARLY_TOL = 1e-12


def available(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def w1_suite(batch: int, anchors: bool = True) -> tuple[list[BenchMethod], Reference]:
    """Ours (closed-form and autograd derivatives), torch unrolled, both also with Optimistix's
    early stop, TorchOpt, JAX anchors."""
    d = make_w1(batch)
    k = w1_iterations_to_converge(d, W1_EARLY_TOL)
    from .user import W1User

    methods: list[BenchMethod] = [W1Ours(d), W1Ours(d, closed_form=False), W1Unrolled(d),
                                  W1Ours(d, tol=W1_EARLY_TOL), W1Unrolled(d, iters=k),
                                  W1User(d), W1User(d, compile=True), W1User(d, compile=False)]
    if anchors and available("torchopt"):
        from .methods_torchopt import W1TorchOpt

        methods.append(W1TorchOpt(d))
    if anchors and available("jax"):
        from .methods_jax import w1_methods

        methods.extend(w1_methods(d))
    return methods, lambda lam: W1Ours(d, damping=lam).gradient()


def w2_suite(batch: int, anchors: bool = True) -> tuple[list[BenchMethod], Reference]:
    """Ours (argmin with the quadratic solver at λ = 0 and λ = 0.1, and lstsq on the stacked
    system), the user's energy with every default (eager and compile=True; checked against
    λ = 0.1), autograd through Cholesky / solve, TorchOpt, JAX, Theseus."""
    from .user_w2w3 import W2User

    d = make_w2(batch)
    methods: list[BenchMethod] = [W2OursArgmin(d, damping=0.0), W2OursArgmin(d), W2OursLstsq(d),
                                  W2AutogradCholesky(d), W2AutogradCholesky(d, solve="solve"),
                                  W2User(d), W2User(d, compile=True)]
    if anchors and available("torchopt"):
        from .methods_torchopt import W2TorchOpt

        methods.append(W2TorchOpt(d))
    if anchors and available("jax"):
        from .methods_jax import w2_methods

        # jax.vjp through a vmapped Cholesky took 15.7 s per backward at B = 1000 here
        # (bench_quick.json); above B = 2000 it is left out to keep the run's wall time sane.
        methods.extend(w2_methods(d, autodiff=batch <= 2000))
    if anchors and available("theseus"):
        from .methods_theseus import W2Theseus

        methods.append(W2Theseus(d))

    def reference(lam: float) -> dict[str, np.ndarray]:
        if lam == 0.0:
            return W2OursLstsq(d).gradient()
        return W2OursArgmin(d, damping=lam).gradient()

    return methods, reference


def w3_agreement(size: int = 32, iters: int = 150, user: bool = True) -> dict[str, Any]:
    """W3's gradient check, on a crop small enough for every forward to converge (the unrolled
    gradient equals the implicit one only at a converged minimum; the user's rows run
    Newton-CG, ours L-BFGS, so their gradients agree only where both have converged): unrolled
    against ours at λ = 0, the user's rows (``user``) against ours at λ = 0.1, ours' L-BFGS run
    to ``||∇E||∞ ≤ 1e-12``. Raises on mismatch."""
    d = make_w3(size)
    ref = W3Ours(d, damping=0.0, iters=iters, tol=1e-12, cg_tol=1e-10).gradient()
    unrolled = W3Unrolled(d, iters=iters)
    err = check_agreement(unrolled.info.name, unrolled.gradient(), ref, unrolled.info.tolerance)
    errors = {"ours": 0.0, unrolled.info.name: err}
    instance = f"{d.source}, {iters} L-BFGS iterations"
    if user:
        from .user_w2w3 import W3User

        ref_damped = W3Ours(d, damping=DAMPING, iters=iters, tol=1e-12, cg_tol=1e-10).gradient()
        for m in (W3User(d), W3User(d, compile=True)):
            errors[m.info.name] = check_agreement(m.info.name, m.gradient(), ref_damped,
                                                  m.info.tolerance)
        instance += (" (the user's-energy rows: Newton-CG with argmin's defaults, against ours "
                     f"at λ = {DAMPING:g})")
    return {"instance": instance, "errors": errors}


def w3_suite(size: int, iters: int, user: bool = True) -> list[BenchMethod]:
    """Ours (L-BFGS, closed-form derivatives), torch unrolled, and (``user``) the user's energy
    with every default, eager and compile=True."""
    d = make_w3(size)
    methods: list[BenchMethod] = [W3Ours(d, iters=iters), W3Unrolled(d, iters=iters)]
    if user:
        from .user_w2w3 import W3User

        methods += [W3User(d), W3User(d, compile=True)]
    return methods
