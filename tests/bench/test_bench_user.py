"""The user's-energy workload: its gradient agrees with autograd through converged Newton, and
the issue-14 targets table reads the run."""

from __future__ import annotations

import numpy as np
import torch

from wibergian.bench.common import relative_error
from wibergian.bench.report_user import user_targets_section
from wibergian.bench.user import DenseData, DenseUnrolled, DenseUser


def test_dense_user_gradient_matches_unrolled_at_zero_damping():
    d = DenseData(6, 3)
    ours = DenseUser(d, damping=0.0).gradient()
    unrolled = DenseUnrolled(d, iters=12).gradient()
    assert relative_error(unrolled, ours) < 1e-8
    assert all(np.isfinite(v).all() for v in ours.values())


def test_user_targets_section_verdicts():
    row = {"total_s": 1.0}
    run = {"workloads": [{"label": "D, n = 2", "workload": "D", "malloc": "default",
                          "methods": {"ours (user's energy)": {"total_s": 0.5},
                                      "optimistix Newton": row,
                                      "torch unrolled (3 iterations)": {"total_s": 0.4}}}]}
    text = user_targets_section(run)
    assert "0.50 | **met**" in text
    assert "faster than torch unrolled (3 iterations) | 0.5000 vs 0.4000 s | **not met**" in text


def test_hand_written_logistic_derivatives_equal_autograd():
    """The hand-written ideal of the Hessian-routes table is the energy's (E, ∇E, ∇²E)."""
    from wibergian import derivatives as der
    from wibergian.bench.user import DenseData, logistic_energy, logistic_value_gradient_hessian

    d = DenseData(6, 5)
    y = 0.3 * d.y_true
    ps = (d.x, d.t, torch.tensor(0.4, dtype=torch.float64), torch.randn(5, dtype=torch.float64))
    with torch.no_grad():
        got = logistic_value_gradient_hessian(y, *ps)
    for g, w in zip(got, der.value_gradient_hessian(logistic_energy, y, ps), strict=True):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


def test_default_row_warm_up_stops_where_auto_never_compiles(monkeypatch):
    """A default row whose solver has no compiled kernels (here L-BFGS) stays eager: its
    warm-up ends after one call instead of waiting for a switch that never comes."""
    import wibergian
    from wibergian import auto_compile

    original = wibergian.argmin
    monkeypatch.setattr(wibergian, "argmin",
                        lambda *args, **kw: original(*args, solver="lbfgs", **kw))
    m = DenseUser(DenseData(3, 4))
    with auto_compile.auto_compile_after(1, unknowns=0):
        assert m.jit_compiled
        assert m.prepare() == 0.0
    assert m.stays_eager and not m.jit_compiled and m.eager_calls is None
    assert m.info.gradient.endswith("stays eager (solver without compiled kernels)")


def test_unrolled_baseline_is_left_out_where_it_would_not_fit_and_the_table_says_so():
    from wibergian.bench import user

    # n = 32, B = 1000 ran (about 3 GB); n = 128, B = 1000 would keep about 50 GB
    assert user.unrolled_bytes(1000, 32, 6) <= user.UNROLLED_MAX_BYTES
    assert user.unrolled_bytes(1000, 128, 6) > 10 * user.UNROLLED_MAX_BYTES
    run = {"workloads": [{"label": "D, n = 128", "workload": "D", "malloc": "default",
                          "methods": {"ours (user's energy)": {"total_s": 0.5},
                                      "optimistix Newton": {"total_s": 1.0}}}]}
    text = user_targets_section(run)
    assert "faster than torch unrolled | not run: its retained graph would exceed 4 GiB" in text
