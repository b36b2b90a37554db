"""RoadOptions: checked once, with the CLI flag in the message; the device settles the batch size."""

from __future__ import annotations

import pytest

from camanim import InputError, RoadOptions


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"percentiles": (0, 50)}, "--road-percentiles 0,50 must lie strictly between 0 and 100"),
    ({"percentiles": ()}, "--road-percentiles none must lie"),
    ({"score": "auc"}, "--road-score 'auc' is unknown"),
    ({"trials": 0}, "--road-trials 0 must be at least 1"),
    ({"noise": -0.1}, "--road-noise -0.1 must not be negative"),
    ({"batch_size": 0}, "--road-batch-size 0 must be at least 1"),
])
def test_bad_road_options_are_refused(kwargs, message):
    with pytest.raises(InputError, match=message):
        RoadOptions(**kwargs)


def test_parse_percentiles_and_keywords():
    assert RoadOptions.parse_percentiles("20, 40,60") == (20.0, 40.0, 60.0)
    with pytest.raises(InputError, match="must be numbers"):
        RoadOptions.parse_percentiles("20,x")
    opts = RoadOptions(percentiles=(10, 90), trials=2)
    assert opts.keywords("cpu") == {"percentiles": (10.0, 90.0), "score": "prob", "noise": 0.01, "seed": 0,
                                    "trials": 2, "batch_size": 8}
    assert opts.for_device("cuda") == 32 and RoadOptions(batch_size=3).for_device("cuda") == 3
