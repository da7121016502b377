"""`wibergian damping --quick` (tiny sizes) and `wibergian ransac --optimizer asgd`."""

import json

import numpy as np
import pytest

from wibergian import cli
from wibergian.experiments.damping.cli import TINY_ENV
from wibergian.experiments.ransac.run import RansacConfig, run_experiment


def test_damping_quick_writes_the_documented_keys(tmp_path, monkeypatch):
    monkeypatch.setenv(TINY_ENV, "1")
    rc = cli.main(["damping", "--quick", "--only", "toy,endtoend", "--out", str(tmp_path),
                   "--quiet"])
    assert rc == 0
    res = json.loads((tmp_path / "damping.json").read_text())
    assert set(res) >= {"study", "settings", "methods", "rules", "sections", "missing"}
    assert set(res["sections"]) == {"toy", "endtoend"}
    assert {"fusion_zoo", "fusion_real", "pose"} <= set(res["missing"])
    toy = res["sections"]["toy"]
    grads = toy["gradients"]["at"]["6"]
    for m in ("lambda0", "ridge", "floor"):
        tail = grads[m]["per_problem"]["tail"]
        assert tail["alpha"] > 0 and tail["tail_fraction"] == 0.05 and tail["k"] == 20
    assert 0 <= grads["frac_curvature_below_lambda"] <= 1
    # the damped per-problem gradient is never larger than the undamped one's maximum
    assert grads["ridge"]["per_problem"]["max"] <= grads["lambda0"]["per_problem"]["max"]
    cells = toy["sweep"]["cells"]
    assert [(c["optimizer"], c["lr"]) for c in cells] == [("sgd", 0.5), ("asgd", 0.5)]
    for c in cells:
        assert set(c["methods"]) == {"lambda0", "ridge", "floor", "relative", "clip0",
                                     "clip_ridge"}
        pr = c["paired_vs_ridge"]["lambda0"]
        assert pr["n"] + pr["n_dropped"] == 2 and len(pr["ci95"]) == 2
    basin = toy["basin"]
    assert basin["best_fixed_sigma"] in (6.0, 12.0) and basin["n_test"] == 200
    for row in basin["rows"]:
        assert row["fd_slope_continuous"] + row["fd_slope_jumps"] == pytest.approx(
            row["fd_slope"], rel=1e-9, abs=1e-9)
    e2e = res["sections"]["endtoend"]
    assert e2e["gradients"]["relative_lambda"] > 0 and e2e["gradients"]["clip"] > 0
    cell = e2e["sweep"]["cells"][0]
    assert cell["methods"]["lambda0"]["runs"] == 2
    for f in toy["figures"] + e2e["figures"]:
        assert (tmp_path / f).is_file()


def test_ransac_asgd_evaluates_the_average_and_reports_the_paired_difference(tmp_path):
    cfg = RansacConfig(seeds=3, steps=6, n_test=50, lr=0.5, momentum=0.0, optimizer="asgd")
    res = run_experiment(cfg, tmp_path, quiet=True)
    on_disk = json.loads((tmp_path / "ransac.json").read_text())
    pd = on_disk["paired_difference"]
    d = (np.array(res["damped"]["test_mse_per_seed"])
         - np.array(res["undamped"]["test_mse_per_seed"]))
    assert pd["mean"] == pytest.approx(float(d.mean()))
    assert pd["ci95"][0] < pd["mean"] < pd["ci95"][1] and pd["n"] == 3
    assert all(v > 0 for v in on_disk["damped"]["test_mse_se_per_seed"])


def test_ransac_batched_asgd_average_is_the_mean_of_the_iterates():
    from wibergian.experiments.ransac.train import RunSpec, train_runs

    run = train_runs(RunSpec.uniform([0, 1], 0.5, 0.0), 0.1, 5, 2.0, optimizer="asgd",
                     quiet=True)
    np.testing.assert_allclose(run.final_sigma, run.sigma[1:].mean(axis=0), rtol=1e-12)
    assert not np.allclose(run.final_sigma, run.sigma[-1])
    with pytest.raises(ValueError, match="no momentum"):
        train_runs(RunSpec.uniform([0], 0.5, 0.9), 0.1, 2, 2.0, optimizer="asgd", quiet=True)


def test_ransac_cli_rejects_momentum_with_asgd(tmp_path, capsys):
    rc = cli.main(["ransac", "--optimizer", "asgd", "--momentum", "0.9", "--out",
                   str(tmp_path)])
    assert rc == 2
    assert "--optimizer asgd has no momentum" in capsys.readouterr().err


def test_damping_cli_overrides_parse_and_reach_every_trainer_section():
    import argparse

    from wibergian.experiments.damping.cli import _grid, _methods, override
    from wibergian.experiments.damping.run import StudySettings

    assert _grid("momentum=10,30; sgd=30") == {"momentum": [10.0, 30.0], "sgd": [30.0]}
    for bad in ("nesterov=1", "momentum=-1", "momentum", "sgd=abc"):
        with pytest.raises(argparse.ArgumentTypeError):
            _grid(bad)
    with pytest.raises(argparse.ArgumentTypeError):
        _methods("lambda0,exact")
    st = override(StudySettings.full(), 150, 3, ["lambda0", "ridge"], {"sgd": [30.0]})
    for b in (st.fusion, st.endtoend, st.pose):
        assert (b.sweep.steps, b.sweep.seeds, b.sweep.methods, b.sweep.lrs) == (
            150, [0, 1, 2], ["lambda0", "ridge"], {"sgd": [30.0]})
