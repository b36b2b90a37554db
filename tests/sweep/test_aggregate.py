"""The sweep's aggregates are :func:`camanim.ybroad` over the same images: the same numbers, the same verdict."""

from __future__ import annotations

import numpy as np
import pytest
from _sweepfixture import LAYERS, MODEL, SETTINGS

import camanim
from camanim.sources import load_model


@pytest.fixture(scope="module")
def direct(reference) -> dict:
    """``camanim.ybroad`` of each method over the good images (animated here, targets = the labels)."""
    loaded = load_model(MODEL, "none", input_size=(64, 64))
    good = [it for it in reference["items"] if reference["rows"][it.key]["image"]["status"] == "ok"]
    good.sort(key=lambda it: it.image)
    out = {}
    for method in SETTINGS.methods:
        results = [camanim.animate(loaded, it.image, method=method, layers=LAYERS,
                                   target=None if it.label is None else int(it.label)) for it in good]
        out[method] = {"all": camanim.ybroad(results, options=SETTINGS.road), "results": results}
    return out


def _without_images(data: dict) -> dict:
    data = dict(data)
    data["layers"] = [{k: v for k, v in lay.items() if k != "per_image"} for lay in data["layers"]]
    return data


def test_aggregates_equal_camanim_ybroad(finished, direct):
    groups = {g["method"]: g for g in finished["summary"]["aggregates"]["groups"]}
    for method, d in direct.items():
        got = dict(groups[method]["all"])
        assert got.pop("n_images") == 3
        got.pop("not_separable")
        expected = _without_images(d["all"].to_json_dict())
        assert got == expected
        assert got["best"] is not None and got["best"]["ci"] is not None


def test_correct_and_incorrect_splits_equal_camanim_ybroad_on_those_images(finished, direct):
    groups = {g["method"]: g for g in finished["summary"]["aggregates"]["groups"]}
    for method, d in direct.items():
        by_image = {r.image_info["source"]: r for r in d["results"]}
        for split, image in (("correct", "sample:cat"), ("incorrect", "sample:coffee")):
            got = dict(groups[method][split])
            got.pop("n_images"), got.pop("not_separable")
            assert got == _without_images(camanim.ybroad([by_image[image]], options=SETTINGS.road).to_json_dict())


def test_not_separable_runner_ups_have_a_difference_interval_reaching_zero(finished, direct):
    for g in finished["summary"]["aggregates"]["groups"]:
        across = direct[g["method"]]["all"]
        best = g["all"]["best"]["index"]
        listed = {c["index"] for c in g["all"]["not_separable"]}
        draws = across.draws
        for j in range(draws.shape[1]):
            if j == best or not across.defined[j] or across.per_image[0].layer_same_as[j] is not None:
                continue
            diff = draws[:, best] - draws[:, j]
            se = diff.std(ddof=1) / np.sqrt(len(diff))
            from scipy import stats

            low = diff.mean() - stats.t.ppf(0.975, len(diff) - 1) * se
            assert (j in listed) == (not low > 0)


def test_a_method_without_a_best_layer_is_listed_as_unranked_with_its_reason(finished, monkeypatch):
    """(review) A method whose every image was left out (constant CAMs) vanished from the methods' ranking:
    sweep.json lists it under ``unranked`` with the statement, and sweep.html shows it in the ranking table."""
    import torch
    from torch import nn

    import camanim.sweep.aggregate as agg
    from camanim.road import RoadOptions, ybroad, ybroad_across
    from camanim.sweep.page import render_page

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    constant = [ybroad(net, torch.randn(1, 3, 16, 16), torch.ones(2, 16, 16), 0, layer_names=["a", "b"],
                       percentiles=(50,), trials=2, noise=0.0) for _ in range(2)]
    real = agg.sweep_groups(finished["out"], SETTINGS.road)
    monkeypatch.setattr(agg, "sweep_groups", lambda out, road: {
        **real, ("resnet18", "zzcam"): {"all": ybroad_across(constant, ["x.png", "y.png"])}})
    data = agg.aggregates(finished["out"], RoadOptions())
    assert "zzcam" not in [r["method"] for r in data["ranking"]["resnet18"]]
    assert [r["method"] for r in data["unranked"]["resnet18"]] == ["zzcam"]
    reason = data["unranked"]["resnet18"][0]["reason"]
    assert reason.startswith("no image has a ROAD score on any layer (0 of 2 scored"), reason
    summary = {**finished["summary"], "aggregates": data}
    html = render_page(summary)
    assert ('<tr class="unranked"><td>resnet18</td><td>–</td><td>zzcam</td><td colspan=2>not ranked: no image has a '
            "ROAD score on any layer (0 of 2 scored") in html
