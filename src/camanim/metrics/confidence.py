"""Average Drop, Increase in Confidence (Chattopadhay et al. 2018, https://arxiv.org/abs/1710.11063) and
pytorch-grad-cam's CAM-times-image confidence change, per layer.

Each layer's map is min-max scaled to [0, 1] at input size, ``E = (m - min) / (max - min + 1e-8)``
(torchcam's normalisation), and the model scores ``E * x``: O. With Y the unperturbed score:
Average Drop ``max(0, Y - O) / (Y + 1e-7)`` (torchcam's ``ClassificationMetric``; pytorch-grad-cam's
``DropInConfidence`` is the unscaled ``max(0, Y - O)``), Increase in Confidence ``1 if O > Y else 0``,
and the confidence change ``O - Y`` (pytorch-grad-cam's ``CamMultImageConfidenceChange``). Layers
with the same scaled map share one forward; every layer's image goes through the model in shared
batches. No chance baseline applies (no random ranking enters these metrics).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .curve import LayerCurve
from .forwards import SharedForwards

EPS_SCALE = 1e-8
EPS_DROP = 1e-7


def scaled(cam: torch.Tensor) -> torch.Tensor:
    """A map min-max scaled to [0, 1]: ``(m - min) / (max - min + 1e-8)``."""
    m = cam.float() - cam.float().min()
    return m / (m.max() + EPS_SCALE)


def confidence_metrics(fw: SharedForwards, x: torch.Tensor, cams: torch.Tensor, names: Sequence[str],
                       defined: Sequence[bool], wanted: Sequence[str]) -> dict[str, LayerCurve]:
    """``avgdrop``, ``increase`` and ``cammult`` (those in ``wanted``) of every layer's CAM on one image.

    Args:
        fw: the shared forwards (model, target, score).
        x: the input (C, H, W).
        cams: (L, H, W) maps at input size.
        names: the L layer names.
        defined: per layer, whether it has a map (non-spatial and constant maps have none).
        wanted: which of the three to return.

    Returns:
        ``{name: LayerCurve}``, NaN where undefined.
    """
    original = fw.add(fw.key("original"), lambda: x)
    keys: dict[int, bytes] = {}
    for i in range(cams.shape[0]):
        if defined[i]:
            e = scaled(cams[i]).to(x.dtype)
            keys[i] = fw.add(fw.key("times", e), lambda e=e: x * e[None])
    fw.run()
    y = fw.score(original)
    out: dict[str, LayerCurve] = {}
    for name in wanted:
        values = np.full(len(names), np.nan)
        for i, k in keys.items():
            o = fw.score(k)
            values[i] = (max(0.0, y - o) / (y + EPS_DROP) if name == "avgdrop"
                         else float(o > y) if name == "increase" else o - y)
        out[name] = LayerCurve(name, list(names), values)
    return out
