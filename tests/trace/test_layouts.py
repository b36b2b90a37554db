"""Activation layouts: detection per layer, (C, h, w) maps that land where the signal is, overrides."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torchvision.models.maxvit import SwapAxes, WindowDepartition, WindowPartition
from torchvision.ops.misc import Permute

import camanim
from camanim import InputError
from camanim.cli import main
from camanim.trace import run_trace
from camanim.trace.layouts import (
    NCHW,
    NHWC,
    NON_SPATIAL,
    TOKENS,
    WINDOWS,
    WINDOWS_T,
    Layout,
    LayoutContext,
    detect_layout,
    parse_layout,
    to_nchw,
)

# -- parsing and the tensor <-> (B, C, h, w) maps ------------------------------------------------


@pytest.mark.parametrize("text,layout", [
    ("NCHW", Layout(NCHW)), ("nhwc", Layout(NHWC)), ("non_spatial", Layout(NON_SPATIAL)),
    ("TOKENS", Layout(TOKENS)), ("TOKENS:1+14x14", Layout(TOKENS, 1, (14, 14))),
    ("TOKENS:7x9", Layout(TOKENS, 0, (7, 9))), ("WINDOWS:8x8@7", Layout(WINDOWS, grid=(8, 8), size=7)),
    ("WINDOWS_T:7x7@8", Layout(WINDOWS_T, grid=(7, 7), size=8)),
])
def test_parse_layout_round_trips(text, layout):
    assert parse_layout(text) == layout
    assert parse_layout(str(layout)) == layout


@pytest.mark.parametrize("text", ["NCWH", "TOKENS:14", "WINDOWS", "WINDOWS:8x8", "NHWC:3", ""])
def test_parse_layout_rejects_with_the_names(text):
    with pytest.raises(InputError, match="layout"):
        parse_layout(text)


def test_to_nchw_inverts_each_layout():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 12, 8, generator=g)  # (B, C, H, W)
    assert to_nchw(x, "NCHW") is x
    torch.testing.assert_close(to_nchw(x.permute(0, 2, 3, 1), "NHWC"), x)
    tokens = x.flatten(2).transpose(1, 2)  # (B, 96, C), row-major grid
    prefix = torch.randn(2, 3, 5, generator=g)
    torch.testing.assert_close(to_nchw(torch.cat([prefix, tokens], 1), "TOKENS:3+12x8"), x)
    # the windows are exactly torchvision MaxViT's partitions, block and grid (axes swapped)
    win = WindowPartition()(x, 4)  # (B, 3*2 tiles, 16 pixels, C)
    assert win.shape == (2, 6, 16, 5)
    torch.testing.assert_close(to_nchw(win, "WINDOWS:3x2@4"), x)
    torch.testing.assert_close(to_nchw(SwapAxes(-2, -3)(win), "WINDOWS_T:3x2@4"), x)
    torch.testing.assert_close(WindowDepartition()(win, 4, 3, 2), x)
    assert to_nchw(torch.randn(2, 7), "non_spatial") is None
    with pytest.raises(ValueError, match="not in layout"):
        to_nchw(torch.randn(1, 50, 4), "TOKENS:1+7x8")


def test_bare_tokens_take_the_smallest_prefix_that_leaves_a_square():
    x = torch.arange(2 * 200 * 3, dtype=torch.float32).reshape(2, 200, 3)  # 4 + 14x14 (DeiT + registers)
    torch.testing.assert_close(to_nchw(x, "TOKENS"), to_nchw(x, "TOKENS:4+14x14"))


# -- detection, rule by rule ----------------------------------------------------------------------


def _ctx(shape=(1, 3, 32, 32), **kw) -> LayoutContext:
    return LayoutContext(shape[0], shape[-2:], **kw)


def test_detection_without_context_keeps_the_plain_rules():
    assert detect_layout(nn.Conv2d(3, 4, 1), torch.zeros(1, 4, 5, 5)) == NCHW
    assert detect_layout(nn.AdaptiveAvgPool2d(1), torch.zeros(1, 4, 1, 1)) == NON_SPATIAL
    assert detect_layout(nn.Linear(4, 2), torch.zeros(1, 2)) == NON_SPATIAL
    assert detect_layout(nn.Identity(), torch.zeros(1, 4, 5, 5, dtype=torch.long)) == NON_SPATIAL
    assert detect_layout(nn.Identity(), None) == NON_SPATIAL


def test_permute_layernorm_linear_and_elementwise_follow_channels_last():
    ctx = _ctx()
    x = torch.zeros(1, 8, 16, 16)
    ctx.remember(x, NCHW)
    y = x.permute(0, 2, 3, 1)
    assert ctx.detect(Permute([0, 2, 3, 1]), y, (x,)) == NHWC
    ln = torch.zeros(1, 16, 16, 8)
    assert ctx.detect(nn.LayerNorm(8), ln, (y,)) == NHWC  # inherited from its input
    # a LayerNorm on a tensor permuted inside forward() (no module saw it): the type rule
    unseen = torch.zeros(1, 8, 8, 24)
    assert ctx.detect(nn.LayerNorm(24), unseen, (unseen.clone(),)) == NHWC
    assert ctx.detect(nn.GELU(), torch.zeros(1, 16, 16, 8), (ln,)) == NHWC
    back = torch.zeros(1, 8, 16, 16)
    assert ctx.detect(Permute([0, 3, 1, 2]), back, (ln,)) == NCHW
    # LayerNorm2d-style classes normalise channels-first whatever their base class
    class LayerNorm2d(nn.LayerNorm):
        pass
    assert ctx.detect(LayerNorm2d(16), torch.zeros(1, 8, 16, 16), ()) == NCHW


def test_shape_alone_places_only_what_fits_the_image():
    ctx = _ctx((1, 3, 224, 224), channels=[96])
    assert ctx.detect(nn.Identity(), torch.zeros(1, 64, 28, 28), ()) == NCHW
    # last dim is a channel count of the model and the middle dims have the image's aspect
    assert ctx.detect(nn.Identity(), torch.zeros(1, 56, 56, 96), ()) == NHWC
    # attention internals (B, heads, N, head_dim) and unknown channels-last shapes: not guessed
    assert ctx.detect(nn.Identity(), torch.zeros(1, 12, 197, 64), ()) == NON_SPATIAL
    assert ctx.detect(nn.Identity(), torch.zeros(1, 56, 56, 100), ()) == NON_SPATIAL
    # windows folded into the batch (timm's Swin attention) are not this image's maps
    assert ctx.detect(nn.Linear(96, 96), torch.zeros(64, 49, 96), ()) == NON_SPATIAL
    assert ctx.detect(nn.Conv1d(4, 4, 1), torch.zeros(1, 4, 49), ()) == NON_SPATIAL
    assert ctx.detect(nn.Identity(), torch.zeros(1, 2, 3), ()) == NON_SPATIAL


def test_tokens_use_the_patch_grid_seen_before_them():
    ctx = _ctx((1, 3, 32, 48))
    patches = torch.zeros(1, 8, 8, 12)
    ctx.remember(patches, NCHW)  # the patch embedding: an 8x12 grid (not square)
    assert ctx.detect(nn.Dropout(), torch.zeros(1, 97, 8), ()) == "TOKENS:1+8x12"
    assert ctx.detect(nn.Dropout(), torch.zeros(1, 101, 8), ()) == "TOKENS:5+8x12"
    # no grid known: a square after the fewest prefix tokens
    assert _ctx((1, 3, 224, 224)).detect(nn.Dropout(), torch.zeros(1, 198, 8), ()) == "TOKENS:2+14x14"


def test_windows_follow_partition_swap_and_departition():
    ctx = _ctx((1, 3, 16, 16))
    x = torch.zeros(1, 4, 16, 16)
    ctx.remember(x, NCHW)
    win = WindowPartition()(x, 4)
    assert ctx.detect(WindowPartition(), win, (x, 4)) == "WINDOWS:4x4@4"
    swapped = win.transpose(1, 2)
    assert ctx.detect(SwapAxes(-2, -3), swapped, (win,)) == "WINDOWS_T:4x4@4"
    # an input no layer produced (a residual sum) with the shape of a known output keeps its layout
    assert ctx.detect(nn.LayerNorm(4), torch.zeros(1, 16, 16, 4), (swapped + 1,)) == "WINDOWS_T:4x4@4"
    assert ctx.detect(WindowDepartition(), x.clone(), (win, 4, 4, 4)) == NCHW


# -- end to end: the map lands where the signal is --------------------------------------------------


def _positive(module: nn.Module) -> nn.Module:
    """Weights that keep a positive signal positive: every channel carries the input's evidence."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(torch.full_like(p, 0.0) if name.endswith("bias") else torch.linspace(0.5, 1.5, p.numel())
                    .reshape(p.shape) / max(p.shape[-1], 1))
    return module


