"""How a model's output becomes a probability: softmax for one label per image, sigmoid for a one-logit
model and for multi-label models (``score="sigmoid"``); what the result, the manifest, the report
and ybROAD say and use."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import camanim
from camanim.cli import main


def _net(outputs: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, outputs)).eval()


class TwoColumns(nn.Module):
    """A one-logit model's output z as two logits (-z, z): the same classes, read by a softmax model."""

    def __init__(self, net: nn.Module, halves: bool = False) -> None:
        super().__init__()
        self.net, self.halves = net, halves

    def forward(self, x):
        z = self.net(x)
        return torch.cat([-z / 2, z / 2], 1) if self.halves else torch.cat([-z, z], 1)


@pytest.fixture
def x() -> torch.Tensor:
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    x[:, :, 8:16, 8:16] = 1.0
    return x


def _gradcam_by_hand(model: nn.Module, x: torch.Tensor, score) -> torch.Tensor:
    """Grad-CAM of the second conv (index 2 of the Sequential) for ``score(logits)``, at its own size."""
    acts = {}
    h = model[2].register_forward_hook(lambda m, i, o: acts.setdefault("a", o))
    s = score(model(x))
    h.remove()
    (g,) = torch.autograd.grad(s, acts["a"])
    return torch.relu((g.mean(dim=(2, 3), keepdim=True) * acts["a"]).sum(1))[0].detach()


def test_one_logit_model_has_two_classes_and_the_sigmoid_probability(x):
    model = _net(1)
    with torch.no_grad():
        z = float(model(x)[0, 0])
    assert z != 0
    predicted = int(z > 0)
    r = camanim.animate(model, x, layers="2")
    assert r.target.index == predicted
    assert r.target.score == pytest.approx(torch.sigmoid(torch.tensor(z if predicted else -z)).item(), abs=1e-6)
    assert r.options["probability"] == "sigmoid" and r.options["score"] == "logit"
    for target, sign in ((1, 1.0), (0, -1.0)):
        for score in ("logit", "softmax", "sigmoid"):
            got = camanim.animate(model, x, layers="2", target=target, score=score)
            assert got.target.index == target
            p = torch.sigmoid(torch.tensor(sign * z)).item()
            assert got.target.score == pytest.approx(p, abs=1e-6)
            fn = {"logit": lambda o, s=sign: s * o[0, 0],
                  "softmax": lambda o, s=sign: torch.sigmoid(s * o[0, 0]),
                  "sigmoid": lambda o, s=sign: torch.sigmoid(s * o[0, 0])}[score]
            want = _gradcam_by_hand(model, x, fn)
            small = torch.nn.functional.interpolate(got.cams[None], size=want.shape, mode="bilinear",
                                                    align_corners=False)[0, 0]
            assert float(got.cams.amax()) > 0, (target, score)  # not the all-zero softmax-of-one-logit CAM
            # layer '2' is at input size already: the CAM is the hand-made one
            torch.testing.assert_close(small, want, rtol=1e-4, atol=1e-6)
    # the same as a softmax model with the two logits (-z/2, z/2): softmax of those is the sigmoid of z
    ref = camanim.animate(TwoColumns(model, halves=True), x, layers="net.2", score="softmax", target=1)
    got = camanim.animate(model, x, layers="2", score="softmax", target=1)
    torch.testing.assert_close(got.cams, ref.cams, rtol=1e-4, atol=1e-7)
    assert got.target.score == pytest.approx(ref.target.score, abs=1e-6)


def test_one_logit_model_ybroad_is_scored_on_the_sigmoid(x):
    model = _net(1)
    r = camanim.animate(model, x, target=1)
    yb = camanim.ybroad(r, percentiles=(20, 60))
    defined = yb.defined.bool()
    assert bool(defined.any()) and not bool((yb.combined[:, defined] == 0).all())
    # ROAD of the same CAMs through (-z/2, z/2) logits and a softmax: the same probability, the same scores
    ref = camanim.road.ybroad(TwoColumns(model, halves=True), r.input_tensor, r.cams, 1, percentiles=(20, 60),
                              non_spatial=[rec.non_spatial for rec in r.layers])
    torch.testing.assert_close(yb.combined, ref.combined, rtol=1e-6, atol=1e-9, equal_nan=True)
    assert yb.ybroad_max is not None and yb.ybroad_max.value == pytest.approx(ref.ybroad_max.value)


