"""Targets on the model's output: a user's callable, ``seg:CLASS``, ``similar:IMAGE``.

Each kind's Grad-CAM of one layer equals pytorch-grad-cam's with its matching target
(``SemanticSegmentationTarget``; a plain callable; the tutorials' ``SimilarityToConceptTarget``,
written here), on small seeded models with random weights; every method runs with such a target;
ROAD scores the target's change; errors are one line naming what the model returned.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from conftest import spy_raw_maps
from PIL import Image
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget
from torch import nn

import camanim
from camanim import BoxTarget, InputError, OutputTarget, SegmentationTarget, SimilarityTarget
from camanim.compute.maps import upsample
from camanim.compute.targets import classifier_head
from camanim.draw import OUTLINE_COLOUR
from camanim.methods import list_methods
from camanim.road import ybroad as road_ybroad
from camanim.trace import TargetHead

SIZE = 32


class TinySeg(nn.Module):
    """A segmentation net returning torchvision's ``{"out": (B, K, H, W)}``."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(8, classes, 1)

    def forward(self, x):
        return {"out": self.head(self.body(x))}


class OutOnly(nn.Module):
    """pytorch-grad-cam reads a tensor output: the tutorials' ``SegmentationModelOutputWrapper``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)["out"]


class TinyEmbed(nn.Module):
    """A backbone without a classifier: a (B, 8) embedding."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, stride=2, padding=1),
                                  nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        return self.pool(self.body(x)).flatten(1)


class SimilarityToConceptTarget:
    """pytorch-grad-cam's tutorial target (Pixel Attribution for embeddings), as written there."""

    def __init__(self, features):
        self.features = features

    def __call__(self, model_output):
        cos = torch.nn.CosineSimilarity(dim=0)
        return cos(model_output, self.features)


@pytest.fixture(scope="module")
def seg() -> TinySeg:
    torch.manual_seed(0)
    return TinySeg().eval()


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


def reference(model: nn.Module, layer: nn.Module, x: torch.Tensor, target) -> torch.Tensor:
    """pytorch-grad-cam's Grad-CAM of ``layer`` alone, before its min-max scaling, after its ReLU, upsampled
    as camanim upsamples a raw map."""
    cam = GradCAM(model=model, target_layers=[layer])
    captured = spy_raw_maps(cam)
    with cam:
        cam(input_tensor=x, targets=[target])
    raw = torch.from_numpy(captured[0])  # (1, h, w)
    return upsample([raw], (x.shape[-2], x.shape[-1]), batch=1)[0, 0]


def test_segmentation_target_equals_pytorch_grad_cams(seg, x):
    """seg:CLASS (the predicted region) and seg:CLASS,mask=PATH: Grad-CAM of one layer equals
    pytorch-grad-cam's with SemanticSegmentationTarget(CLASS, mask), layer by layer."""
    predicted = seg(x)["out"].argmax(1)[0]
    category = int(predicted.flatten().mode().values)
    mask = (predicted == category).numpy().astype(np.float32)
    assert 0 < mask.sum() < mask.size
    for name, layer in (("body.2", seg.body[2]), ("head", seg.head)):
        ours = camanim.animate(seg, x, target=f"seg:{category}", layers=[name])
        ref = reference(OutOnly(seg), layer, x, SemanticSegmentationTarget(category, mask))
        assert ours.target.kind == "value" and ours.target.label == f"seg:{category}"
        assert ref.abs().max() > 0
        torch.testing.assert_close(ours.cams[0], ref, rtol=1e-4, atol=1e-6)
        np.testing.assert_array_equal(ours.target.region, mask > 0)
        with torch.no_grad():  # the explained value is the class's scores summed over the mask
            expected = float((seg(x)["out"][0, category] * torch.from_numpy(mask)).sum())
        assert ours.target.score == pytest.approx(expected, rel=1e-5)


