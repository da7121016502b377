"""The Newton solver's overhead cuts (issue 14, helper newton) change no result.

Finiteness by reductions = the boolean-copy definition (NaN, ±inf anywhere, empty tensors); a
Hessian handed over in a permuted memory layout (as the compiled torch.func route returns it)
gives bit-identical solutions, iterations, saddle flags and gradients, on a batch mixing
positive-definite starts and saddle starts, and is not modified in place.
"""

from __future__ import annotations

import pytest
import torch

import wibergian
from wibergian.solvers.nonfinite import rows_finite

D = torch.float64


def _reference_rows_finite(*ts):
    ok = torch.isfinite(ts[0]).reshape(ts[0].shape[0], -1).all(-1)
    for t in ts[1:]:
        ok = ok & torch.isfinite(t).reshape(t.shape[0], -1).all(-1)
    return ok


@pytest.mark.parametrize("dtype", [torch.float32, D])
def test_rows_finite_equals_the_elementwise_definition(dtype):
    g = torch.Generator().manual_seed(0)
    for shape in [(40,), (40, 3), (40, 5, 5), (40, 2, 3, 4)]:
        t = torch.randn(shape, generator=g, dtype=dtype)
        flat = t.view(-1)
        pos = torch.randperm(flat.numel(), generator=g)[:30]
        for k, i in enumerate(pos.tolist()):
            flat[i] = (float("nan"), float("inf"), -float("inf"))[k % 3]
        assert not bool(_reference_rows_finite(t).all())  # the test has bad rows
        assert torch.equal(rows_finite(t), _reference_rows_finite(t))
        other = torch.randn(40, 4, generator=g, dtype=dtype)
        other[7, 2] = float("nan")
        assert torch.equal(rows_finite(other, t), _reference_rows_finite(other, t))
    assert rows_finite(torch.zeros(0, 3, 3, dtype=dtype)).shape == (0,)
    assert torch.equal(rows_finite(torch.zeros(4, 0, dtype=dtype)), torch.ones(4, dtype=torch.bool))


def _double_wells(permuted: bool, declared: bool = True):
    """``E = ¼ Σ (y_i² - 1)² + ½ yᵀ A y + wᵀ y`` per problem; ``H = diag(3y² - 1) + A`` is
    indefinite at ``y = 0`` (a saddle start). The declared ``value_gradient_hessian`` returns
    ``H`` in the ``(B, n, n)`` shape with strides ``(n, 1, B·n)`` when ``permuted``."""
    def energy(y, a, w):
        return 0.25 * ((y * y - 1) ** 2).sum(-1) + 0.5 * (y * (a @ y.unsqueeze(-1)).squeeze(
            -1)).sum(-1) + (w * y).sum(-1)

    def vgh(y, a, w):
        e = energy(y, a, w)
        g = (y * y - 1) * y + (a @ y.unsqueeze(-1)).squeeze(-1) + w
        h = torch.diag_embed(3 * y * y - 1) + a
        if permuted:
            h = h.permute(2, 0, 1).contiguous().permute(1, 2, 0)
            assert not h.is_contiguous()
        seen.append((h, h.clone()))
        return e, g, h

    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    if declared:
        energy.value_gradient_hessian = vgh  # type: ignore[attr-defined]
    return energy, seen


def test_permuted_hessian_layout_gives_identical_results_on_mixed_saddle_batch():
    g = torch.Generator().manual_seed(3)
    b, n = 24, 6
    m = 0.1 * torch.randn(b, n, n, generator=g, dtype=D)
    a = m + m.mT
    w0 = 0.05 * torch.randn(n, generator=g, dtype=D)
    y0 = torch.randn(b, n, generator=g, dtype=D)
    y0[::3] = 0.0  # a third of the problems start at a saddle (H = A - I indefinite)
    outs = []
    for permuted in (False, True):
        energy, seen = _double_wells(permuted)
        w = w0.clone().requires_grad_()
        y, info = wibergian.argmin(energy, y0, (a, w), return_info=True, warn=False)
        y.pow(2).sum().backward()
        outs.append((y.detach(), info, w.grad))
        assert seen and all(torch.equal(h, c) for h, c in seen)  # never written in place
    (y1, i1, g1), (y2, i2, g2) = outs
    assert bool(i1.converged.all())
    assert torch.equal(y1, y2) and torch.equal(g1, g2)
    assert torch.equal(i1.iterations, i2.iterations) and torch.equal(i1.energy, i2.energy)
    assert torch.equal(i1.final_step_accepted, i2.final_step_accepted)
    assert i1.forward_fallbacks == i2.forward_fallbacks
    # every saddle start escaped to a minimum: H positive definite at y*
    h_star = torch.diag_embed(3 * y1 * y1 - 1) + a
    assert bool((torch.linalg.eigvalsh(h_star)[:, 0] > 0).all())
    # and the autograd Hessian route lands on the same minima
    energy, _ = _double_wells(False, declared=False)
    y3 = wibergian.argmin(energy, y0, (a, w0), warn=False)
    assert torch.allclose(y3, y1, atol=1e-9, rtol=0)


# ------------------------------------------------------------- the start check's shared pass


def _logistic(y, x, t):
    z = (x @ y.unsqueeze(-1)).squeeze(-1)
    return (torch.nn.functional.softplus(z) - t * z).sum(-1) + 0.5 * (y * y).sum(-1)


def test_the_start_check_and_the_solver_share_one_evaluation_at_y0():
    """From the second call on (the energy's y-dependence known) the start check's pass is the
    Newton solver's first: the energy runs once at ``y0``, and the result is bit-identical to
    the first call's (where the check and the solver evaluate ``y0`` separately)."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(5, 7, 3, generator=gen, dtype=D)
    t = (torch.rand(5, 7, generator=gen, dtype=D) < 0.5).to(D)
    y0 = torch.full((5, 3), 0.25, dtype=D)
    seen: list[torch.Tensor] = []

    def energy(y, x, t):
        seen.append(y.detach().clone())
        return _logistic(y, x, t)

    outs = []
    for _ in range(2):
        seen.clear()
        y, info = wibergian.argmin(energy, y0, (x, t), compile=False, return_info=True)
        outs.append((y, info.iterations))
        at_start = sum(1 for s in seen if s.shape == y0.shape and torch.equal(s, y0))
        assert at_start == (2 if len(outs) == 1 else 1)
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])


def _geometric_median(y, x):
    return ((y[:, None, :] - x) ** 2).sum(-1).sqrt().sum(-1)


def test_a_repeated_call_still_moves_a_start_with_a_nan_gradient_and_refuses_a_nan_energy():
    x = torch.randn(2, 4, 3, generator=torch.Generator().manual_seed(1), dtype=D)
    for _ in range(2):  # the first call checks y-dependence by autograd, the second shares
        with pytest.warns(wibergian.NonSmoothWarning):
            y, info = wibergian.argmin(_geometric_median, x[:, 0].clone(), (x,), compile=False,
                                       return_info=True)
        assert info.perturbed_starts == 2 and bool(torch.isfinite(y).all())
    a = torch.zeros(2, 3, dtype=D)
    y0 = torch.ones(2, 3, dtype=D)
    assert wibergian.argmin(_pole_and_well, y0, (a,), compile=False).shape == (2, 3)
    y0[1] = 0.0  # E(y0) = inf for problem 1: refused on the shared path too
    with pytest.raises(ValueError, match=r"not finite at the start point of problems \[1\]"):
        wibergian.argmin(_pole_and_well, y0, (a,), compile=False)


def _pole_and_well(y, a):
    return ((y - a) ** -2).sum(-1) + (y * y).sum(-1)
