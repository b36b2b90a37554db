"""CamOptions: built once, checked on construction, passed down whole (the engine reads nothing else)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import camanim
from camanim import CamOptions, InputError
from camanim.compute import compute_cams
from camanim.methods import get_method


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"batch_size": 0}, "--batch-size 0 must be at least 1"),
    ({"score": "probability"}, "score 'probability' is unknown"),
    ({"layouts": {"encoder": 3}}, "must map a layer name to a layout name"),
])
def test_bad_options_are_refused_on_construction(kwargs, message):
    with pytest.raises(InputError, match=message):
        CamOptions(**kwargs)


def test_options_are_frozen_and_settle_the_batch_size_per_device():
    opts = CamOptions(layers=["conv1", "block"])
    assert opts.layers == ("conv1", "block")
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.seed = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        CamOptions(layouts={"a": "NCHW"}).layouts["b"] = "NHWC"  # type: ignore[index]
    assert hash(CamOptions(target=[1, 2])) == hash(CamOptions(target=(1, 2)))
    assert opts.for_device("cpu").batch_size == 8 and opts.for_device("cuda").batch_size == 64
    assert CamOptions(batch_size=5).for_device("cuda").batch_size == 5


def test_animate_with_options_equals_animate_with_the_same_keywords(tiny, tiny_input):
    by_keywords = camanim.animate(tiny, tiny_input, layers="conv1,block", score="softmax", seed=3)
    by_options = camanim.animate(tiny, tiny_input, options=CamOptions(layers="conv1,block", score="softmax", seed=3))
    assert [r.name for r in by_options.layers] == [r.name for r in by_keywords.layers] == ["conv1", "block"]
    torch.testing.assert_close(by_options.cams, by_keywords.cams, rtol=0, atol=0)
    assert by_options.options == by_keywords.options


def test_engine_reads_layers_and_layouts_from_the_options(tiny, tiny_input):
    comp = compute_cams(tiny, tiny_input, [get_method("gradcam")],
                        CamOptions(layers="conv1,block", layouts={"block": "non_spatial"}))
    assert [(r.name, r.layout) for r in comp.records] == [("conv1", "NCHW"), ("block", "non_spatial")]
    assert comp.cams["gradcam"].shape == (2, 1, 16, 16)
    assert float(comp.cams["gradcam"][1].abs().sum()) == 0.0  # no map for a non-spatial layer


def test_options_and_a_differing_keyword_are_refused_not_mixed(tiny, tiny_input, tmp_path):
    with pytest.raises(TypeError, match="either as options= or as keywords, not both: layers"):
        camanim.animate(tiny, tiny_input, layers="conv1", options=CamOptions(layers="block"))
    with pytest.raises(TypeError, match="options must be a CamOptions, not str"):
        camanim.animate(tiny, tiny_input, options="layers=conv1")  # type: ignore[arg-type]
    result = camanim.animate(tiny, tiny_input, options=CamOptions(layers="conv1"), seed=0)  # a default: fine
    assert [r.name for r in result.layers] == ["conv1"]
    with pytest.raises(TypeError, match="not both: fps"):
        result.save(tmp_path / "out", fps=3, options=camanim.SaveOptions(video=False))
    with pytest.raises(TypeError, match="not both: trials"):
        camanim.ybroad(result, trials=2, options=camanim.RoadOptions())
    assert not (tmp_path / "out").exists()
