"""Every requested metric beside ybROAD, for every layer of one image's CAMs, from shared forwards."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..road.metric import YbRoad
from .confidence import confidence_metrics
from .curve import LayerCurve
from .deletion import deletion_insertion
from .forwards import SharedForwards
from .options import MetricOptions


def layer_metrics(model: nn.Module, x: torch.Tensor, cams: torch.Tensor, target: int, layer_names: Sequence[str],
                  *, non_spatial: Sequence[bool] | None = None, options: MetricOptions | None = None,
                  probability: str = "softmax", output_key: str | int | None = None) -> dict[str, LayerCurve]:
    """The metrics in ``options.metrics`` for each layer's CAM on one image.

    All perturbed images of all layers and metrics go through one :class:`SharedForwards`: an image
    asked for by several layers (the same mask) is run once, and images are batched across layers.

    Args:
        model: the classifier.
        x: the model input (1, C, H, W) or (C, H, W).
        cams: (L, H, W) or (L, 1, H, W) raw CAMs at input size (a layer's scale does not matter).
        target: the explained class.
        layer_names: the L layer names.
        non_spatial: per layer, True where there is no map (left undefined).
        options: which metrics and how (:class:`MetricOptions`).
        probability: the run's probability (``softmax`` or ``sigmoid``) for ``score="prob"``.
        output_key: where the logits are in the model's output.

    Returns:
        ``{metric: LayerCurve}`` in the order asked for; a layer whose CAM is non-spatial, constant or
        not finite has NaN.

    Raises:
        ValueError: If the shapes of ``x``, ``cams`` and ``layer_names`` disagree.
    """
    opts = options or MetricOptions()
    img = x[0] if x.ndim == 4 else x
    maps = cams[:, 0] if cams.ndim == 4 else cams
    if maps.shape[0] != len(layer_names) or tuple(maps.shape[-2:]) != tuple(img.shape[-2:]):
        raise ValueError(f"cams {tuple(cams.shape)} do not match {len(layer_names)} layers of a "
                         f"{tuple(img.shape[-2:])} input")
    maps = maps.to(img.device)
    flags = [False] * len(layer_names) if non_spatial is None else [bool(f) for f in non_spatial]
    defined = [not flags[i] and bool(torch.isfinite(maps[i]).all()) and float(maps[i].max()) > float(maps[i].min())
               for i in range(len(layer_names))]
    fw = SharedForwards(model, target, opts.score, probability, opts.batch_size, output_key)
    out: dict[str, LayerCurve] = {}
    if "deletion" in opts.metrics or "insertion" in opts.metrics:
        dele, ins = deletion_insertion(fw, img, maps, layer_names, defined, steps=int(opts.steps),
                                       trials=int(opts.trials), seed=int(opts.seed))
        for c in (dele, ins):
            if c.metric in opts.metrics:
                out[c.metric] = c
    conf = [m for m in opts.metrics if m in ("avgdrop", "increase", "cammult")]
    if conf:
        out.update(confidence_metrics(fw, img, maps, layer_names, defined, conf))
    for c in out.values():
        c.score = opts.score
        c.extra["forwards"] = fw.forwards
        c.extra["images"] = fw.images
    return {m: out[m] for m in opts.metrics if m in out}


def road_curve(yb: YbRoad) -> LayerCurve:
    """ybROAD's trial-mean curve as a :class:`LayerCurve` named ``road`` (its chance band kept)."""
    values = yb.curve_mean.double().numpy().copy()
    values[~yb.defined.numpy()] = np.nan
    base = yb.baseline_curve
    return LayerCurve("road", list(yb.layer_names), values, score=yb.score,
                      baseline=None if base is None else np.asarray(base, dtype=np.float64), band=yb.baseline_band)


def summary(curves: Mapping[str, LayerCurve]) -> dict[str, Any]:
    """``{metric: {"best": ..., "higher_is_better": ...}}`` for the manifest."""
    return {m: {"best": c.best(), "higher_is_better": c.higher_is_better} for m, c in curves.items()}
