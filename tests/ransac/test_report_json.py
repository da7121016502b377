"""ransac.json keys and types on a short run; the markdown table."""

from __future__ import annotations

import json

from wibergian.experiments.ransac.run import RansacConfig, markdown_table, run_experiment


def test_json_keys_and_types(tmp_path):
    cfg = RansacConfig(seeds=3, steps=4, n_test=40, lr=1e-3, momentum=0.9)
    res = run_experiment(cfg, tmp_path, quiet=True)
    data = json.loads((tmp_path / "ransac.json").read_text())
    assert data["data"].startswith("generated")
    for name in ("damped", "undamped"):
        m = data[name]
        assert len(m["final_sigma"]) == 3 and all(
            v is None or isinstance(v, float) for v in m["final_sigma"])
        assert isinstance(m["diverged"], int)
        assert m["diverged"] == sum(v is None for v in m["final_sigma"])
        assert len(m["max_abs_step"]) == 3
        assert all(isinstance(v, float) and v > 0 for v in m["max_abs_step"])
        assert m["test_mse"] is None or isinstance(m["test_mse"], float)
        # test_mse is the mean of the per-seed values of the runs that did not diverge
        kept = [v for v in m["test_mse_per_seed"] if v is not None]
        assert abs(m["test_mse"] - sum(kept) / len(kept)) < 1e-9
    assert data["damped"]["damping"] == 0.1 and data["undamped"]["damping"] == 0.0
    for b in ("median", "mean", "initial_sigma"):
        assert isinstance(data["baselines"][b]["test_mse"], float)
    assert data["baselines"]["initial_sigma"]["sigma"] == cfg.sigma0
    for f in data["figures"]:
        assert (tmp_path / f).stat().st_size > 1000
    table = markdown_table(res)
    assert f"{data['baselines']['mean']['test_mse']:.1f}" in table
    assert "damped (λ = 0.1)" in table and "undamped (λ = 0)" in table
