"""End to end on the architectures the paper shows, with random weights: every layer's CAM, frames, videos.

Each run records every layer at the input size of the model's own weights' transforms (timm's
pretrained config for timm models) and writes local and global frames (64 px wide to keep the
suite fast) and the local, global and side-by-side MP4s, one frame per layer. A few runs go
through the whole command line (``camanim run``, the report too); the others call the API and
skip the report. Random weights are seeded. The expected counts are those of torchvision 0.29
and timm 1.0: a change in them means the models changed, or layout detection did.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
import timm
import torch
import torchvision

import camanim
from camanim.cli import main
from camanim.draw.render import FrameStyle


@dataclass(frozen=True)
class Case:
    model: str
    size: int
    layers: int
    spatial: int
    layouts: dict[str, int] = field(default_factory=dict)
    cli: bool = False  # through `camanim run` (with the report) rather than the API
    heavy: bool = False
    method: str = "gradcam"
    memory_gb: float = 0.0  # peak resident memory of the run, where it is large


def _nchw(spatial: int, layers: int) -> dict[str, int]:
    return {"NCHW": spatial, "non_spatial": layers - spatial}


CASES = [
    Case("alexnet", 224, 23, 15, _nchw(15, 23), cli=True),
    Case("squeezenet1_1", 224, 67, 65, _nchw(65, 67)),
    Case("vgg16", 224, 41, 33, _nchw(33, 41)),
    Case("resnet50", 224, 182, 180, _nchw(180, 182)),
    Case("resnext50_32x4d", 224, 182, 180, _nchw(180, 182)),
    Case("wide_resnet50_2", 224, 182, 180, _nchw(180, 182)),
    Case("googlenet", 224, 223, 220, _nchw(220, 223)),
    Case("inception_v3", 299, 298, 295, _nchw(295, 298)),
    Case("mobilenet_v3_large", 224, 254, 208, _nchw(208, 254)),
    Case("shufflenet_v2_x1_0", 224, 191, 190, _nchw(190, 191)),
    Case("mnasnet1_0", 224, 181, 178, _nchw(178, 181)),
    Case("regnet_y_400mf", 224, 343, 261, _nchw(261, 343)),
    Case("densenet121", 224, 432, 431, _nchw(431, 432)),
    Case("convnext_tiny", 224, 202, 197, {"NCHW": 107, "NHWC": 90, "non_spatial": 5}),
    Case("swin_t", 224, 167, 164, {"NCHW": 2, "NHWC": 162, "non_spatial": 3}, cli=True),
    # torchvision initialises ViT's head to zeros: with random weights every gradient is zero, so a
    # gradient-free method (FEM) shows the token maps; timm's ViT and DeiT below use Grad-CAM
    Case("vit_b_16", 224, 139, 137, {"NCHW": 1, "TOKENS": 136, "non_spatial": 2}, cli=True, method="fem"),
    Case("maxvit_t", 224, 686, 624, {"NCHW": 250, "WINDOWS": 209, "WINDOWS_T": 165, "non_spatial": 62}, heavy=True),
    Case("efficientnet_v2_s", 384, 708, 554, _nchw(554, 708), heavy=True),
    Case("densenet161", 224, 572, 571, _nchw(571, 572), heavy=True),
    Case("resnet152", 224, 522, 520, _nchw(520, 522), heavy=True),
    # 1097 layers at 600 px: activations, their copies and gradients come to ~16 GB
    Case("efficientnet_b7", 600, 1097, 818, _nchw(818, 1097), heavy=True, memory_gb=18),
    # timm families (names torchvision also has are asked for as timm:NAME)
    Case("timm:resnet18", 224, 93, 89, _nchw(89, 93)),
    Case("convnext_atto", 224, 176, 167, _nchw(167, 176)),
    Case("tf_efficientnet_b0", 224, 329, 261, _nchw(261, 329)),
    Case("vit_tiny_patch16_224", 224, 263, 236, {"NCHW": 1, "TOKENS": 235, "non_spatial": 27}),
    Case("deit_tiny_distilled_patch16_224", 224, 264, 236, {"NCHW": 1, "TOKENS": 235, "non_spatial": 28},
         cli=True),
    Case("regnety_002", 224, 358, 286, _nchw(286, 358)),
]


def _layout_of(layers: list[dict]) -> dict[str, str]:
    return {r["name"]: r["layout"] for r in layers}


def _varies(cam: np.ndarray) -> bool:
    return float(cam.max() - cam.min()) > 0


def _check_vit_b_16(layers, cams, index):
    layout = _layout_of(layers)
    assert layout["conv_proj"] == "NCHW" and layers[index["conv_proj"]]["shape"] == [1, 768, 14, 14]
    for k in range(12):
        assert layout[f"encoder.layers.encoder_layer_{k}"] == "TOKENS:1+14x14"
        assert layout[f"encoder.layers.encoder_layer_{k}.mlp.0"] == "TOKENS:1+14x14"
    assert _varies(cams[index["encoder.layers.encoder_layer_11"]]) and _varies(cams[index["encoder.ln"]])


def _check_swin_t(layers, cams, index):
    layout = _layout_of(layers)
    assert layout["features.0.0"] == "NCHW" and layout["features.0.1"] == "NHWC"
    blocks = [r for r in layers if r["type"] == "SwinTransformerBlock"]
    assert len(blocks) == 12 and {r["layout"] for r in blocks} == {"NHWC"}
    assert layers[index["features.1.0"]]["shape"] == [1, 56, 56, 96]
    assert layers[index["features.7.1"]]["shape"] == [1, 7, 7, 768]
    assert layout["norm"] == "NHWC" and layout["permute"] == "NCHW" and layout["avgpool"] == "non_spatial"
    assert _varies(cams[index["features.7.1"]])


def _check_convnext_tiny(layers, cams, index):
    layout = _layout_of(layers)
    inner = {"block.0": "NCHW", "block.1": "NHWC", "block.2": "NHWC", "block.3": "NHWC", "block.4": "NHWC",
             "block.5": "NHWC", "block.6": "NCHW", "block": "NCHW"}
    for stage, blocks in ((1, 3), (3, 3), (5, 9), (7, 3)):
        for b in range(blocks):
            assert layout[f"features.{stage}.{b}"] == "NCHW"
            for part, expected in inner.items():
                assert layout[f"features.{stage}.{b}.{part}"] == expected
    assert layers[index["features.1.0.block.3"]]["shape"] == [1, 56, 56, 384]
    assert _varies(cams[index["features.7.2"]])


def _check_maxvit_t(layers, cams, index):
    layout = _layout_of(layers)
    first, last = "blocks.0.layers.0.layers", "blocks.3.layers.1.layers"
    assert layout[f"{first}.window_attention.partition_op"] == "WINDOWS:8x8@7"
    assert layout[f"{first}.window_attention.attn_layer"] == "WINDOWS:8x8@7"
    assert layout[f"{first}.grid_attention.partition_op"] == "WINDOWS:7x7@8"
    assert layout[f"{first}.grid_attention.attn_layer"] == "WINDOWS_T:7x7@8"
    assert layout[f"{first}.grid_attention.departition_op"] == layout[f"{first}.grid_attention"] == "NCHW"
    assert layout[f"{last}.window_attention.mlp_layer"] == "WINDOWS:1x1@7"
    assert layout[f"{last}.grid_attention.mlp_layer"] == "WINDOWS_T:7x7@1"
    for kind in ("WINDOWS:", "WINDOWS_T:"):
        assert any(_varies(cams[i]) for i, r in enumerate(layers) if r["layout"].startswith(kind))


def _check_timm_vit(prefix: int):
    def check(layers, cams, index):
        layout = _layout_of(layers)
        assert layout["patch_embed.proj"] == "NCHW" and layout["patch_embed"] == "TOKENS:0+14x14"
        for k in range(12):
            assert layout[f"blocks.{k}"] == f"TOKENS:{prefix}+14x14"
        # attention internals (batch, heads, tokens, head_dim) are not maps
        assert layout["blocks.0.attn.q_norm"] == "non_spatial"
        assert _varies(cams[index["blocks.11.norm1"]])
        # After the last attention only the class token(s) reach the head: patch tokens get no
        # gradient, so Grad-CAM is honestly zero there (for ViTs, look at the last block's norm1).
        assert float(np.abs(cams[index["norm"]]).max()) == 0.0

    return check


CHECKS = {
    "vit_b_16": _check_vit_b_16,
    "swin_t": _check_swin_t,
    "convnext_tiny": _check_convnext_tiny,
    "maxvit_t": _check_maxvit_t,
    "vit_tiny_patch16_224": _check_timm_vit(1),
    "deit_tiny_distilled_patch16_224": _check_timm_vit(2),
}


def _available_gb() -> float | None:
    """Memory the kernel can give without swapping (Linux), in GB; None where unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return None


