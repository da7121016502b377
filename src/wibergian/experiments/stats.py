"""Statistics shared by the experiments: the paired t-interval over seeds.

For paired samples ``d_i = a_i - b_i`` (i = 1..n, e.g. one per seed, both methods on the same
data), the two-sided ``level`` interval of the mean difference is

    mean(d) ± t_{(1+level)/2, n-1} · sd(d) / √n,      sd with n - 1 degrees of freedom.

Every experiment reports its paired differences through :func:`t_half_width`, so the numbers of
the fusion, pose, ransac and damping reports are computed one way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import t as student_t


def t_half_width(diffs: Sequence[float], level: float = 0.95) -> float:
    """Half-width of the ``level`` t-interval of ``mean(diffs)``; NaN with fewer than 2 values."""
    n = len(diffs)
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1); got {level}")
    if n < 2:
        return math.nan
    mean = math.fsum(diffs) / n
    sd = math.sqrt(math.fsum((d - mean) ** 2 for d in diffs) / (n - 1))
    return float(student_t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)


def paired_difference(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """Mean of ``a - b`` over the pairs where both are finite, with its 95 % t-interval."""
    a_, b_ = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a_.shape != b_.shape:
        raise ValueError(f"paired samples need equal lengths; got {a_.shape} and {b_.shape}")
    ok = np.isfinite(a_) & np.isfinite(b_)
    d = a_[ok] - b_[ok]
    n = int(d.size)
    out: dict[str, Any] = {"n": n, "n_dropped": int((~ok).sum()), "mean": None, "ci95": None,
                           "sd": None, "a_greater": int((d > 0).sum()), "b_greater":
                           int((d < 0).sum())}
    if n == 0:
        return out
    out["mean"] = float(d.mean())
    if n >= 2:
        sd = float(d.std(ddof=1))
        half = t_half_width(d.tolist())
        out.update(sd=sd, ci95=[out["mean"] - half, out["mean"] + half])
    return out
