"""The paired t-interval every experiment reports (wibergian.experiments.stats)."""

import math

import pytest

from wibergian.experiments.damping.stats import paired_difference as damping_paired
from wibergian.experiments.fusion.evaluate import paired_ci
from wibergian.experiments.pose.study import paired as pose_paired
from wibergian.experiments.stats import paired_difference, t_half_width


def test_half_width_matches_the_t_table() -> None:
    # d = 1, 2, 3: mean 2, sd 1, t_{0.975, 2} = 4.3027  ->  4.3027 / sqrt(3)
    assert t_half_width([1.0, 2.0, 3.0]) == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    # 30 pairs: t_{0.975, 29} = 2.04523 (the old pose table stopped at 20 degrees of freedom)
    d = [float(i % 2) for i in range(30)]
    sd = math.sqrt(sum((x - 0.5) ** 2 for x in d) / 29)
    assert t_half_width(d) == pytest.approx(2.045230 * sd / math.sqrt(30), rel=1e-6)
    assert t_half_width(d, level=0.9) < t_half_width(d)
    assert math.isnan(t_half_width([1.0]))
    with pytest.raises(ValueError, match="level"):
        t_half_width(d, level=1.5)


def test_every_experiment_reports_the_same_interval() -> None:
    a, b = [3.0, 5.0, 4.5, 6.0], [1.0, 2.0, 2.5, 2.0]
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    half = t_half_width(diffs)
    mean = sum(diffs) / 4
    shared = paired_difference(a, b)
    assert shared["ci95"] == pytest.approx([mean - half, mean + half])
    assert damping_paired(a, b) == shared
    fused = paired_ci(diffs)
    assert (fused["lo"], fused["hi"]) == pytest.approx((mean - half, mean + half))
    pose = pose_paired(a, b)
    assert (pose["diff"], pose["ci"]) == pytest.approx((mean, half))
