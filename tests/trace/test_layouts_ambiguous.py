"""Layouts where the shape cannot tell (C = H = W, tokens² = channels): placed by evidence, or non_spatial.

Each model is built so that its sizes coincide; each layer's Grad-CAM is compared with a Grad-CAM
computed by hand in the layer's true layout (known from the model's code), or the layer must be
``non_spatial`` with the reason in its flags.
"""

from __future__ import annotations

import json

import pytest
import torch
import torchvision
from torch import nn
from torch.nn import functional as F

import camanim
from camanim.trace.layouts import NCHW, NHWC, NON_SPATIAL, LayoutContext


def _hand_gradcam(model: nn.Module, x: torch.Tensor, name: str, target: int, layout: str) -> torch.Tensor:
    """Grad-CAM of module ``name``'s output read in ``layout`` (NCHW, NHWC or TOKENS:P+HxW)."""
    mod = dict(model.named_modules())[name]
    saved = {}

    def hook(m, i, out):
        saved["a"] = out.detach().clone()
        new = out.clone()
        new.register_hook(lambda g: saved.__setitem__("g", g))
        return new

    h = mod.register_forward_hook(hook)
    try:
        model(x.clone().requires_grad_(True))[:, target].sum().backward()
    finally:
        h.remove()
    a, g = saved["a"], saved["g"]
    if layout == NHWC:
        a, g = a.permute(0, 3, 1, 2), g.permute(0, 3, 1, 2)
    elif layout.startswith("TOKENS"):
        prefix, grid = layout.split(":")[1].split("+")
        gh, gw = (int(v) for v in grid.split("x"))
        a, g = (t[:, int(prefix):].reshape(t.shape[0], gh, gw, t.shape[-1]).permute(0, 3, 1, 2) for t in (a, g))
    cam = F.relu((g.mean((2, 3), keepdim=True) * a).sum(1, keepdim=True))
    return F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]


def _check_true_layouts(model, x, true_layout, prefix: str, min_checked: int) -> list:
    """Every spatial layer under ``prefix`` is read in its true layout and has the hand Grad-CAM."""
    result = camanim.animate(model, x, layers="all")
    checked = []
    for rec in result.layers:
        if not rec.name.startswith(prefix) or rec.same_as is not None:
            continue
        true = true_layout(rec.name)
        if true is None:
            continue
        assert rec.layout == true, f"{rec.name} {rec.shape} read as {rec.layout}, it is {true}"
        want = _hand_gradcam(model, x, rec.module, result.target.index, true)
        assert float(want.max()) > 0
        torch.testing.assert_close(result.cams[rec.index], want, rtol=1e-4, atol=1e-6 * float(want.max()))
        checked.append(rec.name)
    assert len(checked) >= min_checked, checked
    return result.layers


CHANNELS_LAST = (".norm", ".mlp", ".mlp.fc1", ".mlp.act", ".mlp.drop1", ".mlp.norm", ".mlp.fc2", ".mlp.drop2")


def test_timm_convnext_stage_with_channels_equal_to_its_size():
    # (case_convnext_square_stage.py) 16 channels on a 16 x 16 grid in stage 0
    from timm.models.convnext import ConvNeXt

    torch.manual_seed(0)
    model = ConvNeXt(depths=(1, 1, 1, 1), dims=(16, 32, 64, 128), num_classes=5, conv_mlp=False).eval()
    x = torch.rand(1, 3, 64, 64)
    layers = _check_true_layouts(model, x, lambda n: NHWC if n.endswith(CHANNELS_LAST) else NCHW,
                                 "stages.0.blocks.0", min_checked=7)
    # the layers inside the block that work channels last are read so, not by the shape (1, 16, 16, 16)
    by_name = {r.name: r for r in layers}
    assert by_name["stages.0.blocks.0.mlp.fc1"].shape == (1, 16, 16, 64)
    assert by_name["stages.0.blocks.0.norm"].layout == NHWC and by_name["stages.0.blocks.0"].layout == NCHW


def test_torchvision_convnext_stage_with_channels_equal_to_its_size():
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt

    torch.manual_seed(0)
    model = ConvNeXt([CNBlockConfig(16, 32, 1), CNBlockConfig(32, None, 1)], num_classes=5).eval()
    x = torch.rand(1, 3, 64, 64)
    # CNBlock.block: 0 conv (NCHW), 1 Permute, 2 LayerNorm, 3 Linear, 4 GELU, 5 Linear (NHWC), 6 Permute back
    nhwc = {f"features.1.0.block.{i}" for i in (1, 2, 3, 4, 5)}
    _check_true_layouts(model, x, lambda n: NHWC if n in nhwc else NCHW, "features.1.0", min_checked=7)


