"""Honest baselines: the usual median, the single tracker chosen on train, the per-frame
oracle, paired margins with confidence intervals."""

from __future__ import annotations

import math

import pytest
import torch

from wibergian.experiments.fusion.data import Frames, baselines, crowd_fusion, masked_median
from wibergian.experiments.fusion.evaluate import markdown_table, paired_ci, summarise


def test_median_is_mean_of_two_middle_values_for_even_counts() -> None:
    x = torch.tensor([[[1.0], [4.0], [2.0], [10.0]],      # 4 valid: (2 + 4) / 2 = 3
                      [[1.0], [4.0], [2.0], [10.0]],      # 3 valid (10 masked): 2
                      [[5.0], [7.0], [0.0], [0.0]],       # 2 valid: 6
                      [[5.0], [7.0], [0.0], [0.0]],       # 1 valid: 7
                      [[5.0], [7.0], [0.0], [0.0]]])      # none valid: NaN
    v = torch.tensor([[True, True, True, True], [True, True, True, False],
                      [True, True, False, False], [False, True, False, False],
                      [False, False, False, False]])
    m = masked_median(x, v)[:, 0]
    assert m[:4].tolist() == [3.0, 2.0, 6.0, 7.0]
    assert math.isnan(m[4])
    # through crowd_fusion: two trackers -> the midpoint of their corners
    boxes = torch.tensor([[[0.0, 0, 10, 10], [2.0, 4, 10, 10]]])
    f = Frames(boxes, torch.ones(1, 2, dtype=torch.bool), torch.zeros(1, 4), torch.ones(1),
               torch.ones(1, 2, 2), torch.zeros(1, dtype=torch.long), ["s"], ["a", "b"])
    torch.testing.assert_close(crowd_fusion(f, "median"), torch.tensor([[1.0, 2, 10, 10]]))


def _frames(boxes: list[list[list[float]]], gt: list[list[float]]) -> Frames:
    b = torch.tensor(boxes)
    n, t = b.shape[:2]
    return Frames(b, torch.ones(n, t, dtype=torch.bool), torch.tensor(gt), torch.ones(n),
                  torch.ones(n, t, 2), torch.zeros(n, dtype=torch.long), ["s"],
                  [f"t{i}" for i in range(t)])


def test_best_single_is_chosen_on_train_and_scored_on_test() -> None:
    g = [0.0, 0, 10, 10]
    off = [5.0, 0, 10, 10]                      # IoU 1/3
    train = _frames([[g, off], [g, off]], [g, g])          # t0 best on train
    test = _frames([[off, g], [off, g], [g, off]], [g, g, g])  # t1 best on test
    b = baselines(test, train)
    assert b["best_single_train_name"] == "t0"
    assert b["best_single_train"] == pytest.approx((1 / 3 + 1 / 3 + 1) / 3)
    assert b["single_trackers"][0][0] == "t1"          # the test oracle differs
    assert b["single_trackers"][0][1] == pytest.approx((1 + 1 + 1 / 3) / 3)
    # per-frame oracle: the best box on every frame is exact here
    assert b["oracle_per_frame"] == pytest.approx(1.0)


def test_paired_ci_and_verdicts() -> None:
    ci = paired_ci([0.2, 0.25, 0.3])
    # t(0.975, 2) = 4.3027; sd = 0.05; half width = 4.3027 * 0.05 / sqrt(3) = 0.124
    assert ci["mean"] == pytest.approx(0.25)
    assert ci["hi"] - ci["mean"] == pytest.approx(4.302653 * 0.05 / math.sqrt(3), rel=1e-5)
    assert ci["verdict"] == "wins"
    assert paired_ci([0.1, 0.2, 0.3])["verdict"] == "inconclusive"   # half width 0.248
    assert paired_ci([-0.01, 0.02, 0.0])["verdict"] == "inconclusive"
    assert paired_ci([-0.2, -0.3, -0.25])["verdict"] == "loses"
    one = paired_ci([0.5])
    assert one["lo"] is None and one["verdict"] == "inconclusive"


def _seed(fused: float, best_train: float, median: float, lam0: float | str) -> dict:
    return {"fused_damped": fused, "best_single_train": best_train, "best_single": 0.7,
            "median_fusion": median, "fused_lambda0": lam0, "mean_fusion": 0.2,
            "fused_init": 0.5, "oracle_per_frame": 0.9, "train_seconds_damped": 1.0,
            "train_seconds_lambda0": 1.0, "damped_status": "completed",
            "lambda0_status": "diverged" if isinstance(lam0, str) else "completed"}


def test_summary_uses_paired_margins() -> None:
    # the fused IoU varies a lot over seeds, but it beats the baseline on every seed
    # by about the same amount: the paired margin is significant (the old acceptance rule,
    # margin > spread of the fused IoU, would have said no)
    per = [_seed(0.40, 0.38, 0.30, 0.41), _seed(0.60, 0.57, 0.55, "diverged at step 7"),
           _seed(0.80, 0.78, 0.70, 0.79)]
    s = summarise(per)
    m = s["paired_margins"]["fused − best single (chosen on train)"]
    assert m["values"] == pytest.approx([0.02, 0.03, 0.02])
    assert m["verdict"] == "wins"
    assert s["fused_damped"]["max"] - s["fused_damped"]["min"] > 0.3
    lam = s["paired_margins"]["fused − fused λ=0"]
    assert lam["n"] == 2 and lam["values"] == pytest.approx([-0.01, 0.01])
    assert s["lambda0_status_counts"] == {"completed": 2, "diverged": 1}
    table = markdown_table({"protocols": {"sequences": {"summary": s, "seeds": per}},
                            "settings": {"damping": 0.1}})
    assert "1/3 seeds diverged (diverged at step 7)" in table
    assert "Best single tracker chosen on train" in table and "(oracle)" in table
    assert "+0.023 [" in table and "wins" in table


def test_rank_consistency_between_sequences() -> None:
    from wibergian.experiments.fusion.data import rank_consistency

    g = [0.0, 0, 10, 10]
    good, mid, bad = g, [2.0, 0, 10, 10], [6.0, 0, 10, 10]
    # sequence 0: t0 > t1 > t2; sequence 1: the reverse -> rank correlation -1
    f = _frames([[good, mid, bad], [bad, mid, good]], [g, g])
    f.seq = torch.tensor([0, 1])
    f.names = ["s0", "s1"]
    r = rank_consistency(f)
    assert r["mean_spearman_between_sequences"] == pytest.approx(-1.0)
    # the steady middle tracker (IoU 2/3 on both) is best overall, yet best on no sequence
    assert r["global_best"] == "t1" and r["global_best_is_best_on"] == 0
    assert r["per_sequence_best_mean_iou"] == pytest.approx(1.0)
    f2 = _frames([[good, mid, bad], [good, mid, bad]], [g, g])
    f2.seq, f2.names = torch.tensor([0, 1]), ["s0", "s1"]
    assert rank_consistency(f2)["mean_spearman_between_sequences"] == pytest.approx(1.0)
