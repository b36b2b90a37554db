"""Each metric beside ybROAD equals its reference (torchcam, pytorch-grad-cam) on the same CAM and image."""

from __future__ import annotations

import contextlib
from functools import partial

import numpy as np
import pytest
import torch
from conftest import small_net
from pytorch_grad_cam.metrics.cam_mult_image import (
    CamMultImageConfidenceChange,
    DropInConfidence,
    IncreaseInConfidence,
)
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget
from torchcam.metrics import ClassificationMetric, DeletionInsertionMetric

from camanim.compute.maps import layer_cams, upsample
from camanim.methods import MethodContext, get_method
from camanim.metrics import MetricOptions, agreement, layer_metrics
from camanim.trace import run_trace


class FixedCam:
    """A torchcam CAM extractor that returns a given map (the protocol torchcam's metrics use)."""

    def __init__(self, model, cam):
        self.model, self.cam = model, cam

    def __call__(self, class_idx, scores=None, normalized=True):
        c = self.cam[None].clone()
        if normalized:
            c = c - c.amin(dim=(1, 2), keepdim=True)
            c = c / (c.amax(dim=(1, 2), keepdim=True) + 1e-8)
        return [c]

    def fuse_cams(self, cams):
        return cams[0]

    def _hooks_off(self):
        return contextlib.nullcontext()


@pytest.fixture(scope="module")
def run():
    model = small_net()
    x = torch.randn(1, 3, 12, 12, generator=torch.Generator().manual_seed(3))
    tr = run_trace(model, x, "all")
    maps = upsample(layer_cams(tr, get_method("gradcam"), MethodContext()), (12, 12))[:, 0]
    names = [r.name for r in tr.records]
    flags = [r.non_spatial for r in tr.records]
    curves = layer_metrics(model, x, maps, int(tr.targets[0]), names, non_spatial=flags,
                           options=MetricOptions(steps=7, trials=3, batch_size=16))
    return model, x, maps, int(tr.targets[0]), flags, curves


def test_deletion_insertion_equal_torchcam_per_layer(run):
    model, x, maps, target, flags, curves = run
    checked = 0
    for i in range(maps.shape[0]):
        if flags[i] or float(maps[i].max()) == float(maps[i].min()):
            assert np.isnan(curves["deletion"].values[i])
            continue
        ref = DeletionInsertionMetric(FixedCam(model, maps[i]), partial(torch.softmax, dim=-1), steps=7)
        ref.update(x, class_idx=target)
        s = ref.summary()
        assert curves["deletion"].values[i] == pytest.approx(s["deletion_auc"], rel=1e-5, abs=1e-7)
        assert curves["insertion"].values[i] == pytest.approx(s["insertion_auc"], rel=1e-5, abs=1e-7)
        checked += 1
    assert checked >= 6
    assert curves["deletion"].band is not None and len(curves["deletion"].baseline) == 3


def test_average_drop_and_increase_equal_torchcam_and_cammult_equals_pytorch_grad_cam(run):
    model, x, maps, target, flags, curves = run
    tgt = [ClassifierOutputSoftmaxTarget(target)]
    checked = 0
    for i in range(maps.shape[0]):
        if np.isnan(curves["avgdrop"].values[i]):
            continue
        ref = ClassificationMetric(FixedCam(model, maps[i]), partial(torch.softmax, dim=-1))
        ref.update(x, class_idx=target)
        s = ref.summary()
        assert curves["avgdrop"].values[i] == pytest.approx(s["avg_drop"], rel=1e-5, abs=1e-7)
        assert curves["increase"].values[i] == s["conf_increase"]
        cam = maps[i] - maps[i].min()
        cam = (cam / (cam.max() + 1e-8)).numpy()[None]
        change = CamMultImageConfidenceChange()(x, cam, tgt, model)[0]
        assert curves["cammult"].values[i] == pytest.approx(float(change), rel=1e-5, abs=1e-7)
        assert max(0.0, -curves["cammult"].values[i]) == pytest.approx(float(DropInConfidence()(x, cam, tgt, model)[0]),
                                                                        rel=1e-5, abs=1e-7)
        assert curves["increase"].values[i] == float(IncreaseInConfidence()(x, cam, tgt, model)[0])
        checked += 1
    assert checked >= 6


def test_layers_with_the_same_map_share_forwards():
    model = small_net()
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    cam = torch.rand(8, 8, generator=torch.Generator().manual_seed(1))
    one = layer_metrics(model, x, cam[None], 0, ["a"], options=MetricOptions(steps=4, trials=0))
    three = layer_metrics(model, x, torch.stack([cam, cam * 2, cam]), 0, ["a", "b", "c"],
                          options=MetricOptions(steps=4, trials=0))
    assert three["deletion"].extra["images"] == one["deletion"].extra["images"]
    np.testing.assert_allclose(three["insertion"].values, one["insertion"].values[0])


def test_agreement_best_layers_and_spearman():
    from camanim.metrics import LayerCurve

    names = ["a", "b", "c", "d"]
    ins = LayerCurve("insertion", names, np.array([0.1, 0.4, 0.3, np.nan]))
    dele = LayerCurve("deletion", names, np.array([0.5, 0.1, 0.2, 0.3]))  # lower is better: same order
    drop = LayerCurve("avgdrop", names, np.array([0.1, 0.4, 0.3, 0.2]))  # lower is better: reversed order
    t = agreement({"insertion": ins, "deletion": dele, "avgdrop": drop})
    assert [b["layer"] for b in t["best"]] == ["b", "b", "a"]
    assert t["spearman"][0][1] == pytest.approx(1.0)
    assert t["spearman"][0][2] == pytest.approx(-1.0)
    assert t["layers"][0][1] == 3
