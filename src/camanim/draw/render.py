"""Frames: the input image with a CAM overlaid through a colormap, a caption and a position strip."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from ..trace import LayerRecord
from .colormaps import colormap_lut
from .fonts import load_font

CAPTION_H = 48
STRIP_H = 16
#: the image panel is at most this many times as tall as it is wide (and at most MAX_SIDE px): a
#: thinner picture (a 60 x 1 signal) is drawn smaller, its aspect kept, and padded
MAX_ASPECT = 4
#: the largest panel side: H.264 levels, JPEG (65,535 px) and PNG viewers all take it
MAX_SIDE = 4096
BACKGROUND = (24, 24, 28)


class LayerMaps(Protocol):
    """Maps of every layer (L, h, w), read a run of layers at a time: a tensor, or a
    :class:`camanim.compute.LayerView`."""

    def __getitem__(self, index: slice) -> torch.Tensor:
        """Layers ``index.start`` to ``index.stop - 1`` as one tensor."""

    def __len__(self) -> int:
        """L, the number of layers."""


class PanelPainter(Protocol):
    """Draws the image panel of a non-spatial layer (see :class:`camanim.draw.stripes.Stripes`)."""

    def panel(self, dim: np.ndarray, index: int, norm: str) -> np.ndarray:
        """The panel (h, w, 3) uint8 of record ``index`` over the dimmed image ``dim``."""


@dataclass(frozen=True)
class FrameStyle:
    """How frames look. ``width`` is the panel width in pixels (rounded to a multiple of 16)."""

    width: int = 320
    colormap: str = "jet"
    alpha: float = 0.5


def panel_size(image_hw: tuple[int, int], width: int) -> tuple[int, int]:
    """(height, width) of the image panel: ``width`` wide, aspect kept, both multiples of 16 (for H.264).

    The width is at most :data:`MAX_SIDE`, the height between 16 and ``MAX_ASPECT`` x the width (and
    :data:`MAX_SIDE`): any aspect ratio gives a frame every encoder takes (see :func:`panel_box`).
    """
    w = min(MAX_SIDE, max(16, int(round(width / 16)) * 16))
    h = max(16, int(round(w * image_hw[0] / image_hw[1] / 16)) * 16)
    return min(h, MAX_ASPECT * w, MAX_SIDE), w


def panel_box(image_hw: tuple[int, int], width: int) -> tuple[int, int, int, int]:
    """Where the picture lies in its panel: (top, left, height, width) in pixels.

    The whole panel, unless its height was capped (a very tall picture) or raised to 16 px (a very
    wide one): then the picture keeps its aspect, centred, and the rest is padding.
    """
    ph, pw = panel_size(image_hw, width)
    natural = pw * image_hw[0] / image_hw[1]
    if 16 <= natural <= ph + 8:  # only the rounding to 16 px: fill the panel, as always
        return 0, 0, ph, pw
    scale = min(pw / image_hw[1], ph / image_hw[0])
    h, w = max(1, int(round(image_hw[0] * scale))), max(1, int(round(image_hw[1] * scale)))
    return (ph - h) // 2, (pw - w) // 2, h, w


def _shorten(text: str, font, max_px: int) -> str:
    if font.getlength(text) <= max_px:
        return text
    while text and font.getlength("…" + text) > max_px:
        text = text[1:]
    return "…" + text


# Caption rows: line 1 (position and name, 14 px font at y=4) ends by row 22 and line 2 (type,
# shape, normalisation, 12 px font at y=26) starts below row 26, so the two lines are drawn as two
# separate bands: line 1 once per layer for all normalisations, line 2 once per distinct text.
_BAND = 24


def _band(width: int, height: int) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    img = Image.new("RGB", (width, height), (24, 24, 28))
    return img, ImageDraw.Draw(img)


def _caption_head(rec: LayerRecord, total: int, width: int, title: str = "") -> np.ndarray:
    """Line 1: the 1-based position (``1/265``, as the report and the CLI count), the layer's name
    (shortened from the left: its end is the specific part) and, right-aligned, ``title`` (the method
    and the class)."""
    img, draw = _band(width, _BAND)
    big, small = load_font(14), load_font(12)
    head = f"{rec.index + 1}/{total}"
    draw.text((6, 4), head, fill=(255, 214, 90), font=big)
    x0 = 12 + int(big.getlength(head))
    right = width - 6
    if title:
        title = _cut_end(title, small, max(0, (width - x0) // 2))
        right -= int(small.getlength(title))
        draw.text((right, 6), title, fill=(170, 200, 240), font=small)
        right -= 8
    draw.text((x0, 4), _shorten(rec.name, big, max(0, right - x0)), fill=(240, 240, 240), font=big)
    return np.asarray(img)


def _cut_end(text: str, font, max_px: int) -> str:
    """``text`` cut at its end (``Depthwise…``) to fit ``max_px``."""
    if font.getlength(text) <= max_px:
        return text
    while text and font.getlength(text + "…") > max_px:
        text = text[:-1]
    return text + "…" if text else ""


def _caption_line(rec: LayerRecord, norm: str, width: int = 10**6, method: str = "") -> str:
    """Line 2: the type (whole), the shape, the layout (or "non-spatial: no map", or "method not applicable here:
    no map" where the method flagged the layer) and the normalisation;
    what does not fit in ``width`` px is left out from the least telling end, never the type's start."""
    shape = "x".join(str(s) for s in rec.shape) if rec.shape else "-"
    # a method that does not apply to the layer (CAM off the classifier's input, LeGrad off a ViT block) left an
    # empty map: say so, or the frame reads as "no evidence here"
    # (the flag's kind is the method's name; the records are shared by the methods of one pass)
    flags = [rec.flags.get(method, "")] if method else list(rec.flags.values())
    not_applicable = any(str(v).startswith("not applicable") for v in flags)
    extra = ("non-spatial: no map" if rec.non_spatial else "method not applicable here: no map" if not_applicable
             else rec.layout)
    font = load_font(12)
    tried = [(rec.type, f"[{shape}]", extra, "·", norm), (rec.type, f"[{shape}]", "·", norm),
             (rec.type, "·", norm), (rec.type,)]
    if not_applicable:  # the note outlives the shape and the normalisation on a narrow frame
        tried = [tried[0], (rec.type, extra, "·", norm), (rec.type, extra), ("not applicable: no map",)]
    for parts in tried:
        line = "  ".join(p for p in parts if p)
        if font.getlength(line) <= width - 12:
            return line
    return _cut_end(rec.type, font, width - 12)


def _caption_detail(line: str, width: int) -> np.ndarray:
    img, draw = _band(width, CAPTION_H - _BAND)
    draw.text((6, 26 - _BAND), _cut_end(line, load_font(12), width - 12), fill=(170, 180, 190), font=load_font(12))
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


#: the colour of a target region's outline (a segmentation mask) on every frame
OUTLINE_COLOUR = (255, 255, 255)


def outline_pixels(region: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The (rows, cols) of the outline of a bool ``region`` (h, w) scaled (nearest) to ``size`` (H, W).

    A pixel is on the outline when it is in the region and one of its 4 neighbours is not (or it
    lies on the picture's edge), thickened by one pixel inwards so it shows at any panel width.
    """
    img = Image.fromarray(np.asarray(region, bool).astype(np.uint8) * 255)
    inside = np.asarray(img.resize((size[1], size[0]), Image.Resampling.NEAREST)) > 0
    edge = np.zeros_like(inside)
    for _ in range(2):
        padded = np.pad(inside & ~edge, 1, constant_values=False)
        interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
        edge |= inside & ~edge & ~interior
    return np.nonzero(edge)


#: the largest picture (values) :func:`blend_reproduces` checks; larger ones keep the table (a 4096 px
#: panel's check took 3.6 s and 0.7 GB more memory than the table)
_BLEND_CHECK_MOST = 2**22


def blend_reproduces(table: np.ndarray, colours: np.ndarray, alpha: float, size: tuple[int, int]) -> bool:
    """Whether OpenCV's ``addWeighted(image, 1 - alpha, colour, alpha, 0)`` on (h, w, 3) uint8 pictures
    of ``size`` gives ``table[c, level * 256 + value]`` for every channel, level and image value.

    ``table`` is computed in float32 and rounded half to even; OpenCV's rounding of the same sum agrees
    for most alphas (0.5 among them) but not all, and may differ between its vector and scalar code
    or between machines: so every one of the 3 x 65,536 cases is tried here, laid out exactly as the
    frames' pictures are (contiguous (h, w, 3) arrays), and the table is used wherever one differs.
    """
    try:
        import cv2
    except ImportError:  # pragma: no cover - opencv-python is a dependency
        return False
    if size[0] * size[1] * 3 > _BLEND_CHECK_MOST:
        return False  # checking a picture this large costs more than the table's drawing would
    levels, values = np.divmod(np.arange(65536), 256)
    image = np.repeat(values.astype(np.uint8)[:, None], 3, axis=1).ravel()  # (level, value) by channel
    colour = colours.reshape(256, 3)[levels].ravel()
    want = np.stack([table[c] for c in range(3)], axis=1).ravel()
    per = size[0] * size[1] * 3
    for start in range(0, want.size, per):
        take = np.arange(start, start + per) % want.size  # a last picture wraps round to the first cases
        got = cv2.addWeighted(image[take].reshape(*size, 3), 1.0 - alpha, colour[take].reshape(*size, 3), alpha, 0.0)
        if not np.array_equal(got.ravel(), want[take]):
            return False
    return True


class FrameRenderer:
    """Draws the frames of one run; what does not depend on the normalisation is made once.

    The panel is ``round((1 - alpha) * image + alpha * colormap(round(255 * cam)))`` per pixel and
    channel; with ``guided`` (the input's guided backpropagation, (H, W, C)) it is the Guided
    Grad-CAM picture ``deprocess(cam * guided)`` instead (:func:`guided_panels`, pytorch-grad-cam's). Every value of that formula is one of 256 levels x 3 channels x 256 image values, so
    it is tabulated once (in the same float32 arithmetic) and each frame is a table look-up. The
    caption's first line and the position strip are the same for every normalisation and are kept
    per layer; the caption's second line repeats across layers and is kept per text.
    """

    def __init__(self, image: np.ndarray, records: Sequence[LayerRecord], style: FrameStyle = FrameStyle(),
                 stripes: PanelPainter | None = None, title: str = "", guided: np.ndarray | None = None,
                 outline: np.ndarray | None = None, method: str = "") -> None:
        self.title = title  # the caption's right end: the method and the class
        self.method = method  # whose "not applicable" flags the captions show ("": any method's)
        self.guided = guided
        self.stripes = stripes  # non-spatial layers' 1-D evidence; None: the dimmed image alone
        self.records = list(records)
        self.total = len(self.records)
        self.ph, self.pw = panel_size(image.shape[:2], style.width)
        self.box = panel_box(image.shape[:2], style.width)  # (top, left, height, width) of the picture
        top, left, bh, bw = self.box
        base = np.asarray(Image.fromarray(image).resize((bw, bh), Image.Resampling.BILINEAR), dtype=np.float32)
        self.dim = np.empty((self.ph, self.pw, 3), np.uint8)
        self.dim[:] = BACKGROUND
        self.dim[top:top + bh, left:left + bw] = (base * 0.35 + 20).astype(np.uint8)
        a = float(style.alpha)
        lut = torch.from_numpy(colormap_lut(style.colormap).astype(np.float32))  # (256, 3)
        values = torch.arange(256, dtype=torch.float32)
        # table[channel, level * 256 + image value]
        self.table = ((1.0 - a) * values.view(1, 1, 256) + a * lut.T.reshape(3, 256, 1)).round_().clamp_(0, 255) \
            .to(torch.uint8).reshape(3, -1).numpy()
        self.base = [np.ascontiguousarray(base[..., c], dtype=np.int32) for c in range(3)]
        self.alpha = a
        self.picture = np.ascontiguousarray(base, dtype=np.uint8)  # (bh, bw, 3): the resized image
        self.colours = np.ascontiguousarray(colormap_lut(style.colormap).reshape(256, 1, 3))
        self.blend = blend_reproduces(self.table, self.colours, a, (bh, bw))
        self.non_spatial = np.array([r.non_spatial for r in self.records], bool)
        self._heads: dict[int, np.ndarray] = {}
        self._details: dict[str, np.ndarray] = {}
        self._strips: dict[int, np.ndarray] = {}
        self.outline = outline_pixels(outline, (bh, bw)) if outline is not None else None

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """Shape (height, width, 3) of every frame: the panel, then the caption and position strip below."""
        return self.ph + CAPTION_H + STRIP_H, self.pw, 3

    def _overlay(self, normed: torch.Tensor, out: np.ndarray, step: int = 8) -> None:
        """Panels for maps ``normed`` (n, h, w) in [0, 1] into ``out`` (n, ph, pw, 3) uint8."""
        n = normed.shape[0]
        top, left, bh, bw = self.box
        if (bh, bw) != (self.ph, self.pw):  # a padded picture: the padding is the background
            out[:] = BACKGROUND
            out = out[:, top:top + bh, left:left + bw]
        if self.guided is not None:
            pictures = guided_panels(normed.detach().float().cpu().clamp(0, 1).numpy(), self.guided)
            for k, picture in enumerate(pictures):
                out[k] = picture if picture.shape[:2] == (bh, bw) else \
                    np.asarray(Image.fromarray(picture).resize((bw, bh), Image.Resampling.BILINEAR))
            return
        # A few maps at a time, resized into one reused buffer: the same numbers as resizing the run
        # whole (each map is resized on its own), without a fresh (n, bh, bw) float array per run,
        # whose page faults cost more than the arithmetic; the look-up in NumPy or OpenCV (many small
        # multi-threaded torch ops stall on a busy machine).
        src = normed.detach().float().cpu().unsqueeze(1)
        m = min(step, n)
        resized = torch.empty((m, 1, bh, bw))
        x = resized.numpy()[:, 0]
        scaled = np.empty((m, bh, bw), np.float32)
        paint = self._blend if self.blend else self._look_up
        scratch: dict[str, np.ndarray] = {}
        for s in range(0, n, step):
            k = min(step, n - s)
            torch.ops.aten.upsample_bilinear2d.out(src[s:s + k], [bh, bw], False, out=resized[:k])
            resized[:k].clamp_(0, 1)
            np.rint(np.multiply(x[:k], np.float32(255.0), out=scaled[:k]), out=scaled[:k])
            paint(scaled[:k], out[s:s + k], scratch)

    def _look_up(self, levels: np.ndarray, out: np.ndarray, scratch: dict[str, np.ndarray]) -> None:
        """Panels for colour levels ``levels`` (k, bh, bw) (float32, whole numbers 0 to 255) into ``out``
        (k, bh, bw, 3): the table, ``table[c, level * 256 + image value]``."""
        k = levels.shape[0]
        if "row" not in scratch:
            scratch.update(row=np.empty(levels.shape, np.int32), index=np.empty(levels.shape, np.int32),
                           panel=np.empty(levels.shape, np.uint8))
        row, index, panel = scratch["row"][:k], scratch["index"][:k], scratch["panel"][:k]
        np.copyto(row, levels, casting="unsafe")
        np.multiply(row, 256, out=row)
        for c in range(3):
            np.add(row, self.base[c], out=index)
            np.take(self.table[c], index, out=panel, mode="clip")
            out[..., c] = panel

    def _blend(self, levels: np.ndarray, out: np.ndarray, scratch: dict[str, np.ndarray]) -> None:
        """What :meth:`_look_up` draws, through OpenCV: each level's colour (``LUT``), then
        ``addWeighted`` with the image, where :func:`blend_reproduces` found that it gives the table's
        every value (about half the time of the look-up)."""
        import cv2

        a = self.alpha
        if "level" not in scratch:
            scratch["level"] = np.empty(levels.shape, np.uint8)
        level = scratch["level"][:levels.shape[0]]
        np.copyto(level, levels, casting="unsafe")
        for j, target in enumerate(out):
            colour = cv2.LUT(cv2.cvtColor(level[j], cv2.COLOR_GRAY2RGB), self.colours)
            if target.flags.c_contiguous:
                done = cv2.addWeighted(self.picture, 1.0 - a, colour, a, 0.0, dst=target)
                if done is target:
                    continue
            else:
                done = cv2.addWeighted(self.picture, 1.0 - a, colour, a, 0.0)
            target[...] = done

    def _caption(self, i: int, norm: str) -> tuple[np.ndarray, np.ndarray]:
        rec = self.records[i]
        head = self._heads.get(i)
        if head is None:
            head = self._heads[i] = _caption_head(rec, self.total, self.pw, self.title)
        line = _caption_line(rec, norm, self.pw, self.method)
        detail = self._details.get(line)
        if detail is None:
            detail = self._details[line] = _caption_detail(line, self.pw)
        return head, detail

    def _strip(self, i: int) -> np.ndarray:
        strip = self._strips.get(i)
        if strip is None:
            strip = self._strips[i] = _strip(i, self.total, self.pw, self.non_spatial)
        return strip

    @property
    def frame_bytes(self) -> int:
        """The size of one frame in memory (height x width x 3 bytes)."""
        h, w, c = self.frame_shape
        return h * w * c

    def empty(self, count: int | None = None) -> np.ndarray:
        """An uninitialised (count, H, W, 3) uint8 array (``count``: all L frames) for :meth:`draw` to fill."""
        return np.empty((self.total if count is None else count, *self.frame_shape), np.uint8)

    def draw_range(self, normed: LayerMaps, norm: str, start: int, stop: int, out: np.ndarray) -> None:
        """Draw frames ``start`` to ``stop - 1`` into ``out`` (stop - start, H, W, 3), reading only those
        layers of ``normed`` (a tensor (L, h, w) in [0, 1], or a view read a run of layers at a time)."""
        ph = self.ph
        self._overlay(normed[start:stop], out[:, :ph])
        for k, i in enumerate(range(start, stop)):
            if self.non_spatial[i]:
                out[k, :ph] = self.dim if self.stripes is None else self.stripes.panel(self.dim, i, norm)
            head, detail = self._caption(i, norm)
            out[k, ph:ph + _BAND] = head
            out[k, ph + _BAND:ph + CAPTION_H] = detail
            out[k, ph + CAPTION_H:] = self._strip(i)
        if self.outline is not None:
            top, left = self.box[:2]
            out[:, top + self.outline[0], left + self.outline[1]] = OUTLINE_COLOUR

    def draw(self, normed: LayerMaps, norm: str, frames: np.ndarray, chunk: int = 64) -> Iterator[int]:
        """Fill ``frames`` in order, ``chunk`` at a time, yielding how many are done after each chunk.

        Frames before the yielded count are final, so other threads can encode them meanwhile.
        """
        for start in range(0, self.total, chunk):
            stop = min(start + chunk, self.total)
            self.draw_range(normed, norm, start, stop, frames[start:stop])
            yield stop

    def panels(self, normed: LayerMaps, norm: str, chunk: int = 64) -> np.ndarray:
        """Image panels only (L, ph, pw, 3) uint8, no caption or strip: the CAMs ``normed`` (L, h, w) in
        [0, 1] over the image, non-spatial layers as their stripe (or the dimmed image); ``normed`` is
        read ``chunk`` layers at a time."""
        out = np.empty((self.total, self.ph, self.pw, 3), np.uint8)
        for start in range(0, self.total, chunk):
            self._overlay(normed[start:start + chunk], out[start:start + chunk])
        for i in np.nonzero(self.non_spatial)[0]:
            out[i] = self.dim if self.stripes is None else self.stripes.panel(self.dim, int(i), norm)
        return out

    def render(self, normed: LayerMaps, norm: str, chunk: int = 64,
               progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Frames (L, H, W, 3) uint8 for CAMs already scaled to [0, 1] ([L, h, w])."""
        frames = self.empty()
        for done in self.draw(normed, norm, frames, chunk):
            if progress is not None:
                progress(done, self.total)
        return frames


def overlay(image: np.ndarray, cam: np.ndarray | torch.Tensor, colormap: str = "jet", alpha: float = 0.5
            ) -> np.ndarray:
    """One CAM over its image, caption-free: ``(1 - alpha) * image + alpha * colormap(cam)`` per pixel.

    The building block of pytorch-grad-cam's ``show_cam_on_image`` and torchcam's ``overlay_mask``.

    Args:
        image: (H, W, 3) uint8 RGB.
        cam: (h, w) map in [0, 1] (values outside are clipped); resized (bilinear) to H x W.
        colormap: a matplotlib colormap name.
        alpha: the weight of the colour map, in [0, 1].

    Returns:
        (H, W, 3) uint8 RGB.

    Raises:
        ValueError: ``image`` is not (H, W, 3) uint8, ``cam`` is not 2-D, ``alpha`` outside [0, 1], or
            an unknown colormap.
    """
    if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8):
        raise ValueError("overlay: image must be an (H, W, 3) uint8 array")
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"overlay: alpha must be in [0, 1], got {alpha}")
    x = torch.as_tensor(np.asarray(cam, dtype=np.float32) if not isinstance(cam, torch.Tensor) else cam).float()
    if x.ndim != 2:
        raise ValueError(f"overlay: cam must be 2-D (h, w), got shape {tuple(x.shape)}")
    x = F.interpolate(x.detach().cpu()[None, None], size=image.shape[:2], mode="bilinear", align_corners=False)[0, 0]
    level = np.rint(x.clamp_(0, 1).numpy() * np.float32(255.0)).astype(np.intp)
    colour = colormap_lut(colormap)[level].astype(np.float32)
    a = np.float32(alpha)
    return np.clip(np.rint((1 - a) * image.astype(np.float32) + a * colour), 0, 255).astype(np.uint8)


def render_frames(
    image: np.ndarray,
    normed: LayerMaps,
    records: Sequence[LayerRecord],
    norm: str,
    style: FrameStyle = FrameStyle(),
    chunk: int = 64,
    progress: Callable[[int, int], None] | None = None,
    stripes: PanelPainter | None = None,
    title: str = "",
    guided: np.ndarray | None = None,
    outline: np.ndarray | None = None,
    method: str = "",
) -> np.ndarray:
    """Frames (L, H, W, 3) uint8 for CAMs already scaled to [0, 1] ([L, h, w]) over ``image`` (h, w, 3);
    ``title`` (the method and the class) ends each caption's first line.

    ``guided``: the input's guided backpropagation (h, w, C): Guided Grad-CAM panels instead of overlays.
    ``outline``: a bool region (any size, scaled to the picture) whose outline every frame shows.
    ``method``: the method's name, whose "not applicable" flags the captions show ("": any method's).
    """
    return FrameRenderer(image, records, style, stripes, title, guided, outline, method).render(
        normed, norm, chunk=chunk, progress=progress)


def deprocess(image: np.ndarray) -> np.ndarray:
    """pytorch-grad-cam's ``deprocess_image``, called: centred, scaled to std 0.1 around 0.5, clipped, as uint8.

    Args:
        image: any float array, e.g. (H, W, C) guided backprop or CAM x guided backprop.

    Returns:
        The same shape, uint8.
    """
    from pytorch_grad_cam.utils.image import deprocess_image  # the reference's own (grad-cam is a dependency)

    return deprocess_image(image)


def guided_panels(normed: np.ndarray, guided: np.ndarray) -> np.ndarray:
    """Guided Grad-CAM pictures: ``deprocess(cam[..., None] * gb)`` per layer, (n, H, W, 3) uint8.

    Args:
        normed: (n, H, W) CAMs scaled to [0, 1], at the input's size.
        guided: (H, W, C) guided backpropagation of the same input (C = 3; any other channel count is
            averaged into grey).

    Returns:
        (n, H, W, 3) uint8.

    Raises:
        ValueError: If the maps and the guided image differ in size.
    """
    if normed.shape[1:] != guided.shape[:2]:
        raise ValueError(f"CAMs of size {normed.shape[1:]} and a guided image of size {guided.shape[:2]}")
    if guided.shape[2] != 3:
        guided = np.repeat(guided.mean(axis=2, keepdims=True), 3, axis=2)
    return np.stack([deprocess(m[..., None] * guided) for m in normed]) if len(normed) else \
        np.zeros((0, *guided.shape), np.uint8)
