"""Each method's raw per-layer CAM equals pytorch-grad-cam's for that layer computed on its own.

pytorch-grad-cam min-max scales each CAM and resizes it with cv2; we compare the map it computes
before that scaling (captured from its ``get_cam_image``, then ReLU, as its ``compute_cam_per_layer``
does), at layer resolution, and after a bilinear resize to input size.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from conftest import no_inplace, out_of_place_resnet, spy_raw_maps
from pytorch_grad_cam import (
    EigenCAM,
    EigenGradCAM,
    GradCAM,
    GradCAMElementWise,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    XGradCAM,
)
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from camanim import InputError, get_method, list_methods
from camanim.compute.maps import layer_cams, upsample, upsample_volumes
from camanim.methods import CamMethod, MethodContext, cam_method, register_method
from camanim.trace import run_trace

# eigen projections: the reference with camanim's documented sign rule (see first_component)
pytestmark = pytest.mark.usefixtures("oriented_reference")

REFERENCE = {
    "gradcam": GradCAM, "hirescam": HiResCAM, "gradcam++": GradCAMPlusPlus, "xgradcam": XGradCAM,
    "layercam": LayerCAM, "gradcamelementwise": GradCAMElementWise, "eigencam": EigenCAM,
    "eigengradcam": EigenGradCAM,
}


def _out_of_place_models(monkeypatch):
    """The reference reads CPU activations that later in-place ops overwrite; remove those ops."""
    out_of_place_resnet(monkeypatch)
    from torchvision.models import mobilenetv3

    def inverted_residual_forward(self, x):
        # torchvision's ``result += input`` would overwrite the block's last BatchNorm output,
        # which the reference holds without a copy.
        result = self.block(x)
        return result + x if self.use_res_connect else result

    monkeypatch.setattr(mobilenetv3.InvertedResidual, "forward", inverted_residual_forward)
    real_relu = F.relu
    monkeypatch.setattr(F, "relu", lambda x, inplace=False: real_relu(x, inplace=False))


def reference_raw(cls, model, x, module, target):
    """pytorch-grad-cam's map for one layer, before min-max scaling, after its ReLU."""
    cam = cls(model=model, target_layers=[module])
    captured = spy_raw_maps(cam)
    with cam:
        cam(input_tensor=x, targets=[ClassifierOutputTarget(target)])
    return captured[0][0]


MODELS = {
    "resnet18": (lambda: torchvision.models.resnet18(weights=None), 64),
    "densenet121": (lambda: torchvision.models.densenet121(weights=None), 64),
    "mobilenet_v3_small": (lambda: torchvision.models.mobilenet_v3_small(weights=None), 96),
}


@pytest.mark.parametrize("model_name", list(MODELS))
def test_methods_equal_reference_per_layer(model_name, monkeypatch):
    _out_of_place_models(monkeypatch)
    build, size = MODELS[model_name]
    torch.manual_seed(0)
    model = no_inplace(build()).eval()
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    tr = run_trace(model, x, "all")
    target = int(tr.targets[0])
    modules = dict(model.named_modules())
    spatial = [i for i, r in enumerate(tr.records) if not r.non_spatial and r.call == 1]
    rng = np.random.default_rng(0)
    sample = sorted(rng.choice(spatial, size=min(6, len(spatial)), replace=False).tolist())
    sample.append(spatial[-1])  # the last conv stage is the classic Grad-CAM layer
    checked = 0
    for name, ref_cls in REFERENCE.items():
        method = get_method(name)
        ours = layer_cams(tr, method, MethodContext())
        up = upsample(ours, (size, size))[:, 0]
        for i in sample:
            rec = tr.records[i]
            ref = reference_raw(ref_cls, model, x, modules[rec.module], target)
            mine = ours[i][0].numpy()
            scale = max(float(np.abs(ref).max()), 1e-4)
            np.testing.assert_allclose(mine, ref, rtol=1e-4, atol=1e-4 * scale,
                                       err_msg=f"{model_name} {name} {rec.name}")
            ref_up = cv2.resize(ref.astype(np.float32), (size, size))
            np.testing.assert_allclose(up[i].numpy(), ref_up, rtol=1e-4, atol=1e-4 * scale,
                                       err_msg=f"{model_name} {name} {rec.name} (upsampled)")
            checked += 1
    assert checked == len(REFERENCE) * len(sample)


def test_upsample_into_given_stack_matches_cv2_and_fills_gaps():
    """upsample(out=...) writes every row of the given stack: resized maps as cv2, zeros for None."""
    g = torch.Generator().manual_seed(0)
    maps = [torch.rand(1, 7, 7, generator=g), None, torch.rand(1, 7, 7, generator=g), torch.rand(1, 3, 5, generator=g)]
    out = torch.full((4, 1, 16, 20), 5.0)
    got = upsample(maps, (16, 20), out=out)
    assert got is out
    np.testing.assert_array_equal(out[1].numpy(), 0.0)
    for i in (0, 2, 3):
        ref = cv2.resize(maps[i][0].numpy(), (20, 16))
        np.testing.assert_allclose(out[i, 0].numpy(), ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(upsample(maps, (16, 20)).numpy(), out.numpy())


def test_gradcam_by_hand(tiny, tiny_input):
    """Grad-CAM on conv1 of the tiny net: sum_k mean(g_k) A_k, computed here without the engine."""
    tr = run_trace(tiny, tiny_input, "conv1")
    a, g = tr.activations[0], tr.gradients[0]
    expected = (g.mean(dim=(2, 3))[:, :, None, None] * a).sum(1).clamp(min=0)
    got = layer_cams(tr, get_method("gradcam"))[0]
    torch.testing.assert_close(got, expected)
    assert got.max() > 0


def test_randomcam_is_seeded_and_bounded(tiny, tiny_input):
    tr = run_trace(tiny, tiny_input, "conv1")
    ctx = lambda s: MethodContext(generator=torch.Generator().manual_seed(s))  # noqa: E731
    m = get_method("randomcam")
    a = layer_cams(tr, m, ctx(3))[0]
    b = layer_cams(tr, m, ctx(3))[0]
    c = layer_cams(tr, m, ctx(4))[0]
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, c)
    w = m.weights(tr.activations[0], None, ctx(3))
    assert w.shape == (1, 4) and w.abs().max() <= 1