def test_multi_label_model_gets_the_sigmoid_with_score_sigmoid(x):
    model = _net(5)
    with torch.no_grad():
        logits = model(x)[0]
    r = camanim.animate(model, x, layers="2", target=3, score="sigmoid")
    assert r.options["score"] == "sigmoid" and r.options["probability"] == "sigmoid"
    assert r.target.score == pytest.approx(torch.sigmoid(logits[3]).item(), abs=1e-6)
    want = _gradcam_by_hand(model, x, lambda o: torch.sigmoid(o[0, 3]))
    torch.testing.assert_close(r.cams[0], torch.nn.functional.interpolate(
        want[None, None], size=r.cams.shape[-2:], mode="bilinear", align_corners=False)[0, 0], rtol=1e-4, atol=1e-7)
    # Grad-CAM is linear in the score's gradient: sigmoid'(z) = p (1 - p) times the logit's CAM
    logit_cams = camanim.animate(model, x, layers="2", target=3).cams
    p = torch.sigmoid(logits[3]).item()
    torch.testing.assert_close(r.cams, logit_cams * (p * (1 - p)), rtol=1e-4, atol=1e-8)
    # ROAD's probability is the sigmoid too
    yb = camanim.ybroad(camanim.animate(model, x, target=3, score="sigmoid"), percentiles=(40,))
    assert yb.combined.numel() and torch.isfinite(yb.combined[:, yb.defined.bool()]).all()


def test_ordinary_softmax_model_keeps_the_softmax(x, tmp_path):
    model = _net(5)
    with torch.no_grad():
        p = model(x).softmax(1)[0]
    r = camanim.animate(model, x, layers="2", score="softmax")
    assert r.options["probability"] == "softmax" and r.target.index == int(p.argmax())
    assert r.target.score == pytest.approx(float(p.max()), abs=1e-6)
    want = _gradcam_by_hand(model, x, lambda o: o.softmax(1)[0, int(p.argmax())])
    assert torch.allclose(r.cams[0], torch.nn.functional.interpolate(
        want[None, None], size=r.cams.shape[-2:], mode="bilinear", align_corners=False)[0, 0], rtol=1e-4, atol=1e-7)
    assert camanim.animate(model, x, layers="2").options["probability"] == "softmax"  # the logit score too


def test_manifest_and_report_say_which_probability(x, tmp_path):
    model = _net(1)
    torch.save(model, tmp_path / "binary.pt")
    torch.save(x[0], tmp_path / "x.pt")
    r = camanim.animate(model, x, layers="2")
    r.save(tmp_path / "one", video=False)
    manifest = json.loads((tmp_path / "one" / "manifest.json").read_text())
    assert manifest["options"]["probability"] == "sigmoid"
    assert manifest["target"]["score"] == pytest.approx(r.target.score, abs=1e-6)
    assert "· sigmoid" in (tmp_path / "one" / "report.html").read_text()
    r5 = camanim.animate(_net(5), x, layers="2", score="sigmoid")
    r5.save(tmp_path / "five", video=False)
    assert json.loads((tmp_path / "five" / "manifest.json").read_text())["options"]["probability"] == "sigmoid"