class ChannelsLastNet(nn.Module):
    """ConvNeXt-style: a conv, then Permute -> Linear -> GELU in (B, H, W, C), then back."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 1)
        self.to_last = Permute([0, 2, 3, 1])
        self.fc1 = nn.Linear(4, 6)
        self.act = nn.GELU()
        self.to_first = Permute([0, 3, 1, 2])
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        x = self.to_first(self.act(self.fc1(self.to_last(self.stem(x)))))
        return self.head(x.mean(dim=(2, 3)))


class HiddenPermuteNet(nn.Module):
    """Channels-last in forward() code only (an einsum the trace does not read), with a channel count no
    LayerNorm/Linear reveals."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 5, 1)
        self.mix = nn.Identity()

    def forward(self, x):
        v = self.mix(torch.einsum("bchw->bhwc", self.stem(x))).mean(dim=(1, 2))
        return torch.stack([v.sum(1), 0.5 * v.sum(1)], dim=1)


class TinyViT(nn.Module):
    """Patch embedding, then tokens with class/register tokens first, then a token MLP."""

    def __init__(self, prefix: int = 1) -> None:
        super().__init__()
        self.prefix = prefix
        self.patch = nn.Conv2d(1, 8, kernel_size=4, stride=4)
        self.drop = nn.Dropout(0.0)
        self.mlp = nn.Sequential(nn.Linear(8, 8), nn.GELU())
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)
        t = self.drop(torch.cat([torch.zeros(t.shape[0], self.prefix, t.shape[2]), t], dim=1))
        t = self.mlp(t)
        return self.head(t[:, self.prefix:].mean(dim=1))


