"""MetricOptions and parse_metrics: what they refuse, in one line."""

from __future__ import annotations

import pytest

from camanim.errors import InputError
from camanim.metrics import MetricOptions, parse_metrics


def test_one_chance_trial_is_refused_not_dropped_silently():
    # One random order gives no 95% prediction band (it needs two): the band used to be left out
    # without a word, so a caller asking for a chance baseline got none.
    with pytest.raises(InputError, match=r"chance trials must be 0 \(no chance band\) or at least 2.*got 1"):
        MetricOptions(trials=1)
    assert MetricOptions(trials=0).trials == 0 and MetricOptions(trials=2).trials == 2
    with pytest.raises(InputError, match="got -1"):
        MetricOptions(trials=-1)


def test_an_empty_metric_list_names_both_ways_of_giving_one():
    with pytest.raises(InputError, match=r"no metric named \(--metric, or metrics= in Python\)"):
        parse_metrics(" , ")
    assert parse_metrics("deletion, ROAD") == ("deletion", "road")
