"""Non-spatial layers (global pooling, flatten, ``Linear``, the classifier): shown as stripes, or left out.

Such a layer has no 2-D map, yet the paper shows it: its units light up as vertical lines
over the image ("not informative, but not incorrect"). camanim draws the same evidence
honestly instead: the layer's 1-D vector, activation x gradient per unit (the unit's
first-order contribution to the target score; the activation alone for gradient-free
methods), after ReLU like every CAM, as a coloured stripe across the dimmed image, with a
label that says it is not a location. ``--skip-non-spatial`` drops these layers instead.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw

from .render import _font
from .trace import LayerRecord, Trace


@dataclass
class UnitVectors:
    """Per record, the non-spatial layer's 1-D evidence for image 0 (None for spatial layers).

    Attributes:
        values: flattened ``activation * gradient`` (or ``activation``) per record, float32 on the CPU.
        kind: what the values are, for the frame's label.
    """

    values: list[torch.Tensor | None]
    kind: str = "act x grad"

    def subset(self, keep: Sequence[int]) -> UnitVectors:
        return UnitVectors([self.values[i] for i in keep], self.kind)


def unit_vectors(trace: Trace, row: int = 0) -> UnitVectors:
    """The 1-D evidence of every non-spatial record of ``trace`` that kept an activation, for batch row ``row``."""
    values: list[torch.Tensor | None] = []
    with_grad = bool(trace.gradients)
    for i, rec in enumerate(trace.records):
        act = trace.activations[i] if rec.non_spatial and i < len(trace.activations) else None
        if act is None or act.ndim < 2 or act.shape[0] <= row:
            values.append(None)
            continue
        grad = trace.gradients[i] if with_grad else None
        v = act[row] * grad[row] if grad is not None and grad.shape == act.shape else act[row]
        values.append(v.detach().flatten().float().cpu())
    return UnitVectors(values, "act x grad" if with_grad else "activation")


def drop_non_spatial(records: Sequence[LayerRecord]) -> tuple[list[int], list[LayerRecord]]:
    """The spatial records, renumbered (``index`` and ``same_as``), and their old positions."""
    keep = [i for i, r in enumerate(records) if not r.non_spatial]
    new_index = {old: new for new, old in enumerate(keep)}
    kept = [dataclasses.replace(records[old], index=new,
                                same_as=new_index.get(records[old].same_as) if records[old].same_as is not None
                                else None)
            for new, old in enumerate(keep)]
    return keep, kept


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
        from .render import colormap_lut

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
        font = _font(11 if w >= 160 else 9)
        peak = int(values.argmax())
        draw.text((4, max(top - 16, 1)), f"1-D layer, not a location: {self.kind}", fill=(235, 235, 235), font=font)
        draw.text((4, bottom + 3), f"{values.size} units, peak #{peak}", fill=(235, 235, 235), font=font)
        return np.asarray(img)