def _params():
    for case in CASES:
        yield pytest.param(case, id=case.model, marks=[pytest.mark.slow] if case.heavy else [])


@pytest.mark.parametrize("case", list(_params()))
def test_end_to_end_with_random_weights(case: Case, tmp_path: Path):
    available = _available_gb()
    if case.memory_gb and available is not None and available < case.memory_gb:
        # On a shared machine a second suite may be running: skip rather than have the kernel kill both.
        pytest.skip(f"{case.model} needs ~{case.memory_gb:.0f} GB free memory, {available:.1f} GB available")
    out = tmp_path / "run"
    torch.manual_seed(0)
    if case.cli:
        assert main(["run", "sample:cat", "--model", case.model, "--weights", "none", "--method", case.method,
                     "--frame-width", "64", "--quiet", "--out", str(out)]) == 0
        assert (out / "report.html").is_file()
    else:
        result = camanim.animate(case.model, "sample:cat", weights="none", method=case.method)
        paths = result.save(out, report=False, style=FrameStyle(width=64))
        del result
        assert {k for k in paths if k.endswith("_mp4")} == {"local_mp4", "global_mp4", "side_by_side_mp4"}
        assert not (out / "report.html").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    layers = manifest["layers"]
    # the input size comes from the weights' own transforms (600 px for EfficientNet-B7, 299 for Inception)
    assert manifest["image"]["size"] == [case.size, case.size]
    name = case.model.removeprefix("timm:")
    if case.model in torchvision.models.list_models(module=torchvision.models):
        transforms = torchvision.models.get_model_weights(case.model).DEFAULT.transforms()
        assert list(transforms.crop_size) == [case.size]
    else:
        # timm's own metadata: the default pretrained tag's config, as timm's data pipeline resolves it
        assert name in timm.list_models()
        assert timm.models.get_pretrained_cfg(name).input_size == (3, case.size, case.size)
    assert len(layers) == case.layers
    assert sum(not r["non_spatial"] for r in layers) == case.spatial
    assert dict(Counter(r["layout"].split(":")[0] for r in layers)) == case.layouts
    for norm in ("local", "global"):
        assert len(list((out / "frames" / norm).glob("*.png"))) == case.layers
    cams = camanim.load_cams(out)
    assert cams.shape == (case.layers, case.size, case.size)
    spatial = [i for i, r in enumerate(layers) if not r["non_spatial"]]
    late = spatial[-max(1, len(spatial) // 4):]
    assert any(_varies(cams[i]) for i in late), "every late layer's CAM is constant"
    assert all(float(np.abs(cams[i]).max()) == 0.0 for i, r in enumerate(layers) if r["non_spatial"])
    assert manifest["videos"] == {n: f"camanim_{n}.mp4" for n in ("local", "global", "side_by_side")}
    for video in manifest["videos"].values():
        frames, _ = imageio_ffmpeg.count_frames_and_secs(str(out / video))
        assert frames == case.layers, video
    check = CHECKS.get(case.model)
    if check is not None:
        check(layers, cams, {r["name"]: i for i, r in enumerate(layers)})


MEDNIST = ["AbdomenCT", "BreastMRI", "CXR", "ChestCT", "Hand", "HeadCT"]


def test_monai_densenet_on_grey_64px(tmp_path):
    nets = pytest.importorskip("monai.networks.nets", reason="MONAI is an optional extra: pip install camanim[monai]")
    torch.manual_seed(0)
    net = nets.DenseNet121(spatial_dims=2, in_channels=1, out_channels=6).eval()
    prep = camanim.Preprocess(resize=64, crop=(64, 64), mean=(0.0,), std=(1.0,), channels=1)
    result = camanim.animate(net, "sample:camera", preprocess=prep, labels=MEDNIST)
    assert result.input_tensor.shape == (1, 1, 64, 64) and result.cams.shape == (494, 64, 64)
    assert sum(not r.non_spatial for r in result.layers) == 490
    assert result.layers[0].name == "features.conv0" and result.layers[0].shape == (1, 64, 32, 32)
    assert [r.name for r in result.layers if r.non_spatial] == [
        "class_layers.pool", "class_layers.flatten", "class_layers.out", "class_layers"]
    with torch.no_grad():
        probs = net(result.input_tensor).softmax(1)[0]
    assert result.target.index == int(probs.argmax()) and result.target.label == MEDNIST[result.target.index]
    spatial = [i for i, r in enumerate(result.layers) if not r.non_spatial]
    assert any(_varies(result.cams[i].numpy()) for i in spatial[-50:])
    paths = result.save(tmp_path / "mednist", fps=10, style=FrameStyle(width=64))
    assert len(list(paths["frames_local"].glob("*.png"))) == 494
    frames, _ = imageio_ffmpeg.count_frames_and_secs(str(paths["local_mp4"]))
    assert frames == 494
