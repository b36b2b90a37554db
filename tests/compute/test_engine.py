"""The engine's layer maps: what ``cams`` is upsampled from, and the path that leaves the upsampling out."""

from __future__ import annotations

import pytest
import torch

import camanim
from camanim.compute import compute_cams, upsample


def test_layer_maps_are_what_the_cams_are_upsampled_from_and_upsampled_false_skips_it():
    torch.manual_seed(0)
    from conftest import small_net

    model, x = small_net(), torch.rand(2, 3, 20, 28)
    methods = [camanim.get_method("gradcam"), camanim.get_method("layercam")]
    full = compute_cams(model, x, methods, camanim.CamOptions(layers="all"))
    low = compute_cams(model, x, methods, camanim.CamOptions(layers="all"), upsampled=False)
    assert low.cams == {} and set(low.maps) == set(full.maps) == {"gradcam", "layercam"}
    for name in ("gradcam", "layercam"):
        shapes = {tuple(m.shape) for m in low.maps[name] if m is not None}
        assert (2, 20, 28) in shapes and (2, 10, 14) in shapes  # the stride-2 layers stay small
        for a, b in zip(low.maps[name], full.maps[name], strict=True):
            assert (a is None) == (b is None) and (a is None or torch.equal(a, b))
        assert torch.equal(upsample(low.maps[name], (20, 28), batch=2), full.cams[name])
        assert full.cams[name].shape == (len(full.records), 2, 20, 28) and full.cams[name].amax() > 0


def test_aug_smooth_has_no_layer_maps_and_refuses_to_skip_the_upsampling():
    from conftest import small_net

    model, x = small_net(), torch.rand(1, 3, 16, 16)
    comp = compute_cams(model, x, [camanim.get_method("gradcam")], camanim.CamOptions(layers="all", aug_smooth=True))
    assert comp.maps == {} and comp.cams["gradcam"].shape[-2:] == (16, 16)
    with pytest.raises(ValueError, match="aug_smooth"):
        compute_cams(model, x, [camanim.get_method("gradcam")], camanim.CamOptions(aug_smooth=True), upsampled=False)


@pytest.mark.parametrize("above", [False, True], ids=["below-start", "above-start"])
def test_the_backward_gives_memory_back_only_while_resident_memory_is_above_its_start(monkeypatch, above):
    # Pages given back are faulted in again by the next allocations: during the backward only while
    # the process holds more than when the backward started; what was skipped goes back once after it.
    from conftest import small_net

    import camanim.compute.engine as engine
    from camanim import memory

    model, x = small_net(), torch.rand(1, 3, 20, 28)
    start = 10**9
    rss = iter([start] + [start + (4096 if above else -4096)] * 1000)
    calls: list[int] = []
    monkeypatch.setattr(memory, "resident", lambda: next(rss))
    monkeypatch.setattr(memory, "give_back_freed", lambda: calls.append(1) or True)
    # a check after every layer
    monkeypatch.setattr(engine, "Freed", lambda above_start=False: memory.Freed(1, above_start=above_start))
    comp = compute_cams(model, x, [camanim.get_method("gradcam")], camanim.CamOptions(layers="all"), upsampled=False)
    layers = sum(m is not None for m in comp.maps["gradcam"])
    if above:
        assert len(calls) >= layers - 1 > 0  # every check found the process above its start
    else:
        assert calls == [1]  # none during the backward, one after it
