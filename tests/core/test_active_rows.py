"""The Newton solver evaluates its last few active problems alone (``solvers/active_rows.py``)
and computes exactly what the full-batch evaluation computes."""

from __future__ import annotations

import pytest
import torch

import wibergian
from wibergian.bench.user import DenseData, logistic_energy
from wibergian.solvers import active_rows

D = torch.float64


def _solve(energy, d, params, compile=False):
    log_l, mu = (p.clone().requires_grad_(True) for p in params)
    with wibergian.auto_compile_after(0):
        y, info = wibergian.argmin(energy, torch.zeros(d.batch, d.n, dtype=D),
                                   (d.x, d.t, log_l, mu), return_info=True, compile=compile,
                                   warn=False)
    ((y - d.y_true) ** 2).sum().backward()
    return y.detach(), log_l.grad, mu.grad, info


def _stragglers(n=8, b=200):
    """D with a few problems scaled up (sharper, farther minima: they need more iterations)."""
    d = DenseData(b, n, seed=4)
    d.x[:3] *= 6.0
    return d


@pytest.mark.parametrize("compile", [False, True])
def test_few_active_problems_are_evaluated_alone_with_the_same_result(monkeypatch, compile):
    d = _stragglers()
    params = (d.log_lam, d.mu)
    active_rows.COUNTS.update(evaluated=0, refused=0)
    monkeypatch.setattr(active_rows, "COMPILED_FRACTION", 0.05)
    y, gl, gm, info = _solve(logistic_energy, d, params, compile)
    it = info.iterations
    assert 0 < int((it > 4).sum()) <= 0.05 * d.batch < int((it == 4).sum())  # stragglers
    assert active_rows.COUNTS["evaluated"] >= 1 and active_rows.COUNTS["refused"] == 0
    # the same solve evaluating the whole batch every iteration
    monkeypatch.setattr(active_rows, "EAGER_FRACTION", 0.0)
    monkeypatch.setattr(active_rows, "COMPILED_FRACTION", 0.0)
    y0, gl0, gm0, info0 = _solve(logistic_energy, d, params, compile)
    assert torch.equal(info.iterations, info0.iterations)
    if compile:  # eager rows against the compiled kernel's: the same minima to the tolerance
        assert bool(info.converged.all()) and bool(info0.converged.all())
        torch.testing.assert_close(y, y0, rtol=0, atol=1e-8)
        torch.testing.assert_close(gm, gm0, rtol=1e-7, atol=1e-10)
        torch.testing.assert_close(gl, gl0, rtol=1e-7, atol=1e-10)
    else:
        assert torch.equal(y, y0) and torch.equal(gm, gm0) and torch.equal(gl, gl0)


