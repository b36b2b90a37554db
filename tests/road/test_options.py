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
    ({"percentiles": (20, 20.0)}, "--road-percentiles 20,20 repeats a percentage"),
])
def test_bad_road_options_are_refused(kwargs, message):
    with pytest.raises(InputError, match=message):
        RoadOptions(**kwargs)


def test_parse_percentiles_and_keywords():
    assert RoadOptions.parse_percentiles("20, 40,60") == (20.0, 40.0, 60.0)
    with pytest.raises(InputError, match="must be numbers"):
        RoadOptions.parse_percentiles("20,x")
    opts = RoadOptions(percentiles=(10, 90), trials=2)
    assert opts.percentiles == (10.0, 90.0) and opts.batch_size_for("cpu") == 8
    assert opts.batch_size_for("cuda") == 32 and RoadOptions(batch_size=3).batch_size_for("cuda") == 3


def test_ybroad_with_options_equals_ybroad_with_the_same_keywords(tiny, tiny_input):
    import torch

    from camanim.road import ybroad

    cams = torch.rand(2, 16, 16, generator=torch.Generator().manual_seed(0))
    by_options = ybroad(tiny, tiny_input, cams, 1, options=RoadOptions(percentiles=(25, 75), trials=2, seed=4))
    by_keywords = ybroad(tiny, tiny_input, cams, 1, percentiles=(25, 75), trials=2, seed=4, batch_size=8)
    torch.testing.assert_close(by_options.combined, by_keywords.combined, rtol=0, atol=0)
    with pytest.raises(TypeError, match="not both"):
        ybroad(tiny, tiny_input, cams, 1, trials=5, options=RoadOptions())
