"""The end-to-end study's pieces: closed-form derivatives, and the claimed effect on a tiny
configuration (generated data)."""

from __future__ import annotations

import torch

from wibergian.experiments.endtoend import data, model, run


def _autograd_derivatives(energy, y, *params):
    y = y.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(energy(y, *params).sum(), y, create_graph=True)
    h = torch.stack([torch.autograd.grad(g[:, i].sum(), y, retain_graph=True)[0]
                     for i in range(y.shape[1])], 1)
    return g, h


def test_welsch_line_energy_closed_forms_match_autograd():
    b = data.sample_batch(5, data.make_generator(99, 0), data.LineSpec(n_points=12))
    theta = torch.randn(5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    w = torch.rand(5, 12, dtype=torch.float64)
    c = torch.full((5, 1), 0.3, dtype=torch.float64)
    e = model.welsch_line_energy
    g, h = _autograd_derivatives(e, theta, b["u"], b["v"], w, c)
    torch.testing.assert_close(e.gradient(theta, b["u"], b["v"], w, c), g)
    torch.testing.assert_close(e.hessian(theta, b["u"], b["v"], w, c), h)


def test_generated_inliers_lie_on_the_true_line_and_hypotheses_pass_through_pairs():
    spec = data.LineSpec(n_points=20, noise_good=1e-3, noise_bad=2e-3)
    b = data.sample_batch(8, data.make_generator(99, 1), spec)
    r = b["v"] - b["theta"][:, :1] * b["u"] - b["theta"][:, 1:]
    assert float(r[b["inlier"] > 0].abs().max()) < 0.02
    assert int(b["inlier"].sum()) == 8 * spec.n_inliers
    # every hypothesis passes through at least two of the problem's points
    hyp = b["hyp"]
    res = (b["v"][:, None] - hyp[..., :1] * b["u"][:, None] - hyp[..., 1:]).abs()
    assert bool(((res < 1e-9).sum(-1) >= 2).all())


def test_end_to_end_beats_uniform_weights_on_held_out_data(tmp_path):
    st = run.StudySettings(steps=30, seeds=[0], n_test=150, n_grid=64,
                           methods=["uniform", "e2e"])
    res = run.run_study(tmp_path, st, log=lambda *_: None)
    by = {r["method"]: r for r in res["records"]}
    # the median is the reliable claim this early in training (30 updates); the mean is
    # dominated by a few wrong-basin fits out of 150 and only drops later (docs/endtoend.md)
    assert by["e2e"]["median"] < 0.6 * by["uniform"]["median"]
    # the trainer's run folder exists with its checkpoint and results
    rd = tmp_path / "runs" / "e2e_seed0"
    assert (rd / "results.json").is_file() and any((rd / "checkpoints").iterdir())
    assert (tmp_path / "endtoend_results.json").is_file()
    # --resume on finished runs reloads the trained model instead of retraining it
    again = run.run_study(tmp_path, st, log=lambda *_: None, resume=True)
    by2 = {r["method"]: r for r in again["records"]}
    assert by2["e2e"]["stop_reason"] == "already_complete"
    assert by2["e2e"]["median"] == by["e2e"]["median"]


def test_unrolled_baselines_reach_the_argmin_fit_of_the_same_energy():
    b = data.test_batch(60, 3)
    torch.manual_seed(0)
    m = model.LineFitModel(6).double()
    with torch.no_grad():
        w, c = m.weights(b), m.log_c.exp()
        ref = model.robust_fit(b, w, c)
        newton = model.unrolled_newton(b, w, c, 10)
        irls = model.unrolled_irls(b, w, c, 300)
    d_newton = (newton - ref).norm(dim=-1)
    d_irls = (irls - ref).norm(dim=-1)
    assert float((d_newton < 1e-8).double().mean()) > 0.85  # measured 0.92 with 10 steps
    assert float((d_irls < 1e-8).double().mean()) > 0.95