def test_a_compiled_energys_few_active_rows_go_through_one_padded_kernel(monkeypatch):
    """Up to ``SUBSET_ROWS`` active rows of a compiled energy are evaluated by its kernel of that
    many rows (built once; padded inputs): the same minima and gradients as its eager rows."""
    from wibergian.compiled import compiled_energy

    d = _stragglers()
    params = (d.log_lam, d.mu)
    monkeypatch.setattr(active_rows, "COMPILED_FRACTION", 0.05)
    runs, padded = {}, active_rows.SUBSET_ROWS
    for subset in (padded, 0):
        monkeypatch.setattr(active_rows, "SUBSET_ROWS", subset)
        energy = lambda y, *p: logistic_energy(y, *p)  # noqa: E731 - a fresh compiled wrapper
        active_rows.COUNTS.update(evaluated=0, refused=0)
        runs[subset] = _solve(energy, d, params, compile=True)
        assert active_rows.COUNTS["evaluated"] >= 1 and active_rows.COUNTS["refused"] == 0
        sizes = {k[1] for k in compiled_energy(energy)._kernels if k[0] == "vgh"}
        assert sizes == ({d.batch, subset} if subset else {d.batch})
    (y, gl, gm, info), (y0, gl0, gm0, info0) = runs[padded], runs[0]
    assert torch.equal(info.iterations, info0.iterations) and bool(info.converged.all())
    torch.testing.assert_close(y, y0, rtol=0, atol=1e-8)
    torch.testing.assert_close(gm, gm0, rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(gl, gl0, rtol=1e-7, atol=1e-10)


def test_a_batch_no_larger_than_the_padded_block_builds_no_second_kernel(monkeypatch):
    """At B ≤ SUBSET_ROWS a padded kernel would be larger than the batch's own: the few active
    rows go through the eager energy, and only the batch's kernel is built."""
    from wibergian.compiled import compiled_energy

    d = _stragglers(b=48)
    monkeypatch.setattr(active_rows, "COMPILED_FRACTION", 0.1)
    energy = lambda y, *p: logistic_energy(y, *p)  # noqa: E731 - a fresh compiled wrapper
    active_rows.COUNTS.update(evaluated=0, refused=0)
    _, _, _, info = _solve(energy, d, (d.log_lam, d.mu), compile=True)
    assert active_rows.COUNTS["evaluated"] >= 1 and bool(info.converged.all())
    assert {k[1] for k in compiled_energy(energy)._kernels if k[0] == "vgh"} == {48}


def test_a_shared_parameter_with_the_batch_size_is_not_sliced():
    """``w`` ``(B,)`` is shared (every problem reads ``w.mean()``): slicing it would change the
    energy, so the check refuses the subset and the solve evaluates whole batches."""
    d = _stragglers()
    w = torch.linspace(0.5, 1.5, d.batch, dtype=D)

    def energy(y, x, t, log_l, mu, w):
        return logistic_energy(y, x, t, log_l, mu) + w.mean() * (y * y).sum(-1)

    def solve(fraction):
        active_rows.EAGER_FRACTION = fraction
        mu = d.mu.clone().requires_grad_(True)
        y, info = wibergian.argmin(energy, torch.zeros(d.batch, d.n, dtype=D),
                                   (d.x, d.t, d.log_lam, mu, w), return_info=True, compile=False)
        y.square().sum().backward()
        return y.detach(), mu.grad, info

    active_rows.COUNTS.update(evaluated=0, refused=0)
    try:
        y, g, info = solve(0.5)
        assert active_rows.COUNTS == {"evaluated": 0, "refused": 1}
        y0, g0, info0 = solve(0.0)
    finally:
        active_rows.EAGER_FRACTION = 0.5
    assert bool(info.converged.all())
    assert torch.equal(y, y0) and torch.equal(g, g0)
    # and the refused slicing would indeed have changed the energy
    rows = torch.tensor([0, 5])
    full = energy(y, d.x, d.t, d.log_lam, d.mu, w)[rows]
    sliced = energy(y[rows], d.x[rows], d.t[rows], d.log_lam, d.mu, w[rows])
    assert not torch.allclose(full, sliced)


def test_a_shared_matrix_sliced_to_the_wrong_shape_is_refused_not_raised():
    """B = n = 3 and a shared ``(n, n)`` matrix: the rule would slice it (first dimension B) and
    the sliced call raises; the solve goes on with whole batches, as without subsets."""
    g = torch.Generator().manual_seed(0)
    q = torch.randn(3, 3, generator=g, dtype=D)
    q = q @ q.T + torch.eye(3, dtype=D)

    def energy(y, q, c):
        return 0.25 * ((y @ q) * y).sum(-1) ** 2 + (c * y).sum(-1)

    c = torch.tensor([[1.0, 0.0, 0.0], [40.0, -30.0, 20.0], [0.5, 0.5, 0.5]], dtype=D)
    out = []
    for fraction in (0.5, 0.0):
        active_rows.EAGER_FRACTION = fraction
        active_rows.COUNTS.update(evaluated=0, refused=0)
        cg = c.clone().requires_grad_(True)
        try:
            y, info = wibergian.argmin(energy, torch.zeros(3, 3, dtype=D), (q, cg),
                                       return_info=True)
        finally:
            active_rows.EAGER_FRACTION = 0.5
        y.square().sum().backward()
        out.append((y.detach(), cg.grad, dict(active_rows.COUNTS), info.iterations))
    (y, gc, counts, it), (y0, gc0, counts0, it0) = out
    assert int(it.min()) < int(it.max())  # problems stop at different iterations
    assert counts == {"evaluated": 0, "refused": 1} and counts0["refused"] == 0
    assert torch.equal(y, y0) and torch.equal(gc, gc0)


def _newton_cg(energy, y0, params, fraction):
    """``NewtonCG`` on ``energy`` with sub-batches from ``fraction`` of the batch (0: never)."""
    from wibergian.solvers import NewtonCG

    active_rows.EAGER_FRACTION = fraction
    solver = NewtonCG()
    try:
        out = solver.minimize(energy, y0, params)
    finally:
        active_rows.EAGER_FRACTION = 0.5
    return out, dict(solver.record)


def test_newton_cg_carries_its_last_active_problems_on_as_a_sub_batch():
    """Newton-CG (``solvers/newton_cg.py``) on D with stragglers: once at most half the problems
    run, they alone carry on, and every problem ends exactly where the full-batch solve ends."""
    d = _stragglers(n=48, b=60)
    params = [d.x, d.t, d.log_lam, d.mu]
    y0 = torch.zeros(d.batch, d.n, dtype=D)
    active_rows.COUNTS.update(evaluated=0, refused=0)
    sub, rec = _newton_cg(logistic_energy, y0, params, 0.5)
    full, rec0 = _newton_cg(logistic_energy, y0, params, 0.0)
    assert rec["sub_batches"] >= 1 and rec0["sub_batches"] == 0
    assert active_rows.COUNTS["refused"] == 0
    assert int(sub.iterations.min()) < int(sub.iterations.max())
    assert bool(sub.converged.all())
    for a, b in [(sub.y, full.y), (sub.grad, full.grad), (sub.energy, full.energy),
                 (sub.iterations, full.iterations), (sub.converged, full.converged)]:
        assert torch.equal(a, b)
    assert float(sub.grad.abs().max()) <= 1e-7  # a minimiser (tol, or no representable gain)


def test_a_saddle_met_in_a_sub_batch_is_escaped_as_in_the_full_batch():
    """``E = (y₀² - 1)² + y₁²``, six problems start at a minimum and two on the saddle's stable
    manifold ``y₀ = 0``: Newton-CG reaches the saddle ``(0, 0)`` after the six have stopped, so
    the Lanczos probe runs in the sub-batch of two, with the start vectors those problems have
    in the full batch; both escape to a minimum exactly as the full-batch solve does."""
    def energy(y, s):
        return s * ((y[:, 0] ** 2 - 1) ** 2 + y[:, 1] ** 2)

    y0 = torch.tensor([[1.0, 0.0], [-1.0, 0.0]] * 3 + [[0.0, 1.0], [0.0, -2.0]], dtype=D)
    s = torch.linspace(1.0, 2.0, 8, dtype=D)
    sub, rec = _newton_cg(energy, y0, [s], 0.5)
    full, rec0 = _newton_cg(energy, y0, [s], 0.0)
    assert rec["sub_batches"] >= 1 and rec["escapes"] == rec0["escapes"] >= 2
    assert bool(sub.converged.all()) and not bool(sub.saddle.any())
    torch.testing.assert_close(sub.y[:, 0].abs(), torch.ones(8, dtype=D), rtol=0, atol=1e-9)
    assert torch.equal(sub.y, full.y) and torch.equal(sub.iterations, full.iterations)
