"""Non-spatial layers: their 1-D evidence drawn as a stripe, or left out with --skip-non-spatial."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import torch
from torch import nn

import camanim
from camanim.cli import main
from camanim.draw import FrameStyle, colormap_lut, panel_size
from camanim.draw.render import CAPTION_H


def _evidence(tiny, x):
    """By hand: pooled activations, their gradient (the target's fc row) and the logits."""
    with torch.no_grad():
        a = torch.relu(tiny.block(torch.relu(tiny.conv1(x))))
        pooled = tiny.pool(a).flatten()
        logits = tiny.fc(pooled[None])[0]
    target = int(logits.argmax())
    return pooled, tiny.fc.weight[target].detach(), logits, target


def test_vectors_are_activation_times_gradient(tiny, tiny_input):
    result = camanim.animate(tiny, tiny_input)
    names = [r.name for r in result.layers]
    assert names[-2:] == ["pool", "fc"]
    pooled, grad, logits, target = _evidence(tiny, tiny_input)
    values = result.vectors.values
    assert all(v is None for v in values[:-2]) and result.vectors.kind == "act x grad"
    torch.testing.assert_close(values[-2], pooled * grad, rtol=1e-5, atol=1e-6)
    expected_fc = torch.zeros(4)
    expected_fc[target] = logits[target]
    torch.testing.assert_close(values[-1], expected_fc, rtol=1e-5, atol=1e-6)
    # gradient-free methods show the activation itself
    eigen = camanim.animate(tiny, tiny_input, method="eigencam")
    assert eigen.vectors.kind == "activation"
    torch.testing.assert_close(eigen.vectors.values[-2], pooled, rtol=1e-5, atol=1e-6)


def test_stripe_frame_shows_each_unit_in_the_colormap(tiny, tiny_input):
    result = camanim.animate(tiny, tiny_input)
    style = FrameStyle(width=96)
    lut = colormap_lut("jet")
    ph, pw = panel_size(result.image.shape[:2], 96)
    band = (int(ph * 0.4) + int(ph * 0.6)) // 2
    pooled, grad, _, _ = _evidence(tiny, tiny_input)
    v = torch.relu(pooled * grad).numpy()
    cols = np.minimum((np.arange(pw - 6) * 6) // (pw - 6), 5)  # 6 units stretched over the band
    all_max = max(float(v.max()), float(result.vectors.values[-1].max()))
    for norm, scale in (("local", float(v.max())), ("global", all_max)):
        frames = result.frames(norm, style)
        row = frames[-2, band, 3:pw - 3].astype(int)
        expected = lut[np.rint(np.clip(v[cols] / scale, 0, 1) * 255).astype(int)].astype(int)
        np.testing.assert_array_equal(row, expected)
        # above the label the dimmed image is left as it is: same as a frame with no vectors
        plain = dataclasses.replace(result, vectors=None).frames(norm, style)
        np.testing.assert_array_equal(frames[-2, 0], plain[-2, 0])
        assert not np.array_equal(frames[-2, :ph], plain[-2, :ph])
        np.testing.assert_array_equal(frames[-2, ph:ph + CAPTION_H], plain[-2, ph:ph + CAPTION_H])
    assert v.max() > 0


class SqueezeNet(nn.Module):
    """A gate from a pooled (non-spatial) vector, then a block whose output is its last child's."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.block = nn.Sequential(nn.Conv2d(4, 4, 1), nn.ReLU())
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        a = self.conv(x)
        y = self.block(a * torch.sigmoid(self.pool(a)))
        return self.head(y.mean(dim=(2, 3)))


def test_skip_non_spatial_renumbers_the_layers(tiny_input):
    torch.manual_seed(0)
    model = SqueezeNet().eval()
    full = camanim.animate(model, tiny_input)
    assert [(r.name, r.non_spatial, r.same_as) for r in full.layers] == [
        ("conv", False, None), ("pool", True, None), ("block.0", False, None), ("block.1", False, None),
        ("block", False, 3), ("head", True, None)]
    skipped = camanim.animate(model, tiny_input, skip_non_spatial=True)
    assert [(r.index, r.name, r.same_as) for r in skipped.layers] == [
        (0, "conv", None), (1, "block.0", None), (2, "block.1", None), (3, "block", 2)]
    torch.testing.assert_close(skipped.cams, full.cams[[0, 2, 3, 4]])
    assert skipped.frames("local", FrameStyle(width=32)).shape[0] == 4


def test_cli_skip_non_spatial(tmp_path):
    out = tmp_path / "o"
    args = ["run", "sample:cat", "--model", "resnet18", "--weights", "none", "--layers", "layer4,avgpool,fc",
            "--no-video", "--frame-width", "32", "--quiet", "--out", str(out)]
    assert main(args) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert [(r["name"], r["non_spatial"]) for r in m["layers"]] == [("layer4", False), ("avgpool", True),
                                                                   ("fc", True)]
    assert main([*args, "--skip-non-spatial"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert [r["name"] for r in m["layers"]] == ["layer4"] and m["frames"]["count"] == 1
    assert sorted(p.name for p in (out / "frames" / "local").iterdir()) == ["0000.png"]
