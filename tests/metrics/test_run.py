"""Each metric beside ybROAD equals its reference (torchcam, pytorch-grad-cam) on the same CAM and image."""

from __future__ import annotations

import contextlib
from functools import partial

import numpy as np
import pytest
import torch
from conftest import small_net
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.metrics.cam_mult_image import (
    CamMultImageConfidenceChange,
    DropInConfidence,
    IncreaseInConfidence,
)
from pytorch_grad_cam.utils.image import scale_cam_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget
from torchcam.metrics import ClassificationMetric, DeletionInsertionMetric

import camanim
from camanim.compute.maps import layer_cams
from camanim.methods import MethodContext, get_method
from camanim.metrics import LayerCurve, MetricOptions, agreement, agreement_markdown, layer_metrics
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
    maps = [None if c is None else c[0] for c in layer_cams(tr, get_method("gradcam"), MethodContext())]
    names = [r.name for r in tr.records]
    flags = [r.non_spatial for r in tr.records]
    curves = layer_metrics(model, x, maps, int(tr.targets[0]), names, non_spatial=flags,
                           options=MetricOptions(steps=7, trials=3, batch_size=16))
    return model, x, maps, int(tr.targets[0]), flags, curves


def _scored(maps, flags):
    """The layers with a map to score, at more than one resolution (the references resize them)."""
    kept = [i for i, m in enumerate(maps) if not flags[i] and m is not None and float(m.max()) > float(m.min())]
    assert {tuple(maps[i].shape) for i in kept} == {(12, 12), (6, 6)}
    return kept


def test_deletion_insertion_equal_torchcam_per_layer(run):
    model, x, maps, target, flags, curves = run
    checked = 0
    kept = _scored(maps, flags)
    for i in range(len(maps)):
        if i not in kept:
            assert np.isnan(curves["deletion"].values[i])
            continue
        # torchcam gets the layer-resolution map: it scales it and resizes it to the input itself
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
    kept = _scored(maps, flags)
    for i in range(len(maps)):
        if i not in kept:
            assert np.isnan(curves["avgdrop"].values[i])
            continue
        ref = ClassificationMetric(FixedCam(model, maps[i]), partial(torch.softmax, dim=-1))
        ref.update(x, class_idx=target)
        s = ref.summary()
        assert curves["avgdrop"].values[i] == pytest.approx(s["avg_drop"], rel=1e-5, abs=1e-7)
        assert curves["increase"].values[i] == s["conf_increase"]
        # pytorch-grad-cam's CAM of one layer: min-max at its resolution, cv2.resize to the input, then min-max
        # again (BaseCAM.aggregate_multi_layers)
        cam = scale_cam_image(scale_cam_image(maps[i].numpy()[None], (12, 12)))
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
    three = layer_metrics(model, x, torch.stack([cam, cam.clone(), cam]), 0, ["a", "b", "c"],
                          options=MetricOptions(steps=4, trials=0))
    assert three["deletion"].extra["images"] == one["deletion"].extra["images"]
    np.testing.assert_allclose(three["insertion"].values, one["insertion"].values[0])


def test_agreement_best_layers_and_spearman():
    names = ["a", "b", "c", "d"]
    ins = LayerCurve("insertion", names, np.array([0.1, 0.4, 0.3, np.nan]))
    dele = LayerCurve("deletion", names, np.array([0.5, 0.1, 0.2, 0.3]))  # lower is better: same order
    drop = LayerCurve("avgdrop", names, np.array([0.1, 0.4, 0.3, 0.2]))  # lower is better: reversed order
    t = agreement({"insertion": ins, "deletion": dele, "avgdrop": drop})
    assert [b["layer"] for b in t["best"]] == ["b", "b", "a"]
    assert t["spearman"][0][1] == pytest.approx(1.0)
    assert t["spearman"][0][2] == pytest.approx(-1.0)
    assert t["layers"][0][1] == 3


