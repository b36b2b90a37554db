"""Intervals of ybROAD: the mean's confidence interval and the chance band, against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from camanim.road.stats import mean_ci, prediction_band, t_quantile


def test_t_quantile_is_students() -> None:
    assert t_quantile(2) == pytest.approx(12.7062, abs=1e-4)  # 1 degree of freedom
    assert t_quantile(3) == pytest.approx(4.3027, abs=1e-4)
    assert t_quantile(31) == pytest.approx(2.0423, abs=1e-4)
    assert math.isnan(t_quantile(1))


def test_mean_ci_per_column() -> None:
    draws = np.array([[1.0, 10.0], [2.0, 10.0], [3.0, 13.0]])
    mean, lo, hi = mean_ci(draws)
    assert mean.tolist() == [2.0, 11.0]
    # s = 1 and sqrt(3): half-widths t * s / sqrt(3) = 4.3027 / sqrt(3) and 4.3027
    assert lo[0] == pytest.approx(2 - 4.30265 / math.sqrt(3), abs=1e-4)
    assert hi[1] == pytest.approx(11 + 4.30265, abs=1e-4)


def test_one_draw_has_no_interval() -> None:
    mean, lo, hi = mean_ci(np.array([[0.5, 0.25]]))
    assert mean.tolist() == [0.5, 0.25] and np.isnan(lo).all() and np.isnan(hi).all()
    assert prediction_band(np.array([0.1])) == (0.1, 0.1, 0.1)


def test_prediction_band_is_wider_than_the_mean_interval() -> None:
    draws = np.array([0.01, -0.02, 0.005, 0.0])
    m, lo, hi = prediction_band(draws)
    s = float(np.std(draws, ddof=1))
    assert m == pytest.approx(draws.mean())
    assert hi - m == pytest.approx(3.18245 * s * math.sqrt(1 + 1 / 4), rel=1e-4)
    _, clo, chi = mean_ci(draws)
    assert lo < float(clo) and hi > float(chi)