class WindowNet(nn.Module):
    """MaxViT-style partitions: block windows, then the grid (axes swapped), then back to NCHW."""

    def __init__(self, p: int = 4) -> None:
        super().__init__()
        self.p = p
        self.stem = nn.Conv2d(1, 4, 1)
        self.partition = WindowPartition()
        self.block = nn.Linear(4, 4)
        self.swap = SwapAxes(-2, -3)
        self.grid = nn.Linear(4, 4)
        self.unswap = SwapAxes(-2, -3)
        self.departition = WindowDepartition()
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        h, w = x.shape[-2:]
        y = self.swap(self.block(self.partition(self.stem(x), self.p)))
        y = self.departition(self.unswap(self.grid(y)), self.p, h // self.p, w // self.p)
        return self.head(y.mean(dim=(2, 3)))


def _hot_input(h: int, w: int, rows: slice, cols: slice) -> torch.Tensor:
    x = torch.zeros(1, 1, h, w)
    x[..., rows, cols] = 1.0
    return x


def _assert_hot_where_the_signal_is(cam: torch.Tensor, rows: slice, cols: slice) -> None:
    mask = torch.zeros_like(cam, dtype=torch.bool)
    mask[rows, cols] = True
    assert cam.max() > 0
    r, c = divmod(int(cam.argmax()), cam.shape[1])
    assert mask[r, c], f"CAM peaks at ({r}, {c}), outside the signal"
    assert cam[mask].mean() > 4 * cam[~mask].mean()


def _by_name(result) -> dict:
    return {r.name: i for i, r in enumerate(result.layers)}


def test_channels_last_maps_land_in_the_hot_corner():
    torch.manual_seed(0)
    rows, cols = slice(0, 4), slice(12, 16)  # top right
    result = camanim.animate(_positive(ChannelsLastNet()).eval(), _hot_input(16, 16, rows, cols))
    layout = {r.name: r.layout for r in result.layers}
    assert layout == {"stem": NCHW, "to_last": NHWC, "fc1": NHWC, "act": NHWC, "to_first": NCHW, "head": NON_SPATIAL}
    idx = _by_name(result)
    for name in ("stem", "to_last", "fc1", "act", "to_first"):
        _assert_hot_where_the_signal_is(result.cams[idx[name]], rows, cols)
    # channels-last Grad-CAM equals the hand computation on the permuted tensors
    model = result.model
    x = result.input_tensor.clone()
    a = model.fc1(model.to_last(model.stem(x)))
    a.retain_grad()
    out = model.head(model.to_first(model.act(a)).mean(dim=(2, 3)))
    out[0, result.target.index].backward()
    acts, grads = a.detach().permute(0, 3, 1, 2), a.grad.permute(0, 3, 1, 2)
    expected = torch.relu((grads.mean(dim=(2, 3), keepdim=True) * acts).sum(1))[0]
    torch.testing.assert_close(result.cams[idx["fc1"]], expected, rtol=1e-5, atol=1e-6)


def test_tokens_map_lands_in_the_hot_corner_whatever_the_prefix():
    rows, cols = slice(24, 32), slice(0, 8)  # bottom left
    for prefix in (1, 5):
        result = camanim.animate(_positive(TinyViT(prefix)).eval(), _hot_input(32, 48, rows, cols))
        layout = {r.name: r.layout for r in result.layers}
        assert layout["patch"] == NCHW
        assert layout["drop"] == layout["mlp.0"] == layout["mlp"] == f"TOKENS:{prefix}+8x12"
        idx = _by_name(result)
        for name in ("drop", "mlp.0", "mlp"):
            _assert_hot_where_the_signal_is(result.cams[idx[name]], rows, cols)


def test_window_maps_land_in_the_hot_corner():
    rows, cols = slice(1, 3), slice(13, 15)  # tile (0, 3), pixels (1..2, 1..2) of it
    result = camanim.animate(_positive(WindowNet()).eval(), _hot_input(16, 16, rows, cols))
    layout = {r.name: r.layout for r in result.layers}
    assert layout["partition"] == layout["block"] == "WINDOWS:4x4@4"
    assert layout["swap"] == layout["grid"] == "WINDOWS_T:4x4@4"
    assert layout["unswap"] == "WINDOWS:4x4@4" and layout["departition"] == NCHW
    idx = _by_name(result)
    for name in ("partition", "block", "swap", "grid", "unswap", "departition"):
        _assert_hot_where_the_signal_is(result.cams[idx[name]], rows, cols)


# -- overrides ------------------------------------------------------------------------------------


def test_override_reads_a_layer_detection_cannot_place():
    rows, cols = slice(12, 16), slice(12, 16)
    model = _positive(HiddenPermuteNet()).eval()
    x = _hot_input(16, 16, rows, cols)
    plain = camanim.animate(model, x)
    assert {r.name: r.layout for r in plain.layers}["mix"] == NON_SPATIAL
    assert float(plain.cams[1].abs().max()) == 0.0
    result = camanim.animate(model, x, layouts={"mix": "NHWC"})
    assert {r.name: r.layout for r in result.layers}["mix"] == NHWC
    _assert_hot_where_the_signal_is(result.cams[1], rows, cols)
    # a bare TOKENS is resolved to its grid; a layout that does not fit, or an unknown layer, is refused
    vit = camanim.animate(_positive(TinyViT()).eval(), _hot_input(32, 32, rows, cols), layouts={"drop": "TOKENS"})
    assert vit.layers[1].layout == "TOKENS:1+8x8"
    with pytest.raises(InputError, match=r"--layout mix=TOKENS:1\+4x4 does not fit .*\[1, 16, 16, 5\]"):
        camanim.animate(model, x, layouts={"mix": "TOKENS:1+4x4"})
    with pytest.raises(InputError, match="'nope', which is no layer"):
        camanim.animate(model, x, layouts={"nope": "NHWC"})


def test_override_can_turn_a_layer_off_and_follows_its_tensor(tiny, tiny_input):
    tr = run_trace(tiny, tiny_input, layouts={"conv1": "non_spatial"})
    # the in-place relu returns conv1's very tensor, so it reads it the same way; block.0 is a Conv2d
    assert [(r.name, r.layout) for r in tr.records][:3] == [
        ("conv1", NON_SPATIAL), ("relu", NON_SPATIAL), ("block.0", NCHW)]
    assert run_trace(tiny, tiny_input, layouts={"relu#2": "non_spatial"}).records[5].layout == NON_SPATIAL


def test_cli_layout_option(tmp_path, capsys):
    assert main(["layers", "--model", "resnet18", "--layers", "layer4,fc", "--layout", "layer4=non_spatial"]) == 0
    out = capsys.readouterr().out
    assert "layer4 " in out and out.count("non_spatial") == 2
    out_dir = tmp_path / "run"
    assert main(["run", "sample:cat", "--model", "resnet18", "--weights", "none", "--layers", "layer3,layer4",
                 "--layout", "layer3=NHWC", "--layout", "layer4=non_spatial", "--no-video", "--frame-width", "32",
                 "--quiet", "--out", str(out_dir)]) == 0
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert [(r["name"], r["layout"]) for r in manifest["layers"]] == [("layer3", NHWC), ("layer4", NON_SPATIAL)]
    capsys.readouterr()
    assert main(["run", "--model", "resnet18", "--weights", "none", "--layout", "layer4", "--out",
                 str(tmp_path / "x")]) == 2
    assert "--layout 'layer4'" in capsys.readouterr().err
