"""--guided: Guided Backpropagation equal to pytorch-grad-cam's, Guided Grad-CAM frames, the model left as it was."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import torchvision
from conftest import small_net
from PIL import Image
from pytorch_grad_cam import GuidedBackpropReLUModel
from pytorch_grad_cam.utils.image import deprocess_image

import camanim
from camanim.cli import main
from camanim.draw import FrameStyle
from camanim.methods.guided import guided_backprop


def small_resnet() -> torch.nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None, num_classes=5).eval()  # in-place nn.ReLUs


def reference(model, x, target):
    """pytorch-grad-cam's guided backprop (H, W, C), on a copy: it swaps the model's ReLU modules."""
    twin = copy.deepcopy(model)
    return GuidedBackpropReLUModel(twin, device="cpu")(x.clone(), target_category=target)


def state(model):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            [(n, type(m), getattr(m, "inplace", None), m.training, dict(m._forward_hooks), dict(m._forward_pre_hooks),
              dict(m._backward_hooks)) for n, m in model.named_modules()])


def same_state(a, b):
    assert a[1] == b[1]
    assert a[0].keys() == b[0].keys() and all(torch.equal(a[0][k], b[0][k]) for k in a[0])


@pytest.mark.parametrize("build", [small_net, small_resnet], ids=["small_net", "resnet18_inplace_relu"])
def test_guided_backprop_equals_pytorch_grad_cam_and_leaves_the_model_unchanged(build):
    model = build()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    before = state(model)
    ours = guided_backprop(model, x, torch.tensor([1, 3]))
    same_state(before, state(model))
    assert all(p.grad is None for p in model.parameters())
    for row, target in enumerate([1, 3]):
        want = reference(model, x[row:row + 1], target)
        assert float(np.abs(want).max()) > 0
        np.testing.assert_allclose(ours[row].permute(1, 2, 0).numpy(), want, rtol=1e-5, atol=1e-8)
    # the guided gradient differs from the plain one (negative gradients are stopped at the ReLUs)
    xg = x[:1].clone().requires_grad_(True)
    plain = torch.autograd.grad(model(xg)[0, 1], xg)[0]
    assert not torch.allclose(plain[0], ours[0])


class Fails(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.act = torch.nn.ReLU(inplace=True)

    def forward(self, x):
        self.act(self.conv(x))
        raise RuntimeError("the model's own failure")


def test_guided_backprop_removes_its_relu_hooks_when_the_forward_fails():
    model = Fails().eval()
    before = state(model)
    with pytest.raises(RuntimeError, match="own failure"):
        guided_backprop(model, torch.randn(1, 3, 8, 8), torch.tensor([0]))
    same_state(before, state(model))


def test_guided_frames_are_pytorch_grad_cams_guided_gradcam_per_layer(tmp_path):
    model = small_net()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    plain = camanim.animate(model, x, layers="features.*", target=2)
    result = camanim.animate(model, x, layers="features.*", target=2, guided=True)
    torch.testing.assert_close(result.cams, plain.cams)  # the CAMs themselves are unchanged
    gb = reference(model, x, 2)
    np.testing.assert_allclose(result.guided_image(), gb, rtol=1e-5, atol=1e-8)
    assert result.options["guided"] is True
    frames = result.frames("local", style=FrameStyle(width=32))
    normed = result.normalised("local").numpy()
    spatial = [i for i, r in enumerate(result.layers) if not r.non_spatial]
    assert len(spatial) >= 3
    for i in spatial:
        want = deprocess_image(normed[i][..., None] * gb)  # pytorch-grad-cam's Guided Grad-CAM picture
        got = frames[i, :32]
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 1, result.layers[i].name
    # a saved run's frames are the guided pictures, and the manifest says so
    result.save(tmp_path / "run", video=False, report=False, style=FrameStyle(width=32))
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["options"]["guided"] is True
    first = sorted((tmp_path / "run").glob("frames/local/*.png"))[spatial[0]]
    np.testing.assert_array_equal(np.asarray(Image.open(first))[:32], frames[spatial[0], :32])


def test_cli_guided_writes_guided_frames(tmp_path):
    torch.save(small_net(), tmp_path / "small.pt")
    out = tmp_path / "out"
    args = ["sample:cat", "--model", str(tmp_path / "small.pt"), "--trust-checkpoint", "--input-size", "32",
            "--layers", "features.6", "--norm", "local", "--no-video", "--frame-width", "32", "--quiet"]
    assert main([*args, "--guided", "--out", str(out)]) == 0
    assert json.loads((out / "manifest.json").read_text())["options"]["guided"] is True
    guided = np.asarray(Image.open(next((out / "frames" / "local").glob("*.png"))))[:32]
    assert main([*args, "--out", str(tmp_path / "plain")]) == 0
    plain = np.asarray(Image.open(next((tmp_path / "plain" / "frames" / "local").glob("*.png"))))[:32]
    # the guided picture is grey around 128 (deprocess_image), not the image under a colormap
    assert not np.array_equal(guided, plain)
    assert abs(float(guided.mean()) - 128) < 20


def test_guided_on_a_model_without_relu_modules_warns_and_says_so_in_the_result(tmp_path, recwarn):
    """(review) Guided backpropagation rewrites nn.ReLU modules only: on a model of ReLU6 (efficientnet_lite0's) or
    GELU (ViTs') no guided rule applies and the "guided" image is the plain input gradient. One warning says so,
    the result's options and manifest record ``guided_relus: 0``; a model with ReLUs has neither."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.ReLU6(), torch.nn.Conv2d(6, 8, 3),
                                torch.nn.GELU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(8, 4)).eval()
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    with pytest.warns(RuntimeWarning, match=r"^camanim: --guided: Sequential has no nn.ReLU module, so no guided "
                                            r"backpropagation rule applies: the guided image is the plain input"):
        result = camanim.animate(model, x, layers="0,2", guided=True)
    xg = x.clone().requires_grad_(True)
    plain = torch.autograd.grad(model(xg)[0, result.target.index], xg)[0][0]
    torch.testing.assert_close(result.guided, plain)  # the maths unchanged: the plain gradient, as said
    assert result.options["guided_relus"] == 0
    result.save(tmp_path / "o", video=False)
    assert json.loads((tmp_path / "o" / "manifest.json").read_text())["options"]["guided_relus"] == 0
    recwarn.clear()
    with_relus = camanim.animate(small_net(), x, layers="features.7", guided=True)
    assert not [w for w in recwarn if "nn.ReLU" in str(w.message)]
    assert with_relus.options["guided_relus"] == sum(isinstance(m, torch.nn.ReLU) for m in small_net().modules()) > 0
