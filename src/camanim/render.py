"""Frames: the input image with a CAM overlaid through a colormap, a caption and a position strip."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from .trace import LayerRecord

CAPTION_H = 48
STRIP_H = 16


@dataclass(frozen=True)
class FrameStyle:
    """How frames look. ``width`` is the panel width in pixels (rounded to a multiple of 16)."""

    width: int = 320
    colormap: str = "jet"
    alpha: float = 0.5


@lru_cache(maxsize=16)
def colormap_lut(name: str) -> np.ndarray:
    """A (256, 3) uint8 lookup table for a matplotlib colormap name."""
    import matplotlib

    try:
        cmap = matplotlib.colormaps[name]
    except KeyError as exc:
        raise ValueError(f"unknown colormap '{name}': use a matplotlib name such as jet, viridis, inferno") from exc
    return (cmap(np.linspace(0.0, 1.0, 256))[:, :3] * 255.0 + 0.5).astype(np.uint8)


@lru_cache(maxsize=4)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


def panel_size(image_hw: tuple[int, int], width: int) -> tuple[int, int]:
    """(height, width) of the image panel: ``width`` wide, aspect kept, both multiples of 16 (for H.264)."""
    w = max(16, int(round(width / 16)) * 16)
    h = max(16, int(round(w * image_hw[0] / image_hw[1] / 16)) * 16)
    return h, w


def _shorten(text: str, font, max_px: int) -> str:
    if font.getlength(text) <= max_px:
        return text
    while text and font.getlength("…" + text) > max_px:
        text = text[1:]
    return "…" + text


def _caption(rec: LayerRecord, total: int, norm: str, width: int) -> np.ndarray:
    img = Image.new("RGB", (width, CAPTION_H), (24, 24, 28))
    draw = ImageDraw.Draw(img)
    big, small = _font(14), _font(12)
    head = f"{rec.index + 1}/{total}"
    draw.text((6, 4), head, fill=(255, 214, 90), font=big)
    x0 = 12 + int(big.getlength(head))
    draw.text((x0, 4), _shorten(rec.name, big, width - x0 - 6), fill=(240, 240, 240), font=big)
    shape = "x".join(str(s) for s in rec.shape) if rec.shape else "-"
    extra = "non-spatial: no map" if rec.non_spatial else rec.layout
    line = f"{rec.type}  [{shape}]  {extra}  ·  {norm}"
    draw.text((6, 26), _shorten(line, small, width - 12), fill=(170, 180, 190), font=small)
    return np.asarray(img)


def _strip(index: int, total: int, width: int, non_spatial: np.ndarray) -> np.ndarray:
    strip = np.empty((STRIP_H, width, 3), np.uint8)
    strip[:] = (24, 24, 28)
    strip[4:12, 4:width - 4] = (70, 72, 80)
    span = width - 8
    pos = 4 + int(round(index / max(total - 1, 1) * (span - 1)))
    strip[4:12, 4:pos + 1] = (120, 150, 200)
    # Non-spatial layers marked in grey along the bottom edge, so gaps in the video are explained.
    cols = 4 + np.round(np.nonzero(non_spatial)[0] / max(total - 1, 1) * (span - 1)).astype(int)
    strip[12:14, cols] = (150, 150, 150)
    strip[1:15, max(pos - 1, 0):pos + 2] = (255, 214, 90)
    return strip


def render_frames(
    image: np.ndarray,
    normed: torch.Tensor,
    records: Sequence[LayerRecord],
    norm: str,
    style: FrameStyle = FrameStyle(),
    chunk: int = 64,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Frames (L, H, W, 3) uint8 for CAMs already scaled to [0, 1] ([L, h, w]) over ``image`` (h, w, 3)."""
    total = len(records)
    ph, pw = panel_size(image.shape[:2], style.width)
    base = np.asarray(Image.fromarray(image).resize((pw, ph), Image.Resampling.BILINEAR), dtype=np.float32)
    base_t = torch.from_numpy(base)
    dim = torch.from_numpy((base * 0.35 + 20).astype(np.uint8))
    lut = torch.from_numpy(colormap_lut(style.colormap).astype(np.float32))
    frames = np.empty((total, ph + CAPTION_H + STRIP_H, pw, 3), np.uint8)
    ns = np.array([r.non_spatial for r in records], bool)
    a = float(style.alpha)
    for start in range(0, total, chunk):
        stop = min(start + chunk, total)
        x = normed[start:stop].detach().float().cpu().unsqueeze(1)
        x = F.interpolate(x, size=(ph, pw), mode="bilinear", align_corners=False).squeeze(1).clamp_(0, 1)
        heat = lut[(x * 255.0).round_().long()]
        over = ((1.0 - a) * base_t + a * heat).round_().clamp_(0, 255).to(torch.uint8).numpy()
        for j, i in enumerate(range(start, stop)):
            frames[i, :ph] = dim.numpy() if ns[i] else over[j]
            frames[i, ph:ph + CAPTION_H] = _caption(records[i], total, norm, pw)
            frames[i, ph + CAPTION_H:] = _strip(i, total, pw, ns)
        if progress is not None:
            progress(stop, total)
    return frames
