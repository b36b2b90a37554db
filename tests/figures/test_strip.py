"""The ybROAD curve a strip draws, read from the run's ybroad.json by value."""

from __future__ import annotations

import json

import numpy as np
import pytest

from camanim import InputError
from camanim.figures import read_run, road_curve


def test_the_curve_is_the_runs_ybroad_against_depth(figure_runs):
    data = json.loads((figure_runs["gradcam"] / "ybroad.json").read_text())
    curve = road_curve(read_run(figure_runs["gradcam"]))
    np.testing.assert_allclose(curve.depths, [0, 100 / 6, 200 / 6, 50, 400 / 6, 500 / 6, 100])
    expected = [np.nan if layer["ybroad"] is None else layer["ybroad"] for layer in data["layers"]]
    np.testing.assert_allclose(curve.values, expected, equal_nan=True)
    assert np.isnan(curve.values[6])  # fc: non-spatial, ROAD undefined
    assert (curve.best, curve.best_name) == (data["ybroad_max"]["index"], data["ybroad_max"]["name"])


def test_a_run_without_ybroad_or_with_a_stale_one_is_a_clear_error(figure_runs, tmp_path):
    with pytest.raises(InputError, match="camanim road"):
        road_curve(read_run(figure_runs["hirescam"]))
    run = read_run(figure_runs["gradcam"])
    run.view.ybroad["layers"] = run.view.ybroad["layers"][:3]
    with pytest.raises(InputError, match="scores 3 layers but the run has 7"):
        road_curve(run)
