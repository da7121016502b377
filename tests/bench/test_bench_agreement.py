"""The benchmark's gradient-agreement check: it accepts gradients that agree with an
independent dense implicit-function formula and rejects a deliberately wrong one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wibergian.bench.common import GradientMismatch, check_agreement, relative_error
from wibergian.bench.methods_torch import (
    W1Ours,
    W1Unrolled,
    W2AutogradCholesky,
    W2OursArgmin,
    W2OursLstsq,
)
from wibergian.bench.runner import check_gradients
from wibergian.bench.workloads import (
    W1Energy,
    make_w1,
    make_w2,
    w1_best_candidate,
    w2_energy,
)


def dense_implicit_w1(data, damping: float) -> dict[str, np.ndarray]:
    """``dL/dθ = -Σ_b ℓ_bᵀ (H_b + λI)^-1 ∂g_b/∂θ`` with full Jacobians (autograd), at the
    benchmark's forward solution: independent of the library's adjoint code."""
    ours = W1Ours(data, damping=0.0)
    with torch.no_grad():
        y0 = w1_best_candidate(data.a, data.c, data.m, data.s0, data.s1)
    import wibergian

    y = wibergian.argmin(W1Energy(), y0, (data.a, data.c, data.m, data.s0, data.s1),
                         solver=ours.solver, final_step=False, warn=False).detach()
    en = W1Energy()
    theta = torch.cat([data.m, data.s0, data.s1]).clone()
    k = data.m.shape[0]

    def grad_of(yy, th):
        return en.gradient(yy, data.a, data.c, th[:k], th[k : 2 * k], th[2 * k :])

    jy = torch.autograd.functional.jacobian(lambda yy: grad_of(yy, theta), y)  # (B,2,B,2)
    jt = torch.autograd.functional.jacobian(lambda th: grad_of(y, th), theta)  # (B,2,3K)
    b = y.shape[0]
    h = torch.stack([jy[i, :, i, :] for i in range(b)])
    ell = torch.sign(y - data.g) / b  # dL/dy of the mean L1 loss
    v = torch.linalg.solve(h + damping * torch.eye(2, dtype=h.dtype), ell)
    g = -torch.einsum("bi,bij->j", v, jt).numpy()
    return {"m": g[:k], "s0": g[k : 2 * k], "s1": g[2 * k :]}


@pytest.fixture(scope="module")
def w1():
    return make_w1(24, seed=3)


@pytest.mark.parametrize("damping", [0.0, 0.1])
def test_ours_matches_dense_formula_w1(w1, damping):
    ours = W1Ours(w1, damping=damping).gradient()
    assert relative_error(ours, dense_implicit_w1(w1, damping)) < 1e-8


def test_unrolled_matches_undamped_implicit_w1(w1):
    ref = W1Ours(w1, damping=0.0).gradient()
    err = check_agreement("unrolled", W1Unrolled(w1).gradient(), ref, 1e-4)
    assert err < 1e-4
    # and it is really different from the damped gradient (the check is not vacuous)
    assert relative_error(W1Unrolled(w1).gradient(), W1Ours(w1, damping=0.1).gradient()) > 1e-3


def test_wrong_gradient_fails_loudly(w1):
    class Wrong(W1Ours):
        """Claims to compute the λ = 0.1 gradient but uses λ = 0.5."""

        def __init__(self, data):
            super().__init__(data, damping=0.5, name="deliberately wrong")
            self.info.ref_damping = 0.1

    methods = [W1Ours(w1), Wrong(w1)]
    with pytest.raises(GradientMismatch, match="deliberately wrong"):
        check_gradients(methods, lambda lam: W1Ours(w1, damping=lam).gradient())


def test_check_agreement_tolerance_edges():
    ref = {"a": np.array([1.0, 0.0]), "b": np.array([0.0])}
    close = {"a": np.array([1.0 + 1e-7, 0.0]), "b": np.array([0.0])}
    assert check_agreement("x", close, ref, 1e-6) == pytest.approx(1e-7, rel=1e-3)
    with pytest.raises(GradientMismatch):
        check_agreement("x", {"a": np.array([np.nan, 0.0]), "b": np.array([0.0])}, ref, 1.0)
    with pytest.raises(GradientMismatch, match="keys"):
        check_agreement("x", {"a": np.array([1.0, 0.0])}, ref, 1.0)


def test_w2_methods_agree_with_finite_differences():
    d = make_w2(3, seed=1)
    g = W2OursLstsq(d).gradient()
    assert relative_error(W2AutogradCholesky(d).gradient(), g) < 1e-10
    assert relative_error(W2OursArgmin(d, damping=0.0).gradient(), g) < 1e-7

    def loss(sigma):
        m = W2OursLstsq(d)
        m.params["sigma"] = sigma.clone().requires_grad_(True)
        with torch.no_grad():
            return float(m.loss())

    eps = 1e-6
    for j in (0, 17, 39):
        e = torch.zeros_like(d.sigma)
        e[j] = eps
        fd = (loss(d.sigma + e) - loss(d.sigma - e)) / (2 * eps)
        assert fd == pytest.approx(g["sigma"][j], rel=1e-5, abs=1e-10)


def test_w2_closed_forms_match_autograd():
    d = make_w2(4, seed=2)
    from wibergian.bench.workloads import W2Energy

    y = torch.randn(4, 40, dtype=torch.float64, requires_grad=True)
    e = w2_energy(y, d.w, d.x, d.A, d.sigma)
    (g,) = torch.autograd.grad(e.sum(), y, create_graph=True)
    en = W2Energy()
    assert torch.allclose(g, en.gradient(y, d.w, d.x, d.A, d.sigma), atol=1e-12)
    h_row = torch.autograd.grad(g[:, 5].sum(), y)[0]
    assert torch.allclose(h_row, en.hessian(y, d.w, d.x, d.A, d.sigma)[:, 5], atol=1e-12)


def test_torchopt_agrees_on_w2():
    pytest.importorskip("torchopt")
    from wibergian.bench.methods_torchopt import W2TorchOpt

    d = make_w2(5, seed=4)
    ref = W2OursArgmin(d, damping=0.1).gradient()
    assert relative_error(W2TorchOpt(d).gradient(), ref) < 1e-6


class _Sleeper:
    """A fake method whose step sleeps ``s`` seconds and returns a fixed gradient."""

    def __init__(self, name: str, s: float):
        from wibergian.bench.common import MethodInfo

        self.info = MethodInfo(name, "test", "fixed", 0.0, 1e-6)
        self.s = s

    def prepare(self) -> float:
        return 0.0

    def forward(self):
        import time

        time.sleep(self.s)

    def backward(self, ctx):
        return {"w": np.ones(2)}

    def gradient(self):
        return self.backward(self.forward())


def test_cheap_workloads_get_enough_rounds_for_min_seconds(monkeypatch):
    """``min_seconds``: rounds of ~20 ms with
    ``min_seconds = 2`` run until about 2 s of rounds (at most ``MAX_ROUNDS``) even though the
    medians are stable after ``min_repeats = 3``; without it, 3 rounds."""
    from wibergian.bench import runner
    from wibergian.bench.runner import run_workload

    monkeypatch.setattr(runner.gc, "collect", lambda *a: 0)  # a full collection can take 0.3 s

    def run(min_seconds):
        methods = [_Sleeper("ours", 0.01), _Sleeper("other", 0.01)]
        return run_workload("fake", methods, lambda lam: {"w": np.ones(2)}, min_repeats=3,
                            max_repeats=5, malloc="default", min_seconds=min_seconds,
                            log=lambda s: None)

    plain, long = run(0.0), run(2.0)
    assert plain["rounds"] == 3 and plain["stop_reason"] == "stable"
    assert 6 <= long["min_rounds"] <= runner.MAX_ROUNDS and long["rounds"] >= long["min_rounds"]