def test_cli_score_sigmoid_and_road_of_a_one_logit_model(tmp_path, capsys):
    model = _net(1)
    torch.save(model, tmp_path / "binary.pt")
    Image.fromarray((np.random.default_rng(0).random((40, 40, 3)) * 255).astype(np.uint8)).save(tmp_path / "x.png")
    out = tmp_path / "out"
    assert main(["run", str(tmp_path / "x.png"), "--model", str(tmp_path / "binary.pt"), "--trust-checkpoint",
                 "--input-size", "32", "--score", "sigmoid", "--road", "--road-percentiles", "50",
                 "--no-video", "--quiet", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["options"]["score"] == "sigmoid" and manifest["options"]["probability"] == "sigmoid"
    assert f"p={manifest['target']['score']:.3g} (sigmoid)" in stdout
    saved = np.load(out / "cams.npz")
    with torch.no_grad():
        z = float(model(torch.from_numpy(saved["input"]))[0, 0])
    assert manifest["target"]["index"] == int(z > 0)
    assert manifest["target"]["score"] == pytest.approx(torch.sigmoid(torch.tensor(abs(z))).item(), abs=1e-6)
    assert manifest["ybroad"]["max"]["value"] != 0
    # `camanim road` later reads the probability from the manifest: the same scores
    first = json.loads((out / "ybroad.json").read_text())
    assert main(["road", str(out), "--road-percentiles", "50", "--trust-checkpoint", "--quiet"]) == 0
    again = json.loads((out / "ybroad.json").read_text())
    assert [layer["combined"] for layer in again["layers"]] == [layer["combined"] for layer in first["layers"]]
    assert any(layer["combined"][0] not in (None, 0.0) for layer in first["layers"])


def test_layers_distinct_keeps_one_layer_per_distinct_cam_and_combines_with_a_pattern() -> None:
    import torchvision

    from camanim.trace import split_distinct

    assert split_distinct("distinct") == ("all", True)
    assert split_distinct("distinct,layer4*") == ("layer4*", True)
    assert split_distinct("type:Conv2d,BatchNorm2d,distinct") == ("type:Conv2d,BatchNorm2d", True)
    assert split_distinct(["layer1", "distinct"]) == (["layer1"], True)
    assert split_distinct("layer4*") == ("layer4*", False)

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.randn(1, 3, 64, 64)
    every = camanim.animate(model, x, layers="layer4*")
    distinct = camanim.animate(model, x, layers="distinct,layer4*")
    firsts = [i for i, r in enumerate(every.layers) if r.same_as is None]
    # containers handing on a child's tensor (layer4.0, layer4.1, layer4, downsample) are left out
    assert len(firsts) < len(every.layers)
    assert [r.name for r in distinct.layers] == [every.layers[i].name for i in firsts]
    assert [r.index for r in distinct.layers] == list(range(len(firsts)))
    assert all(r.same_as is None for r in distinct.layers)
    torch.testing.assert_close(distinct.cams, every.cams[firsts])


class _Tied(nn.Module):
    """Logits with exact ties at the top (classes 3 and 700 to 999 equal, the rest lower), joined to the
    input by a zero term (so the pass runs; its gradient is zero): the near-uniform output of a random wide
    classifier, whose softmax values tie in float32."""

    def __init__(self) -> None:
        super().__init__()
        self.net = _net(1)

    def forward(self, x):
        z = torch.zeros(x.shape[0], 1000)
        z[:, 700:] = 1.0
        bump = self.net(x)[:, 0] * 0
        z[:, 3] = 1.0
        return z + torch.nn.functional.one_hot(torch.tensor([3]), 1000) * bump[:, None]


def test_the_prediction_shown_is_the_class_explained_among_tied_scores(x):
    """(review) A random efficientnet_b7 printed "predicted class: 3" beside "target class: 755", both p=0.001:
    the target is the logits' argmax (first among equals), the top-5 came from topk of the softmax values,
    whose pick among ties is another class. The top-5 is now ranked by the logits, first index first."""
    with pytest.warns(RuntimeWarning, match="no usable gradient"):
        result = camanim.animate(_Tied(), x, layers="net.2")
    assert result.target.index == 3
    assert result.top[0].index == 3
    assert [t.index for t in result.top[1:]] == [700, 701, 702, 703]
