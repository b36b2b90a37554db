"""Average Drop, Increase in Confidence (Chattopadhay et al. 2018, https://arxiv.org/abs/1710.11063) and
pytorch-grad-cam's CAM-times-image confidence change, per layer.

Each layer's map is scaled as each reference scales it: min-max to [0, 1] at the layer's resolution,
``(m - min) / (max - min + eps)``, then resized to the input, bilinear with pixel centres aligned
(``F.interpolate(..., mode="bilinear", align_corners=False)``). torchcam's extractors normalise with
``eps = 1e-8`` and its ``ClassificationMetric`` resizes so; pytorch-grad-cam's ``scale_cam_image`` uses
``eps = 1e-7`` and ``cv2.resize`` (``INTER_LINEAR``, the same half-pixel bilinear), and its CAM objects
(``BaseCAM.aggregate_multi_layers``) min-max scale the resized map once more, so ``cammult`` gets that
second scaling too: it equals ``CamMultImageConfidenceChange`` on what ``GradCAM(model, [layer])`` returns. Resizing after
scaling matters: bilinear upsampling does not keep the map's extremes. The model scores ``E * x``: O.
With Y the unperturbed score: Average Drop ``max(0, Y - O) / (Y + 1e-7)`` and Increase in Confidence
``1 if O > Y else 0`` (torchcam's ``ClassificationMetric``, torchcam's E; pytorch-grad-cam's
``DropInConfidence`` is the unscaled ``max(0, Y - O)``), and the confidence change ``O - Y``
(pytorch-grad-cam's ``CamMultImageConfidenceChange``, pytorch-grad-cam's E). Layers with the same
scaled map share one forward; every layer's image goes through the model in shared batches. No chance
baseline applies (no random ranking enters these metrics).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .curve import LayerCurve
from .forwards import EPS_GRAD_CAM, EPS_SCALE, SharedForwards, at_input, scaled

EPS_DROP = 1e-7


def confidence_metrics(fw: SharedForwards, x: torch.Tensor, cams: Sequence[torch.Tensor], names: Sequence[str],
                       defined: Sequence[bool], wanted: Sequence[str]) -> dict[str, LayerCurve]:
    """``avgdrop``, ``increase`` and ``cammult`` (those in ``wanted``) of every layer's CAM on one image.

    Args:
        fw: the shared forwards (model, target, score).
        x: the input (C, H, W).
        cams: L maps (h, w), each at its layer's resolution (or all at input size).
        names: the L layer names.
        defined: per layer, whether it has a map (non-spatial and constant maps have none).
        wanted: which of the three to return.

    Returns:
        ``{name: LayerCurve}``, NaN where undefined.
    """
    original = fw.add(fw.key("original"), lambda: x)
    size = x.shape[-2:]
    keys: dict[str, dict[int, bytes]] = {"torchcam": {}, "grad-cam": {}}
    for i in range(len(cams)):
        if defined[i]:
            for ref, eps, needed in (("torchcam", EPS_SCALE, {"avgdrop", "increase"}),
                                     ("grad-cam", EPS_GRAD_CAM, {"cammult"})):
                if needed & set(wanted):
                    e = at_input(cams[i].to(x.device), size, eps)
                    if ref == "grad-cam":  # its CAM objects scale once more at input size (aggregate_multi_layers)
                        e = scaled(e, eps)
                    e = e.to(x.dtype)
                    keys[ref][i] = fw.add(fw.key("times", e), lambda e=e: x * e[None])
    fw.run()
    y = fw.score(original)
    out: dict[str, LayerCurve] = {}
    for name in wanted:
        values = np.full(len(names), np.nan)
        for i, k in keys["grad-cam" if name == "cammult" else "torchcam"].items():
            o = fw.score(k)
            values[i] = (max(0.0, y - o) / (y + EPS_DROP) if name == "avgdrop"
                         else float(o > y) if name == "increase" else o - y)
        out[name] = LayerCurve(name, list(names), values)
    return out
