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