class HFConvNextLayerNorm(nn.Module):
    """Hugging Face's ConvNextLayerNorm (channels_last): not an nn.LayerNorm, so no convention helps."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.ones(dim)), nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-6)


class HFConvNextLayer(nn.Module):
    """Hugging Face's ConvNextLayer: permutes done as tensor methods inside forward()."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.layernorm = HFConvNextLayerNorm(dim)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.layer_scale_parameter = nn.Parameter(torch.full((dim,), 0.5))

    def forward(self, hidden_states):
        x = self.dwconv(hidden_states)
        x = x.permute(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C)
        x = self.pwconv2(self.act(self.pwconv1(self.layernorm(x))))
        x = self.layer_scale_parameter * x
        x = x.permute(0, 3, 1, 2)
        return hidden_states + x


class HFConvNext(nn.Module):
    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.embeddings = nn.Conv2d(3, dim, 4, stride=4)
        self.layer = HFConvNextLayer(dim)
        self.pooler = nn.LayerNorm(dim)
        self.classifier = nn.Linear(dim, 5)

    def forward(self, x):
        return self.classifier(self.pooler(self.layer(self.embeddings(x)).mean((-2, -1))))


def test_hugging_face_style_convnext_block_with_channels_equal_to_its_size():
    torch.manual_seed(0)
    model = HFConvNext(16).eval()
    x = torch.rand(1, 3, 64, 64)  # 16 channels on a 16 x 16 grid
    nhwc = {"layer.layernorm", "layer.pwconv1", "layer.act", "layer.pwconv2"}
    _check_true_layouts(model, x, lambda n: NHWC if n in nhwc else (None if n == "pooler" else NCHW), "layer",
                        min_checked=6)


