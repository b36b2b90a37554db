"""ybROAD across images when some images' CAMs give no ROAD score (constant maps)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from camanim.road import ybroad, ybroad_across

H = W = 32
PCTS = (30, 70)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 5),
    ).eval()


def _cams(seed: int, constant: tuple[int, ...] = ()) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    cams = torch.stack([torch.randperm(H * W, generator=g).float().reshape(H, W) for _ in range(3)])
    for i in constant:
        cams[i] = 1.0
    return cams


def _results(constant_of: dict[int, tuple[int, ...]]) -> list:
    net = _net()
    out = []
    for k in range(4):
        x = torch.randn(1, 3, H, W, generator=torch.Generator().manual_seed(10 + k))
        out.append(ybroad(net, x, _cams(k, constant_of.get(k, ())), 1, layer_names=["a", "b", "c"],
                          percentiles=PCTS, trials=2, noise=0.0))
    return out


def test_an_image_without_any_defined_layer_is_left_out_and_named() -> None:
    results = _results({0: (0, 1, 2)})  # image 0: every CAM constant (a misclassified image's Grad-CAM)
    names = ["zero.png", "one.png", "two.png", "three.png"]
    across = ybroad_across(results, names)
    alone = ybroad_across(results[1:], names[1:])  # what the three scored images give on their own
    np.testing.assert_array_equal(across.mean, alone.mean)
    assert across.defined.tolist() == [True, True, True]
    got, want = across.to_json_dict(), alone.to_json_dict()
    assert got["best"] == want["best"] and got["best"] is not None
    assert [layer["ybroad_ci"] for layer in got["layers"]] == [layer["ybroad_ci"] for layer in want["layers"]]
    assert got["baseline"] == want["baseline"]
    assert got["images_left_out"] == ["zero.png"]
    assert [layer["n_images"] for layer in got["layers"]] == [3, 3, 3]
    assert any("zero.png" in w and "left out" in w for w in got["warnings"]), got["warnings"]
    assert "over 3 images" in got["statement"], got["statement"]


def test_a_layer_undefined_on_some_images_has_its_own_count_and_is_not_a_candidate() -> None:
    results = _results({1: (2,)})  # layer c constant on image 1 only
    across = ybroad_across(results)
    data = across.to_json_dict()
    c = data["layers"][2]
    assert c["defined"] is False and c["n_images"] == 3
    draws = np.array([r.curve_mean.numpy()[2] for r in results])
    kept = draws[[0, 2, 3]]
    assert math.isclose(c["ybroad"], float(kept.mean()), rel_tol=1e-12)
    assert c["ybroad_ci"] is not None
    assert all(cand["name"] != "c" for cand in data["candidates"])
    assert [layer["n_images"] for layer in data["layers"][:2]] == [4, 4]
    assert any("1 layer" in w and "fewer images" in w for w in data["warnings"]), data["warnings"]


def test_every_image_constant_says_so() -> None:
    results = _results({k: (0, 1, 2) for k in range(4)})
    data = ybroad_across(results).to_json_dict()
    assert data["best"] is None and data["images_left_out"] == ["image 0", "image 1", "image 2", "image 3"]
    assert data["statement"].startswith("no image has a ROAD score on any layer (0 of 4 scored"), data["statement"]
    assert data["candidates"] == [] and all(layer["above_baseline"] is None for layer in data["layers"])


def test_a_single_image_left_out_is_not_called_one_image_without_an_interval() -> None:
    """(review) With its only image left out, the verdict warned "one image: no interval can be given" about
    zero scored images: the warnings and the statement say that none was scored."""
    data = ybroad_across(_results({0: (0, 1, 2)})[:1], ["zero.png"]).to_json_dict()
    assert not any("one image" in w for w in data["warnings"]), data["warnings"]
    assert any("zero.png" in w and "left out" in w for w in data["warnings"]), data["warnings"]
    assert "0 of 1 scored" in data["statement"] and data["best"] is None
