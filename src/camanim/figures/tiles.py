"""Clean tiles: a layer's normalised CAM over the input image with the run's colormap, no text baked in.

A spatial tile is ``round((1 - alpha) * image + alpha * colormap(round(255 * cam)))`` per pixel and
channel, at the CAM's resolution (the model's input size), with the image resized to it; the
same formula as the run's frames (:class:`camanim.draw.FrameRenderer`). A non-spatial layer is
drawn as in the frames: its 1-D evidence as a stripe across the dimmed image, scaled as
:class:`camanim.draw.Stripes` scales it (``local``: by its own maximum, ``global``: by the
maximum over the run's non-spatial layers).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from ..compute import UnitVectors
from ..draw import Stripes, colormap_lut
from .source import FigureRun

#: Rows of a non-spatial tile covered by its stripe, as fractions of the height (as in the frames).
STRIPE_BAND = (0.4, 0.6)


def tile_image(run: FigureRun) -> np.ndarray:
    """The run's display image resized (bilinear) to the CAMs' size (H, W, 3) uint8."""
    h, w = run.cams.shape[-2:]
    image = np.asarray(run.image)
    if image.shape[:2] == (h, w):
        return image.astype(np.uint8, copy=False)
    return np.asarray(Image.fromarray(image.astype(np.uint8)).resize((w, h), Image.Resampling.BILINEAR))


def overlay(image: np.ndarray, cam: np.ndarray, colormap: str, alpha: float) -> np.ndarray:
    """``cam`` (H, W) in [0, 1] over ``image`` (H, W, 3) uint8 through ``colormap``: (H, W, 3) uint8.

    Each pixel is ``round((1 - alpha) * image + alpha * lut[round(255 * cam)])`` in float32, as
    the run's frames are drawn.
    """
    lut = colormap_lut(colormap).astype(np.float32)
    level = np.rint(np.clip(cam, 0, 1).astype(np.float32) * np.float32(255)).astype(np.int64)
    a = np.float32(alpha)
    mixed = (np.float32(1) - a) * image.astype(np.float32) + a * lut[level]
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def dimmed(image: np.ndarray) -> np.ndarray:
    """The image as non-spatial frames show it: ``image * 0.35 + 20`` (uint8)."""
    return (image.astype(np.float32) * 0.35 + 20).astype(np.uint8)


def stripe_levels(run: FigureRun, index: int, norm: str, width: int) -> np.ndarray | None:
    """Colormap levels (width,) int64 in 0-255 of layer ``index``'s 1-D evidence, or None if the run has none.

    The vector (after ReLU) is stretched (few units) or max-pooled (many units) to ``width`` columns.
    """
    if run.vectors is None or index >= len(run.vectors) or run.vectors[index] is None:
        return None
    import torch

    stripes = Stripes(UnitVectors([None if v is None else torch.from_numpy(np.asarray(v, np.float32))
                                   for v in run.vectors], run.vector_kind or "act x grad"), run.colormap)
    values = stripes.values[index]
    if values is None or not values.size:
        return None
    scale = stripes.global_max if norm == "global" else float(values.max())
    n = values.size
    if n <= width:
        cols = values[np.minimum((np.arange(width) * n) // width, n - 1)]
    else:
        cols = np.maximum.reduceat(values, (np.arange(width) * n) // width)
    return np.zeros(width, np.int64) if scale <= 0 else np.rint(np.clip(cols / scale, 0, 1) * 255).astype(np.int64)


def stripe_tile(run: FigureRun, index: int, norm: str) -> tuple[np.ndarray, bool]:
    """A non-spatial layer's tile (H, W, 3) uint8 and whether it shows a stripe (False: no vector saved)."""
    dim = dimmed(tile_image(run))
    h, w = dim.shape[:2]
    levels = stripe_levels(run, index, norm, w)
    if levels is None:
        return dim, False
    top, bottom = int(h * STRIPE_BAND[0]), max(int(h * STRIPE_BAND[1]), int(h * STRIPE_BAND[0]) + 4)
    dim[top:bottom] = colormap_lut(run.colormap)[levels][None, :, :]
    return dim, True


def cam_tile(run: FigureRun, index: int, norm: str) -> np.ndarray:
    """The clean tile (H, W, 3) uint8 of a spatial layer ``index`` for normalisation ``norm``.

    Raises:
        InputError: an unknown ``norm``.
    """
    return overlay(tile_image(run), run.normalised(norm)[index], run.colormap, run.alpha)