class SquareViT(nn.Module):
    """Patch embedding to a 4 x 4 grid of 16 tokens with 16 channels (tokens² = channels... and
    tokens = channels), plus a channels-first token mixer that sees (B, C, N)."""

    def __init__(self, prefix: int = 0) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, 16, 8, stride=8)
        self.prefix = nn.Parameter(torch.randn(1, prefix, 16)) if prefix else None
        self.mix_tokens = nn.Linear(16, 16)  # acts on the token axis of (B, C, N)
        self.norm = nn.LayerNorm(16)
        self.mlp = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 16))
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        x = self.patch(x).flatten(2)  # (B, C, N): channels first
        x = self.mix_tokens(x).transpose(1, 2)  # (B, N, C): tokens
        if self.prefix is not None:
            x = torch.cat([self.prefix.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.mlp(self.norm(x))
        return self.head(x.mean(1))


@pytest.mark.parametrize("prefix", [0, 1])
def test_attention_style_tokens_when_tokens_equal_channels(prefix):
    torch.manual_seed(0)
    model = SquareViT(prefix).eval()
    x = torch.rand(1, 3, 32, 32)
    tokens = f"TOKENS:{prefix}+4x4"
    layers = _check_true_layouts(model, x, lambda n: tokens if n.startswith(("norm", "mlp")) else None, "",
                                 min_checked=4)
    by_name = {r.name: r for r in layers}
    # the channels-first (B, C, N) output of the token mixer is not read as tokens
    assert by_name["mix_tokens"].shape == (1, 16, 16)
    assert by_name["mix_tokens"].layout == NON_SPATIAL


class EinsumNet(nn.Module):
    """A channels-last tensor made by an op the trace does not read (einsum), with C = H = W, and a
    LayerNorm of that width elsewhere: ``mix`` cannot be placed by anything but its shape."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 4, stride=4)
        self.mix = nn.Identity()
        self.norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        y = self.mix(torch.einsum("bchw->bhwc", self.stem(x)))
        return self.head(self.norm(y.mean((1, 2))))


def test_a_shape_that_reads_two_ways_is_non_spatial_with_the_reason(tmp_path):
    torch.manual_seed(0)
    result = camanim.animate(EinsumNet().eval(), torch.rand(1, 3, 64, 64), layers="stem,mix")
    mix = {r.name: r for r in result.layers}["mix"]
    assert mix.shape == (1, 16, 16, 16) and mix.layout == NON_SPATIAL
    assert "reads as NCHW and as NHWC" in mix.flags["layout"] and "--layout mix=" in mix.flags["layout"]
    result.save(tmp_path / "run", video=False)
    layers = {d["name"]: d for d in json.loads((tmp_path / "run" / "manifest.json").read_text())["layers"]}
    assert layers["mix"]["non_spatial"] and "reads as NCHW and as NHWC" in layers["mix"]["flags"]["layout"]
    assert layers["stem"]["flags"] == {}
    # the user's word places it
    placed = camanim.animate(EinsumNet().eval(), torch.rand(1, 3, 64, 64), layers="stem,mix", layouts={"mix": "NHWC"})
    assert {r.name: r for r in placed.layers}["mix"].layout == NHWC


def test_shape_guess_is_kept_only_where_it_reads_one_way():
    ctx = LayoutContext(1, (64, 64), channels=[16])
    seen = torch.zeros(1, 16, 16, 16)
    ctx.remember(seen, NCHW)
    # an input nothing placed, of a shape seen before, that reads both ways: no guess
    assert ctx.detect(nn.Identity(), torch.zeros(1, 16, 16, 16), (torch.zeros(1, 16, 16, 16),), "a") == NON_SPATIAL
    assert "reads as NCHW and as NHWC" in ctx.reason
    # (1, 64, 16, 16): 64 rows of 16 are not the image's aspect, so only NCHW fits
    ctx.remember(torch.zeros(1, 64, 16, 16), NCHW)
    assert ctx.detect(nn.Identity(), torch.zeros(1, 64, 16, 16), (torch.zeros(1, 64, 16, 16),), "b") == NCHW
    assert ctx.reason == ""
    # a LayerNorm over the last dim of a 4-D tensor works channels last (its convention)
    assert ctx.detect(nn.LayerNorm(16), torch.zeros(1, 16, 16, 16), (torch.zeros(1, 16, 16, 16),), "c") == NHWC


def test_evidence_follows_tensor_methods_through_a_pass():
    # NCHW -> permute -> NHWC; flatten(2).transpose(1, 2) -> TOKENS; reshape back -> NHWC / NCHW
    from camanim.trace.layouts import LayoutEvidence

    ctx = LayoutContext(1, (32, 32))
    x = torch.rand(1, 8, 8, 8)
    ctx.remember(x, NCHW)
    with LayoutEvidence(ctx):
        last = x.permute(0, 2, 3, 1)
        summed = last + 1
        tokens = x.flatten(2).transpose(1, 2)
        grid = tokens.reshape(1, 8, 8, 8)
        back = grid.permute(0, 3, 1, 2).contiguous()
        hw = x.transpose(2, 3)
    assert str(ctx.known(last)) == NHWC and str(ctx.known(summed)) == NHWC
    assert str(ctx.known(tokens)) == "TOKENS:0+8x8" and str(ctx.known(grid)) == NHWC
    assert str(ctx.known(back)) == NCHW
    assert ctx.known(hw) is None  # H and W swapped: no layout reads it right
    assert torchvision is not None


def test_torchvision_swin_stage_with_channels_equal_to_its_size():
    # attention in shifted windows, channels last throughout; 16 channels on a 16 x 16 grid
    from torchvision.models.swin_transformer import SwinTransformer

    torch.manual_seed(0)
    model = SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[1, 1], num_heads=[2, 2], window_size=[4, 4],
                            num_classes=5).eval()
    x = torch.rand(1, 3, 64, 64)
    checked = _check_true_layouts(model, x, lambda n: NCHW if n in ("features.0.0", "permute") else NHWC,
                                  "features.", min_checked=19)
    assert {r.name: r.layout for r in checked}["features.1.0.attn"] == NHWC
    assert not any(r.non_spatial for r in checked if r.name.startswith("features."))


class _TransposedBlock(nn.Module):
    """ConvNeXt-like block that goes channels-last by ``x.transpose(1, 3)``: (N, C, H, W) -> (N, W, H, C)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.norm = nn.LayerNorm(c)
        self.fc1 = nn.Linear(c, 2 * c)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(2 * c, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dw(x).transpose(1, 3)
        y = self.fc2(self.act(self.fc1(self.norm(y))))
        return x + y.transpose(1, 3)


class _TransposedNet(nn.Module):
    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c, 1)
        self.blk = _TransposedBlock(c)
        self.fc = nn.Linear(c, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.blk(self.stem(x)).mean((2, 3)))


@pytest.mark.parametrize("hw", [(8, 8), (12, 6)], ids=["square C=H=W", "non-square"])
def test_transpose_1_3_is_read_as_nwhc_never_as_a_transposed_map(hw):
    torch.manual_seed(0)
    model = _TransposedNet().eval()
    x = torch.rand(1, 3, *hw)
    keep = {}
    hooks = [getattr(model.blk, n).register_forward_hook(lambda m, i, o, n=n: keep.__setitem__(n, o))
             for n in ("norm", "fc1", "fc2")]
    out = model(x)
    for h in hooks:
        h.remove()
    target = int(out.argmax())
    grads = torch.autograd.grad(out[0, target], [keep[n] for n in ("norm", "fc1", "fc2")])
    result = camanim.animate(model, x, layers="blk.*", target=target)
    by_name = {r.name: i for i, r in enumerate(result.layers)}
    for n, g in zip(("norm", "fc1", "fc2"), grads):
        a = keep[n].detach()
        cam_wh = F.relu((g.mean((1, 2), keepdim=True) * a).sum(-1))[0]  # (W, H): the tensor is (N, W, H, C)
        rec = result.layers[by_name[f"blk.{n}"]]
        got = torch.as_tensor(result.cams[by_name[f"blk.{n}"]])
        assert rec.layout == "NWHC", (n, rec.layout, rec.flags)
        assert tuple(got.shape) == hw
        assert torch.allclose(got, cam_wh.t(), rtol=1e-4, atol=1e-7), n


def test_nwhc_layout_reads_back_with_the_right_permutation():
    from camanim.trace.layouts import parse_layout, spatial_size, to_nchw

    t = torch.arange(2 * 5 * 3 * 4.0).view(2, 5, 3, 4)  # (N, W=5, H=3, C=4)
    assert torch.equal(to_nchw(t, "NWHC"), t.permute(0, 3, 2, 1))
    assert spatial_size(parse_layout("NWHC"), t.shape) == (3, 5)


class _ScrambledBlock(nn.Module):
    """``x.transpose(1, 2)``: (N, C, H, W) -> (N, H, C, W), an axes order no layout reads."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.norm = nn.LayerNorm(c)
        self.fc = nn.Linear(c, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(self.norm(self.dw(x).transpose(1, 2)))
        return x + y.transpose(1, 2)


def test_a_permute_no_layout_reads_is_non_spatial_with_the_reason():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 1), _ScrambledBlock(8), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 4)).eval()
    result = camanim.animate(model, torch.rand(1, 3, 8, 8), layers="1.*")
    by_name = {r.name: r for r in result.layers}
    assert by_name["1.dw"].layout == NCHW
    for n in ("1.norm", "1.fc"):
        assert by_name[n].layout == NON_SPATIAL, (n, by_name[n].layout)
        assert "NHCW" in by_name[n].flags["layout"]


class _Attention(nn.Module):
    """Multi-head self-attention with the softmax as a module: (B, heads, N, N) is query x key, no image."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.soft = nn.Softmax(-1)
        self.scores = nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        a = self.soft(self.scores(q @ k.transpose(-2, -1)))
        return self.proj((a @ v).transpose(1, 2).reshape(b, n, c))


class _TinyViT(nn.Module):
    def __init__(self, dim: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.pe = nn.Conv2d(3, dim, 4, 4)
        self.norm = nn.LayerNorm(dim)
        self.attn = _Attention(dim, heads)
        self.fc = nn.Linear(dim, 5)

    def forward(self, x):
        x = self.pe(x).flatten(2).transpose(1, 2)
        x = x + self.attn(self.norm(x))
        return self.fc(x.mean(1))


@pytest.mark.parametrize(("heads", "size"), [(2, 16), (4, 16), (2, 32), (16, 16)])
def test_attention_scores_are_non_spatial_whatever_the_head_count(heads, size, tmp_path):
    # (review) the softmax of q @ k^T, (B, heads, N, N), was drawn as an NCHW image whenever
    # heads != N: no op says it is one, so it is non_spatial with the reason, and the module that
    # returns the very tensor (same_as) carries the reason too
    torch.manual_seed(0)
    model = _TinyViT(heads=heads).eval()
    result = camanim.animate(model, torch.randn(1, 3, size, size), layers="attn.*,norm", target=1)
    recs = {r.name: r for r in result.layers}
    for name in ("attn.scores", "attn.soft"):
        assert recs[name].layout == NON_SPATIAL, (name, recs[name].shape, recs[name].layout)
        assert "layout" in recs[name].flags, recs[name].flags
    assert recs["norm"].layout.startswith("TOKENS")  # the token stream itself is still placed
    result.save(tmp_path / "run", video=False)
    layers = {d["name"]: d for d in json.loads((tmp_path / "run" / "manifest.json").read_text())["layers"]}
    for d in layers.values():
        if d.get("same_as") is not None and "layout" in _by_index(layers)[d["same_as"]]["flags"]:
            assert d["flags"].get("layout") == _by_index(layers)[d["same_as"]]["flags"]["layout"]


def _by_index(layers: dict) -> dict:
    return {d["index"]: d for d in layers.values()}
