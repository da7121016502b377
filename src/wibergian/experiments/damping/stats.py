"""Statistics of the study: empirical CCDF, tail exponents, paired differences.

- ``ccdf(x)``: the empirical complementary CDF ``P(X > x_i) ≈ (n - i) / n`` at the sorted
  values (the last point, with probability 0, is dropped so that log axes work).
- ``hill(x, tail_fraction)``: the Hill estimator of the tail exponent ``α`` of
  ``P(X > x) ∝ x^-α`` from the ``k = ceil(tail_fraction · n)`` largest values,

      α̂ = k / Σ_{i=1..k} ln(X_(i) / X_(k+1)),       X_(1) ≥ X_(2) ≥ ... (order statistics)

  which is the maximum-likelihood estimate of a Pareto tail above the threshold ``X_(k+1)``;
  its standard error is ``α̂ / sqrt(k)``. A finite variance needs ``α > 2``.
- ``paired_difference(a, b)``: mean of ``a_i - b_i`` with the 95 % t-interval
  ``mean ± t_{0.975, n-1} · sd / sqrt(n)``, and how often ``a_i > b_i``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..stats import paired_difference  # noqa: F401  (re-exported: the damping study's API)

#: Fraction of the largest values the tail exponent is fitted on (stated in every output).
TAIL_FRACTION = 0.05


def ccdf(values: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(x, P(X > x))`` at the sorted finite values, without the final zero."""
    x = np.sort(np.asarray(values, dtype=float).ravel())
    x = x[np.isfinite(x)]
    n = x.size
    if n < 2:
        raise ValueError(f"ccdf needs at least 2 finite values; got {n}")
    p = (n - np.arange(1, n + 1)) / n
    return x[:-1], p[:-1]


def hill(values: Sequence[float] | np.ndarray, tail_fraction: float = TAIL_FRACTION
         ) -> dict[str, float | int]:
    """Hill estimate of the tail exponent (module docstring); values must be > 0."""
    if not 0 < tail_fraction < 1:
        raise ValueError(f"tail_fraction must be in (0, 1); got {tail_fraction}")
    x = np.sort(np.asarray(values, dtype=float).ravel())[::-1]
    x = x[np.isfinite(x) & (x > 0)]
    n = x.size
    k = math.ceil(tail_fraction * n)
    if k < 2 or k >= n:
        raise ValueError(f"need at least 2 values in the tail and one below it; n = {n}, "
                         f"tail_fraction = {tail_fraction}")
    logs = np.log(x[:k] / x[k])
    s = float(logs.sum())
    alpha = k / s if s > 0 else math.inf
    return {"alpha": alpha, "se": alpha / math.sqrt(k), "k": k, "n": n,
            "threshold": float(x[k]), "tail_fraction": tail_fraction}


def summary(values: Sequence[float] | np.ndarray) -> dict[str, Any]:
    """Median, quantiles, max and max/median of positive values (gradient norms)."""
    x = np.asarray(values, dtype=float).ravel()
    fin = x[np.isfinite(x)]
    if fin.size == 0:
        return {"n": int(x.size), "n_nonfinite": int(x.size)}
    med = float(np.median(fin))
    return {"n": int(x.size), "n_nonfinite": int(x.size - fin.size), "median": med,
            "q99": float(np.quantile(fin, 0.99)), "q999": float(np.quantile(fin, 0.999)),
            "max": float(fin.max()), "max_over_median": float(fin.max() / med) if med > 0
            else None}


def tail_report(values: Sequence[float] | np.ndarray, tail_fraction: float = TAIL_FRACTION
                ) -> dict[str, Any]:
    """`summary` plus the Hill fit (None when there are too few values)."""
    out = summary(values)
    try:
        out["tail"] = hill(values, tail_fraction)
    except ValueError as err:
        out["tail"] = {"error": str(err), "tail_fraction": tail_fraction}
    return out