def test_score_metrics_of_a_run_equal_the_references_on_its_layer_maps():
    """``score_metrics`` scores the run's layer-resolution maps as the references get them (resnet18, 64 px:
    maps of 16, 8, 4 and 2 pixels, where scaling after upsampling gives other values)."""
    from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange as Change

    layers = ["layer1.0.conv1", "layer2.1.conv2", "layer3.0.conv1", "layer4.1.conv2"]
    r = camanim.animate("resnet18", "sample:cat", weights="none", method="gradcam", score="softmax",
                        layers=",".join(layers), input_size=64)
    camanim.score_metrics(r, metrics="all", trials=0)
    model, x, t = r.model, r.input_tensor, r.target.index
    names = [rec.name for rec in r.layers]
    sizes = set()
    for name in layers:
        i = names.index(name)
        cam = torch.as_tensor(r.maps[i]).float()
        sizes.add(tuple(cam.shape))
        cm = ClassificationMetric(FixedCam(model, cam), partial(torch.softmax, dim=-1))
        cm.update(x, class_idx=t)
        di = DeletionInsertionMetric(FixedCam(model, cam), partial(torch.softmax, dim=-1))
        di.update(x, class_idx=t)
        assert r.metrics["avgdrop"].values[i] == pytest.approx(cm.summary()["avg_drop"], rel=1e-5, abs=1e-7)
        assert r.metrics["deletion"].values[i] == pytest.approx(di.summary()["deletion_auc"], rel=1e-6, abs=1e-9)
        assert r.metrics["insertion"].values[i] == pytest.approx(di.summary()["insertion_auc"], rel=1e-6, abs=1e-9)
        # pytorch-grad-cam as a user calls it: its own GradCAM of this layer alone, then its metric on that CAM
        with GradCAM(model, target_layers=[model.get_submodule(name)]) as pgc:
            theirs = pgc(x, targets=[ClassifierOutputSoftmaxTarget(t)])
        change = Change()(x, theirs, [ClassifierOutputSoftmaxTarget(t)], model)
        assert r.metrics["cammult"].values[i] == pytest.approx(float(change[0]), rel=1e-4, abs=1e-8)
    assert sizes == {(16, 16), (8, 8), (4, 4), (2, 2)}


def test_no_best_layer_when_every_layer_ties_and_the_count_when_some_do(tmp_path):
    import csv
    import json

    from camanim.metrics import write_agreement, write_metric

    names = ["a", "b", "c", "d"]
    flat = LayerCurve("increase", names, np.array([0.0, 0.0, np.nan, 0.0]))  # one image: 0 at every layer
    some = LayerCurve("avgdrop", names, np.array([0.3, 0.1, 0.1, 0.2]))  # lower is better: b and c tie
    one = LayerCurve("insertion", names, np.array([np.nan, 0.2, np.nan, np.nan]))  # a single layer is no tie
    assert flat.best() == {"index": None, "layer": None, "value": 0.0, "ties": 3, "scored": 3}
    assert some.best() == {"index": 1, "layer": "b", "value": 0.1, "ties": 2, "scored": 4}
    assert one.best() == {"index": 1, "layer": "b", "value": 0.2, "ties": 1, "scored": 1}
    t = agreement({"increase": flat, "avgdrop": some, "insertion": one})
    assert [b["layer"] for b in t["best"]] == [None, "b", "b"]
    md = agreement_markdown(t)
    assert "| increase | all layers tie | 0 |" in md
    assert "| avgdrop (lower better) | b (2 layers tie) | 0.1 |" in md
    assert "| insertion | b | 0.2 |" in md
    write_metric(tmp_path, flat)
    assert [r["best"] for r in csv.DictReader((tmp_path / "metric_increase.csv").open())] == ["False"] * 4
    assert json.loads((tmp_path / "metric_increase.json").read_text())["best"]["layer"] is None
    write_agreement(tmp_path, t)
    rows = list(csv.DictReader((tmp_path / "metrics_agreement.csv").open()))
    assert [(r["best_layer"], r["best_index"], r["ties"], r["scored"]) for r in rows] == [
        ("", "", "3", "3"), ("b", "1", "2", "4"), ("b", "1", "1", "1")]


def test_layers_sharing_one_cam_count_once_in_ties_and_spearman():
    names = ["a", "b", "b.relu", "c", "d", "e"]
    same = [None, None, 1, None, None, None]  # "b.relu" carries b's CAM
    ins = LayerCurve("insertion", names, np.array([0.1, 0.5, 0.5, 0.3, 0.2, 0.4]), same_as=same)
    dele = LayerCurve("deletion", names, np.array([0.5, 0.1, 0.1, 0.2, 0.4, 0.3]), same_as=same)
    assert ins.best() == {"index": 1, "layer": "b", "value": 0.5, "ties": 1, "scored": 5}
    t = agreement({"insertion": ins, "deletion": dele})
    assert t["layers"][0][1] == 5
    # over the five distinct CAMs (b once): ranks 1,5,3,2,4 against 1,5,4,2,3
    from scipy.stats import spearmanr

    keep = [0, 1, 3, 4, 5]
    assert t["spearman"][0][1] == pytest.approx(spearmanr(ins.values[keep], -dele.values[keep]).statistic)
    assert t["spearman"][0][1] == pytest.approx(0.9)


def test_score_metrics_keeps_same_as_so_the_agreement_counts_each_cam_once():
    r = camanim.animate(small_net(), torch.randn(1, 3, 12, 12, generator=torch.Generator().manual_seed(3)),
                        weights="none")
    camanim.score_metrics(r, metrics="deletion,insertion", trials=0)
    same = [rec.same_as for rec in r.layers]
    assert any(s is not None for s in same)
    assert r.metrics["deletion"].same_as == same
    both = np.isfinite(r.metrics["deletion"].values) & np.array([s is None for s in same])
    assert r.metrics_table()["layers"][0][1] == int(both.sum())
