"""Non-spatial layers drawn honestly: their 1-D evidence as a labelled stripe over the dimmed image.

See :mod:`camanim.compute.vectors` for what the evidence is.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from ..compute import UnitVectors
from .colormaps import colormap_lut
from .fonts import load_font


def _bin_max(values: np.ndarray, cols: int) -> np.ndarray:
    """``values`` stretched (few units) or max-pooled (many units) to ``cols`` columns."""
    n = len(values)
    if n <= cols:
        return values[np.minimum((np.arange(cols) * n) // cols, n - 1)]
    edges = (np.arange(cols) * n) // cols
    return np.maximum.reduceat(values, edges)


class Stripes:
    """Draws each non-spatial layer's vector as a labelled stripe over the dimmed image panel.

    ``local`` scales a stripe by its own maximum, ``global`` by the maximum over all of them.
    """

    def __init__(self, vectors: UnitVectors, colormap: str = "jet") -> None:
        self.kind = vectors.kind
        self.values = [None if v is None else v.clamp(min=0).numpy() for v in vectors.values]
        self.global_max = max((float(v.max()) for v in self.values if v is not None and v.size), default=0.0)
        self.lut = colormap_lut(colormap)

    def panel(self, dim: np.ndarray, index: int, norm: str) -> np.ndarray:
        """The panel (h, w, 3) uint8 for record ``index``: ``dim`` with the stripe and its label."""
        values = self.values[index] if index < len(self.values) else None
        if values is None or not values.size:
            return dim
        h, w = dim.shape[:2]
        out = dim.copy()
        top, bottom = int(h * 0.4), max(int(h * 0.6), int(h * 0.4) + 4)
        left, right = 3, w - 3
        scale = self.global_max if norm == "global" else float(values.max())
        cols = _bin_max(values, right - left)
        level = np.zeros(cols.shape, np.int64) if scale <= 0 else np.rint(np.clip(cols / scale, 0, 1) * 255)
        out[top:bottom, left:right] = self.lut[level.astype(np.int64)][None, :, :]
        out[top - 1, left - 1:right + 1] = out[bottom, left - 1:right + 1] = 200
        out[top - 1:bottom + 1, left - 1] = out[top - 1:bottom + 1, right] = 200
        img = Image.fromarray(out)
        draw = ImageDraw.Draw(img)
        font = load_font(11 if w >= 160 else 9)
        peak = int(values.argmax())
        draw.text((4, max(top - 16, 1)), f"1-D layer, not a location: {self.kind}", fill=(235, 235, 235), font=font)
        draw.text((4, bottom + 3), f"{values.size} units, peak #{peak}", fill=(235, 235, 235), font=font)
        return np.asarray(img)
