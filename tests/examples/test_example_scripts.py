"""Each example's --quick mode shows the effect it claims (generated data, fixed seeds)."""

from __future__ import annotations

import pytest


def test_robust_line_fit_learnt_width_lowers_held_out_error(example, capsys):
    res = example("robust_line_fit").main(["--quick", "--steps", "20", "--n-test", "150"])
    assert res["c_learnt"] < 0.8 * res["c0"]
    assert res["median_after"] < 0.7 * res["median_before"]
    assert res["mean_after"] < res["mean_before"]
    assert "held-out" in capsys.readouterr().out


def test_least_squares_layer_learns_the_support_of_a_rank_deficient_fit(example):
    res = example("least_squares_layer").main(["--quick", "--steps", "60"])
    assert res["rank"] < 20  # the design matrices are rank-deficient: pseudo-inverse path
    assert res["mse_after"] < 0.2 * res["mse_before"]
    assert res["scale_support"] > 3 * res["scale_other"]


def test_mrf_denoise_learnt_weights_raise_held_out_psnr(example):
    res = example("mrf_denoise").main(["--quick", "--steps", "8", "--patch", "16"])
    assert res["psnr_before"] > res["psnr_noisy"]  # the MRF denoises at all
    assert res["psnr_after"] > res["psnr_before"] + 0.5


@pytest.mark.parametrize("name", ["robust_line_fit", "least_squares_layer", "mrf_denoise",
                                  "ridge_hyperparameters",
                                  "endtoend_line_fit", "drift_study"])
def test_every_example_has_help_and_quick(example, name, capsys):
    mod = example(name)
    with pytest.raises(SystemExit) as exc:
        mod.main(["--help"])
    assert exc.value.code == 0
    assert "--quick" in capsys.readouterr().out


def test_ridge_hyperparameters_learns_penalties_with_the_exact_hypergradient(example):
    res = example("ridge_hyperparameters").main(["--quick", "--steps", "40"])
    assert res["hypergradient_rel_diff"] < 1e-10  # exact, against autograd through a solve
    assert res["factor_reused"] == 1.0  # the forward's Cholesky factor served the backward
    assert res["mse_after"] < 0.2 * res["mse_before"]
    assert res["penalty_weak"] > 10 * res["penalty_strong"]
    assert res["mse_after"] < 1.35 * res["mse_oracle"]  # near the Bayes-optimal penalties
