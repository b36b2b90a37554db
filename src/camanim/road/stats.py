"""Intervals of ybROAD: a mean's confidence interval over repeated draws, and a chance band.

Both use Student's t distribution (scipy): ``n`` draws give ``n - 1`` degrees of freedom.

* :func:`mean_ci`: where the *mean* of the draws lies, ``mean ± t * s / sqrt(n)`` (a layer's ROAD over
  noise trials, or over images).
* :func:`prediction_band`: where *one more* draw falls, ``mean ± t * s * sqrt(1 + 1/n)`` (the chance
  band: the ROAD a random pixel ranking gets, 95 times in 100).

With one draw there is no spread to estimate: every bound is NaN.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

#: The confidence level of every interval camanim reports.
CONFIDENCE = 0.95


def t_quantile(n: int, confidence: float = CONFIDENCE) -> float:
    """Two-sided Student-t quantile for ``n`` draws (``n - 1`` degrees of freedom); NaN when ``n < 2``."""
    if n < 2:
        return math.nan
    return float(stats.t.ppf(0.5 + confidence / 2, n - 1))


def mean_ci(draws: np.ndarray, confidence: float = CONFIDENCE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and two-sided confidence interval of the mean over axis 0.

    Args:
        draws: ``(n, ...)`` values, one row per independent draw (NaN propagates).
        confidence: the interval's level, in (0, 1).

    Returns:
        ``(mean, low, high)``, each of shape ``draws.shape[1:]``; ``low``/``high`` are NaN when ``n < 2``.

    Example:
        >>> m, lo, hi = mean_ci(np.array([1.0, 2.0, 3.0]))
        >>> float(m), round(float(lo), 3), round(float(hi), 3)
        (2.0, -0.484, 4.484)
    """
    draws = np.asarray(draws, dtype=np.float64)
    n = draws.shape[0]
    mean = draws.mean(axis=0)
    if n < 2:
        nan = np.full_like(mean, math.nan)
        return mean, nan, nan.copy()
    half = t_quantile(n, confidence) * draws.std(axis=0, ddof=1) / math.sqrt(n)
    return mean, mean - half, mean + half


def prediction_band(draws: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """Mean and two-sided prediction interval of one further draw, from 1-D ``draws``.

    Returns:
        ``(mean, low, high)``; with one draw ``low == high == mean`` (no spread known).

    Example:
        >>> m, lo, hi = prediction_band(np.array([1.0, 2.0, 3.0]))
        >>> round(lo, 3), round(hi, 3)
        (-2.982, 6.982)
    """
    draws = np.asarray(draws, dtype=np.float64).ravel()
    mean = float(draws.mean())
    if draws.size < 2:
        return mean, mean, mean
    half = t_quantile(draws.size, confidence) * float(draws.std(ddof=1)) * math.sqrt(1 + 1 / draws.size)
    return mean, mean - half, mean + half