def test_segmentation_mask_file_equals_pytorch_grad_cams(seg, x, tmp_path):
    """A mask file (non-zero = in the region) gives the same map as SemanticSegmentationTarget with that mask."""
    mask = np.zeros((SIZE, SIZE), np.float32)
    mask[4:14, 10:28] = 1
    Image.fromarray((mask * 255).astype(np.uint8)).save(tmp_path / "mask.png")
    ours = camanim.animate(seg, x, target=f"seg:1,mask={tmp_path / 'mask.png'}", layers=["body.2"])
    ref = reference(OutOnly(seg), seg.body[2], x, SemanticSegmentationTarget(1, mask))
    torch.testing.assert_close(ours.cams[0], ref, rtol=1e-4, atol=1e-6)
    assert int(ours.target.region.sum()) == 10 * 18


def test_a_callable_target_equals_pytorch_grad_cams(seg, x):
    """Any scalar a user defines (here: the mean of class 2 over the image's top half), named by its label."""

    def top_half(out):
        return out["out"][:, 2, :SIZE // 2].mean(dim=(1, 2))

    ours = camanim.animate(seg, x, target=OutputTarget(top_half, "class 2, top half"), layers=["body.0"])
    ref = reference(OutOnly(seg), seg.body[0], x, lambda o: o[2, :SIZE // 2].mean())
    torch.testing.assert_close(ours.cams[0], ref, rtol=1e-4, atol=1e-6)
    assert ours.target.label == "class 2, top half"
    plain = camanim.animate(seg, x, target=top_half, layers=["body.0"])  # a bare callable: named by its repr
    assert plain.target.label == repr(top_half)
    torch.testing.assert_close(plain.cams, ours.cams)


def test_similarity_target_equals_pytorch_grad_cams(x):
    """similar:IMAGE: cosine similarity to the reference's embedding, as the tutorials' SimilarityToConceptTarget."""
    torch.manual_seed(2)
    model = TinyEmbed().eval()
    ref_x = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        concept = model(ref_x)[0]
    ours = camanim.animate(model, x, target=camanim.SimilarityTarget(ref_x), layers=["body.2"])
    ref = reference(model, model.body[2], x, SimilarityToConceptTarget(concept))
    assert ref.abs().max() > 0
    torch.testing.assert_close(ours.cams[0], ref, rtol=1e-4, atol=1e-6)
    with torch.no_grad():
        expected = float(torch.cosine_similarity(model(x)[0], concept, dim=0))
    assert ours.target.score == pytest.approx(expected, rel=1e-5)
    assert ours.target.label == "similar:reference"


def test_each_image_of_a_batch_explains_its_own_target(seg):
    """Two images in one pass, each with its own mask: each equals its run alone."""
    xs = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(4))
    masks = [np.zeros((SIZE, SIZE), np.uint8), np.zeros((SIZE, SIZE), np.uint8)]
    masks[0][:10] = 1
    masks[1][20:, 5:] = 1
    both = camanim.animate(seg, xs, target=[camanim.SegmentationTarget(3, m) for m in masks], layers="body.*")
    for k in range(2):
        alone = camanim.animate(seg, xs[k:k + 1], target=camanim.SegmentationTarget(3, masks[k]), layers="body.*")
        torch.testing.assert_close(both[k].cams, alone.cams, rtol=1e-5, atol=1e-7)
        assert both[k].target.score == pytest.approx(alone.target.score, rel=1e-6)
    assert both[0].target.score != pytest.approx(both[1].target.score)


def test_every_method_explains_a_target_on_the_output(seg, x):
    """Every registered method runs with a target on the output (FinerCAM, which contrasts classes, is
    refused in one line); maps are finite and not all zero for gradient-free and gradient methods alike.
    CAM and LeGrad apply to none of a segmentation net's layers (no linear classifier, no ViT block): refused
    in one line too (review: not a run of empty maps)."""
    names = [m for m in list_methods() if m not in ("finercam", "cam", "legrad")]
    for method, name in (("cam", "CAM"), ("legrad", "LeGrad")):
        with pytest.raises(InputError, match=rf"^{name} applies to none of the 2 chosen layers") as err:
            camanim.animate(seg, x, target=lambda o: o["out"][:, 1].sum(dim=(1, 2)), method=method,
                            layers=["body.2", "head"])
        assert "\n" not in str(err.value)
    res = camanim.animate(seg, x, target=lambda o: o["out"][:, 1].sum(dim=(1, 2)), method=names,
                          layers=["body.2", "head"])
    assert [r.method for r in res] == names
    for r in res:
        assert torch.isfinite(r.cams).all(), r.method
        assert r.target.kind == "value"
    assert sum(bool(r.cams.abs().max() > 0) for r in res) >= len(names) - 2  # randomcam/eigen may zero a layer
    with pytest.raises(InputError, match="finercam contrasts the target class"):
        camanim.animate(seg, x, target=lambda o: o["out"][:, 1].sum(dim=(1, 2)), method="finercam")


def test_perturbation_methods_score_the_target_not_a_class(seg, x):
    """ScoreCAM's channel weights are the target's values on the masked inputs: a target that is a class's
    mean equals the same with the model's own mean-pooled logits as classes."""

    class Pooled(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m(x)["out"].mean(dim=(2, 3))

    pooled = Pooled(seg)
    ours = camanim.animate(seg, x, target=lambda o: o["out"][:, 2].mean(dim=(1, 2)), method="scorecam",
                           layers=["body.2"])
    as_class = camanim.animate(pooled, x, target=2, method="scorecam", layers=["m.body.2"])
    torch.testing.assert_close(ours.cams, as_class.cams, rtol=1e-4, atol=1e-6)


def test_road_scores_the_targets_change(seg, x):
    """ybROAD of a target on the output scores f(perturbed) - f(original) of the target's value: it equals
    the logit-score ROAD of a model whose class 1 is that value."""
    fn = lambda o: o["out"][:, 2].mean(dim=(1, 2))  # noqa: E731
    res = camanim.animate(seg, x, target=fn, layers="body.*")
    yb = camanim.ybroad(res, trials=1, percentiles=(20, 60))

    class AsClass(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            v = fn(self.m(x))
            return torch.stack([torch.zeros_like(v), v], dim=1)

    same = road_ybroad(AsClass(seg), x, res.cams, 1, score="logit", trials=1, percentiles=(20, 60))
    assert yb.score == "value" and yb.target_probability is None
    torch.testing.assert_close(yb.morf, same.morf)
    torch.testing.assert_close(yb.lerf, same.lerf)
    assert torch.isfinite(yb.combined).all()
    assert json.loads(json.dumps(yb.to_json_dict()))["score_label"] == "Δ target value"


def test_wrong_targets_are_refused_in_one_line(seg, x, tmp_path):
    """A callable of the wrong shape or with non-finite values, a class out of range, an empty mask and a
    class predicted nowhere: one line each, naming what the model returned."""
    cases = [
        (lambda o: o["out"][:, 1], r"returned shape \(1, 32, 32\) from a dict of out \(1, 4, 32, 32\)"),
        (lambda o: o["out"][:, 1].sum(dim=(1, 2)) * float("inf"), "returned non-finite values"),
        (lambda o: 3.0, r"returned a float from a dict of out \(1, 4, 32, 32\)"),
        ("seg:7", r"class 7 is out of range: the model's output \(1, 4, 32, 32\) has 4 classes"),
    ]
    Image.fromarray(np.zeros((SIZE, SIZE), np.uint8)).save(tmp_path / "blank.png")
    cases.append((f"seg:1,mask={tmp_path / 'blank.png'}", "the mask is empty"))
    predicted = set(seg(x)["out"].argmax(1).unique().tolist())
    absent = next(c for c in range(4) if c not in predicted) if len(predicted) < 4 else None
    if absent is not None:
        cases.append((f"seg:{absent}", f"no pixel of image 0 is predicted as class {absent}"))
    for target, words in cases:
        with pytest.raises(InputError, match=words) as err:
            camanim.animate(seg, x, target=target, layers=["head"])
        assert "\n" not in str(err.value)
    with pytest.raises(InputError, match="needs \\(batch, classes, height, width\\) scores"):
        camanim.animate(TinyEmbed().eval(), x, target="seg:1", layers=["body.0"])
    with pytest.raises(InputError, match="explained by its value; drop --score"):
        camanim.animate(seg, x, target="seg:1", score="softmax", layers=["head"])


def test_a_4d_output_without_a_target_says_how_to_explain_it(seg, x):
    """The message a new user met ("not (batch, classes)") now says what to do."""
    with pytest.raises(InputError, match="--target seg:CLASS"):
        camanim.animate(seg, x, layers=["head"])


def test_frames_outline_the_mask_and_the_report_names_the_target(seg, x, tmp_path):
    """A seg target's region is outlined on every frame (white pixels where the plain run has none); the
    manifest and report name the target by its label and its value."""
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[8:24, 8:24] = 1
    res = camanim.animate(seg, x, target=camanim.SegmentationTarget(1, mask), layers="body.*")
    frames = res.frames("local")
    box = 320 // SIZE  # the panel is 320 px wide: 10 px per input pixel
    edge = frames[:, 8 * box, 16 * box]  # on the region's top edge
    inside = frames[:, 16 * box, 16 * box]
    assert (edge == OUTLINE_COLOUR).all()
    assert not (inside == OUTLINE_COLOUR).all(axis=-1).any()
    plain = camanim.animate(seg, x, target=lambda o: o["out"][:, 1].sum(dim=(1, 2)), layers="body.*").frames("local")
    assert not (plain[:, 8 * box, 16 * box] == OUTLINE_COLOUR).all(axis=-1).all()
    res.save(tmp_path / "run", video=False)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["target"] == {"index": None, "label": "seg:1", "score": round(res.target.score, 6),
                                  "kind": "value"}
    assert manifest["options"]["score"] == "value"
    page = (tmp_path / "run" / "report.html").read_text()
    assert "seg:1" in page and f"value {res.target.score:.4g}" in page


def test_road_for_a_saved_run_of_a_target_on_the_output_is_refused(seg, x, tmp_path):
    """camanim road OUT cannot rebuild a callable: one line saying where it is scored."""
    camanim.animate(seg, x, target="seg:1,mask=" + _mask(tmp_path), layers=["head"]).save(tmp_path / "run", video=False)
    with pytest.raises(InputError, match="camanim run --road"):
        camanim.road_for_run(tmp_path / "run", model=seg)


def _mask(folder) -> str:
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[:, :10] = 255
    Image.fromarray(mask).save(folder / "m.png")
    return str(folder / "m.png")


def test_target_head_columns():
    """A head's column 0 is zero and column r + 1 is target r's value (so one target is never a one-logit model)."""
    head = TargetHead([lambda o: o.sum(1), lambda o: o[:, 0]], ["sum", "first"])
    out = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
    torch.testing.assert_close(head(out), torch.tensor([[0.0, 3.0, 1.0], [0.0, 2.0, 3.0]]))
    torch.testing.assert_close(head.column(1)(out), torch.tensor([[0.0, 1.0], [0.0, 3.0]]))


# -- detection: box:N ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def detector():
    """torchvision's Faster R-CNN, random weights (seeded), at 64 px: its box head scores boxes at random."""
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.get_model("fasterrcnn_resnet50_fpn", weights=None, weights_backbone=None,
                                        min_size=64, max_size=64).eval()


def test_box_target_equals_pytorch_grad_cams(detector):
    """box:0: Grad-CAM of backbone.body.layer4 alone equals pytorch-grad-cam's with FasterRCNNBoxScoreTarget
    (the plain image's first detection); the layers the gradient cannot reach through the detector's
    post-processing (the RPN head: torchvision detaches its proposals) are flagged, not silently zero."""
    from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget

    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        det = detector(x)[0]
    assert len(det["boxes"]) > 0
    box, label = det["boxes"][0].numpy(), int(det["labels"][0])
    with pytest.warns(RuntimeWarning, match=r"no usable gradient of the score at 5 layer\(s\) \(rpn.head.conv, "):
        ours = camanim.animate(detector, x, target="box:0", layers=["backbone.body.layer4", "rpn.head.conv"])
    names = [r.name for r in ours.layers]
    assert names[0] == "backbone.body.layer4" and names[1].startswith("rpn.head.conv")
    ref = reference(detector, detector.backbone.body.layer4, x,
                    FasterRCNNBoxScoreTarget(labels=[label], bounding_boxes=[box]))
    assert ref.abs().max() > 0
    torch.testing.assert_close(ours.cams[0], ref, rtol=1e-4, atol=1e-6)
    assert [r.layout for r in ours.layers[:2]] == ["NCHW", "NCHW"]
    assert all("gradient" in r.flags for r in ours.layers[1:]) and "gradient" not in ours.layers[0].flags
    assert not ours.cams[1:].any()  # empty maps, each flagged (the manifest says why)
    assert ours.target.score == pytest.approx(1.0 + float(det["scores"][0]), rel=1e-5)  # IoU 1 + score
    assert ours.target.label.startswith(f"box:0 (label {label}")
    # the box is drawn on the frames (its outline in white)
    x1, y1, x2, y2 = (int(v) for v in box.round())
    frame = ours.frames("local")[0]
    scale = 320 // 64
    top = max(0, int(np.floor(det["boxes"][0][1])))
    left, right = max(0, int(np.floor(det["boxes"][0][0]))), min(64, int(np.ceil(det["boxes"][0][2])))
    assert (frame[top * scale, (left * scale + right * scale) // 2] == OUTLINE_COLOUR).all()
    assert x1 <= x2 and y1 <= y2


def test_no_such_detection_is_refused_in_one_line(detector):
    """box:N beyond the detections, and box: on a model that is no detector: one line each."""
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        found = len(detector(x)[0]["boxes"])
    with pytest.raises(InputError, match=rf"^target='box:{found}': the model detected {found} box\(es\), box:0 to box:{found - 1}"):
        camanim.animate(detector, x, target=f"box:{found}", layers=["backbone.body.layer4"])
    with pytest.raises(InputError, match="needs a detector's output, a list of dicts"):
        camanim.animate(TinyEmbed().eval(), x, target="box:0", layers=["body.0"])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["retinanet_resnet50_fpn", "fcos_resnet50_fpn"])
def test_retinanet_and_fcos_boxes(name):
    """RetinaNet and FCOS (random weights, every score kept): box:0's CAM at the last backbone stage equals
    pytorch-grad-cam's, and ROAD scores the box's change."""
    import torchvision
    from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget

    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None, weights_backbone=None, min_size=64, max_size=64,
                                         score_thresh=0.0).eval()
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        det = model(x)[0]
    ours = camanim.animate(model, x, target="box:0", layers=["backbone.body.layer4"])
    ref = reference(model, model.backbone.body.layer4, x,
                    FasterRCNNBoxScoreTarget(labels=[int(det["labels"][0])], bounding_boxes=[det["boxes"][0].numpy()]))
    torch.testing.assert_close(ours.cams[0], ref, rtol=1e-4, atol=1e-6)
    yb = camanim.ybroad(ours, trials=1, percentiles=(50,))
    assert yb.score == "value" and yb.target_probability is None
    # a constant map ranks no pixel (NaN, undefined); any other is scored on the box's value
    assert bool(yb.defined[0]) == bool(ours.cams[0].max() > ours.cams[0].min())
    assert torch.isfinite(yb.morf[:, yb.defined]).all() and torch.isfinite(yb.baseline_morf).all()


def test_faithfulness_metrics_refuse_a_target_on_the_output(seg, x):
    """The metrics score a class's probability or logit: a target on the model's output gets one line
    pointing to ybROAD, never the last class's score (index -1) in its place."""
    result = camanim.animate(seg, x, target=OutputTarget(lambda out: out["out"][:, 2].mean(dim=(1, 2)), "mean 2"),
                             layers=["body.0"])
    with pytest.raises(camanim.InputError, match=r"^metrics score a class.*'mean 2'.*ybROAD") as err:
        camanim.score_metrics(result, metrics="deletion")
    assert "\n" not in str(err.value) and result.metrics is None
    with pytest.raises(camanim.InputError, match=r"^--guided backpropagates a class's score"):
        camanim.animate(seg, x, target=OutputTarget(lambda out: out["out"][:, 2].mean(dim=(1, 2))), layers=["body.0"],
                        guided=True)


def test_a_value_target_has_no_class_top5_and_says_value_not_p(seg, x, tmp_path):
    """(review) A target on the output has no classes: no top-5 made of the placeholder columns, and its
    repr and the index page give its value, not a class index -1 and a probability."""
    target = OutputTarget(lambda out: out["out"][:, 2].mean(dim=(1, 2)), "mean 2")
    result = camanim.animate(seg, x, target=target, layers=["body.0"], method=["gradcam", "layercam"])
    for res in result.results:
        assert res.top == []
    text = repr(result.results[0])
    assert "target='mean 2'" in text and f"value={result.results[0].target.score:.4g}" in text
    assert "-1" not in text.split("target=")[1] and "p=" not in text
    result.save(tmp_path / "o", video=False)
    manifest = json.loads((tmp_path / "o" / "gradcam" / "manifest.json").read_text())
    assert "top" not in manifest
    index = (tmp_path / "o" / "index.html").read_text()
    assert "#None" not in index and "p=" not in index and "value " in index


def test_a_mask_of_another_size_than_the_models_input_or_output_is_refused(seg, x, tmp_path):
    """(review) A mask drawn on the original photo would be stretched onto the resized, centre-cropped
    input: explaining other pixels than the user marked. Only the input's or the output's size is taken."""
    for shape in ((300, 451), (17, 23), (SIZE, SIZE + 1)):
        mask = np.zeros(shape, np.uint8)
        mask[: shape[0] // 2] = 255
        Image.fromarray(mask).save(tmp_path / "mask.png")
        with pytest.raises(camanim.InputError, match=rf"^target='seg:1,mask=.*': the mask is {shape[1]}x{shape[0]}, "
                           rf"but the model's input is {SIZE}x{SIZE} .* and its output {SIZE}x{SIZE}") as err:
            camanim.animate(seg, x, target=f"seg:1,mask={tmp_path / 'mask.png'}", layers=["body.2"])
        assert "\n" not in str(err.value)


def test_a_missing_mask_or_reference_is_named_as_such(seg, x, tmp_path):
    """(review) The one line says it is the mask (or the reference) that is missing, not "the image"."""
    with pytest.raises(camanim.InputError, match=r"^target='seg:1,mask=.*': the mask: image .*not found"):
        camanim.animate(seg, x, target=f"seg:1,mask={tmp_path / 'nope.png'}", layers=["body.2"])
    with pytest.raises(camanim.InputError, match=r"^target='similar:.*': the reference: image .*not found"):
        camanim.animate(TinyEmbed().eval(), x, target=f"similar:{tmp_path / 'nope.png'}", layers=["body.0"])


def test_trace_layers_lists_a_segmentation_models_layers(seg, x):
    """(review) Listing layers (``camanim layers``) reads no logits: a model whose output is a dict of
    (B, K, h, w) scores is listed like any other."""
    records = camanim.trace_layers(seg, "body.*", image=x)
    assert [(r.name, r.shape) for r in records] == [
        ("body.0", (1, 6, SIZE, SIZE)), ("body.1", (1, 6, SIZE, SIZE)), ("body.2", (1, 8, SIZE, SIZE)),
        ("body.3", (1, 8, SIZE, SIZE))]


def test_a_target_that_ignores_the_batch_is_named_in_roads_one_line(tiny, tiny_input):
    """(review) ``o[:1, 1]`` works on one image but not on ROAD's batches of perturbed images: one line
    naming the target, not the model's "(batch, classes)" ValueError."""
    result = camanim.animate(tiny, tiny_input, target=OutputTarget(lambda o: o[:1, 1], "first row"))
    with pytest.raises(camanim.InputError, match=r"^target first row gave 1 value\(s\) for a batch of \d+ perturbed"):
        camanim.ybroad(result, options=camanim.RoadOptions(trials=1, percentiles=(50,)))


# -- messages name what the user wrote (#18 review) ------------------------------------------------


def test_python_errors_name_the_python_object_one_per_target_kind(seg, detector, x, tmp_path):
    """A target given as a Python object is named as that object in its one line (not as ``--target``);
    given as text from Python, as ``target='...'``. The CLI's wording is tested in tests/compute/test_cli.py."""
    cases = [
        (seg, x, SegmentationTarget(7), ["head"],
         r"^SegmentationTarget\(category=7\): class 7 is out of range: the model's output \(1, 4, 32, 32\)"),
        (seg, x, SegmentationTarget(1, np.zeros((SIZE, SIZE))), ["head"],
         r"^SegmentationTarget\(category=1, mask=<ndarray \(32, 32\)>\): the mask is empty"),
        (seg, x, "seg:7", ["head"], r"^target='seg:7': class 7 is out of range"),
        (TinyEmbed().eval(), x, BoxTarget(0), ["body.0"], r"^BoxTarget\(index=0\) needs a detector's output"),
        (TinyEmbed().eval(), x, SimilarityTarget(str(tmp_path / "nope.png")), ["body.0"],
         r"^SimilarityTarget\(reference='.*nope.png'\): the reference: image .*not found"),
    ]
    x64 = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        found = len(detector(x64)[0]["boxes"])
    cases.append((detector, x64, BoxTarget(found), ["backbone.body.layer4"],
                  rf"^BoxTarget\(index={found}\): the model detected {found} box\(es\)"))
    for model, inp, target, layers, words in cases:
        with pytest.raises(InputError, match=words) as err:
            camanim.animate(model, inp, target=target, layers=layers)
        assert "\n" not in str(err.value) and "--target" not in str(err.value)


class TinyClassifier(nn.Module):
    """TinyEmbed with a classification head (``fc``): its output is 5 logits, not an embedding."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = TinyEmbed()
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        return self.fc(self.backbone(x))


def test_similarity_on_a_classifiers_logits_warns_once_in_one_line(x):
    """(#18 review) similar: on a model with a classification head reads its logits as the "embedding":
    one warning, in one line, saying so and how to give the backbone; a backbone gets none."""
    torch.manual_seed(0)
    model = TinyClassifier().eval()
    ref = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    with pytest.warns(UserWarning) as caught:
        result = camanim.animate(model, torch.cat([x, x.flip(-1)]), target=SimilarityTarget(ref),
                                 layers=["backbone.body.2"])
    ours = [str(w.message) for w in caught if "similarity" in str(w.message)]
    assert ours == [
        "camanim: SimilarityTarget(reference=<Tensor (1, 3, 32, 32)>): the similarity is computed on the "
        "classifier's logits (fc, Linear(8 -> 5), 5 values), not on an embedding: give the model without its head "
        "(a timm model with num_classes=0, --num-classes 0; or the head replaced by torch.nn.Identity()), or pick "
        "an embedding output with output_key (--output-key); see the README's Tasks, Embeddings"]
    assert len(result.results) == 2  # two images, one warning
    model.fc = nn.Identity()  # the backbone: its output is the embedding
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        camanim.animate(model, x, target=SimilarityTarget(ref), layers=["backbone.body.2"])
    assert classifier_head(TinyClassifier(), 5) == "fc, Linear(8 -> 5)" and classifier_head(TinyEmbed(), 8) is None