def test_registry_lists_every_builtin_and_accepts_plugins(tiny, tiny_input):
    names = set(list_methods())
    assert {"gradcam", "hirescam", "gradcam++", "xgradcam", "layercam", "gradcamelementwise",
            "eigencam", "eigengradcam", "randomcam"} <= names
    assert get_method("GradCAM").name == "gradcam"
    with pytest.raises(InputError, match="unknown method"):
        get_method("nosuchcam")

    @register_method
    class MeanAct(CamMethod):
        """Mean activation over channels."""

        name = "test-meanact"
        uses_gradients = False

        def cam(self, acts, grads, ctx):
            return acts.mean(dim=1)

    @cam_method("test-maxact", uses_gradients=False)
    def max_act(acts, grads, ctx):
        return acts.amax(dim=1)

    tr = run_trace(tiny, tiny_input, "conv1", gradients=False)
    torch.testing.assert_close(layer_cams(tr, get_method("test-meanact"))[0],
                               tr.activations[0].mean(1).clamp(min=0))
    torch.testing.assert_close(layer_cams(tr, get_method("test-maxact"))[0],
                               tr.activations[0].amax(1).clamp(min=0))
    assert "test-meanact" in list_methods()


def test_nan_in_activations_gives_zero_not_nan(tiny, tiny_input):
    tr = run_trace(tiny, tiny_input, "conv1")
    tr.activations[0][0, 0, 0, 0] = float("nan")
    for name in ("gradcam", "eigencam", "hirescam"):
        out = layer_cams(tr, get_method(name))[0]
        assert torch.isfinite(out).all(), name


# -- volumes: 3-D networks ------------------------------------------------------------------

REFERENCE_3D = {name: cls for name, cls in REFERENCE.items()}


def test_methods_equal_reference_per_layer_on_volumes():
    """Every gradient and eigen method's raw 3-D map of each Conv3d/BatchNorm3d/pool layer equals
    pytorch-grad-cam's 3-D map for that layer alone (its ``get_cam_image`` on (B, C, D, H, W)), at layer
    resolution; upsampled, it is that map resized trilinearly (pytorch-grad-cam resizes its min-max
    scaled maps with scipy's cubic ``zoom``, which camanim does not copy)."""
    from conftest import tiny_net3d, tiny_volume

    model, x = tiny_net3d(), tiny_volume()
    tr = run_trace(model, x, "all")
    target = int(tr.targets[0])
    modules = dict(model.named_modules())
    volumes = [i for i, r in enumerate(tr.records) if r.layout == "NCDHW"]
    assert [tr.records[i].name for i in volumes] == ["conv1", "bn1", "relu1", "pool", "conv2", "relu2", "conv3"]
    checked = 0
    for name, ref_cls in REFERENCE_3D.items():
        ours = layer_cams(tr, get_method(name), MethodContext())
        up = upsample_volumes(ours, (8, 12, 16))
        for i in volumes:
            rec = tr.records[i]
            ref = reference_raw(ref_cls, model, x, modules[rec.module], target)
            assert ref.shape == tuple(rec.shape[2:]) and ours[i].shape == (1, *rec.shape[2:])
            scale = max(float(np.abs(ref).max()), 1e-4)
            np.testing.assert_allclose(ours[i][0].numpy(), ref, rtol=1e-4, atol=1e-4 * scale,
                                       err_msg=f"{name} {rec.name}")
            ref_up = F.interpolate(torch.from_numpy(ref)[None, None].float(), size=(8, 12, 16), mode="trilinear",
                                   align_corners=False)[0, 0]
            np.testing.assert_allclose(up[i, 0].numpy(), ref_up.numpy(), rtol=1e-4, atol=1e-4 * scale)
            checked += 1
    assert checked == len(REFERENCE_3D) * len(volumes)
    assert tr.records[-2].non_spatial and tr.records[-1].non_spatial  # gap (1x1x1) and fc


def test_methods_that_are_2d_only_are_refused_on_volumes():
    """ScoreCAM and AblationCAM resize activations to the input plane, and --aug-smooth flips and scales
    2-D maps: on a volume each is one line naming what to use, before any pass."""
    from conftest import tiny_net3d, tiny_volume

    import camanim

    for method in ("scorecam", "ablationcam", "gradcam,scorecam"):
        with pytest.raises(InputError, match=r"works on 2-D images only .* for volumes use .*gradcam"):
            camanim.animate(tiny_net3d(), tiny_volume(), method=method)
    with pytest.raises(InputError, match="--aug-smooth works on 2-D images only"):
        camanim.animate(tiny_net3d(), tiny_volume(), aug_smooth=True)

    @cam_method("test-neighbours", uses_gradients=False)
    def neighbours(acts, grads, ctx):
        return F.avg_pool2d(acts.mean(1, keepdim=True), 3, 1, 1)[:, 0]

    with pytest.raises(InputError, match="test-neighbours works on 2-D images only"):
        camanim.animate(tiny_net3d(), tiny_volume(), method="test-neighbours")
