"""Summary over seeds and the acceptance rule (fused beats best single and median fusion by
more than the spread of the fused IoU over seeds)."""

from __future__ import annotations

import pytest

from wibergian.experiments.fusion.evaluate import markdown_table, summarise


def _seed(fused: float, best: float, median: float, lam0: float | str) -> dict:
    return {"fused_damped": fused, "best_single": best, "median_fusion": median,
            "fused_lambda0": lam0, "mean_fusion": 0.2, "fused_init": 0.5,
            "train_seconds_damped": 1.0, "train_seconds_lambda0": 1.0}


def test_summary_statistics_and_acceptance() -> None:
    s = summarise([_seed(0.60, 0.50, 0.45, 0.58), _seed(0.62, 0.52, 0.47, "diverged at step 7"),
                   _seed(0.61, 0.51, 0.46, 0.59)])
    assert s["fused_damped"]["mean"] == pytest.approx(0.61)
    assert s["fused_damped"]["std"] == pytest.approx(0.01)
    assert s["fused_lambda0"]["n"] == 2 and s["fused_lambda0"]["mean"] == pytest.approx(0.585)
    assert s["lambda0_diverged"] == ["diverged at step 7"]
    acc = s["acceptance"]
    assert acc["fused_spread_over_seeds(max-min)"] == pytest.approx(0.02)
    assert acc["holds"]
    # a margin smaller than the spread fails the rule
    s2 = summarise([_seed(0.60, 0.59, 0.45, 0.5), _seed(0.64, 0.5, 0.45, 0.5)])
    assert not s2["acceptance"]["holds"]
    table = markdown_table({"protocols": {"frames": {"summary": s, "seeds": [{}, {}, {}]}},
                            "settings": {"damping": 0.1}})
    assert "1/3 seeds diverged (diverged at step 7)" in table
    assert "0.610 ± 0.010" in table
