"""Every requested metric beside ybROAD, for every layer of one image's CAMs, from shared forwards."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..road.metric import YbRoad
from .agreement import agreement
from .confidence import confidence_metrics
from .curve import LayerCurve
from .deletion import deletion_insertion
from .forwards import SharedForwards
from .options import MetricOptions


def layer_metrics(model: nn.Module, x: torch.Tensor, cams: torch.Tensor | Sequence[torch.Tensor | None], target: int,
                  layer_names: Sequence[str], *, non_spatial: Sequence[bool] | None = None,
                  same_as: Sequence[int | None] | None = None, options: MetricOptions | None = None,
                  probability: str = "softmax", output_key: str | int | None = None) -> dict[str, LayerCurve]:
    """The metrics in ``options.metrics`` for each layer's CAM on one image.

    All perturbed images of all layers and metrics go through one :class:`SharedForwards`: an image
    asked for by several layers (the same mask) is run once, and images are batched across layers.

    Args:
        model: the classifier.
        x: the model input (1, C, H, W) or (C, H, W).
        cams: the raw CAMs at layer resolution, one (h, w) map per layer (None: no map), as the
            references get them: each is min-max scaled at that resolution and then resized to the
            input (:func:`camanim.metrics.forwards.at_input`); or (L, H, W) / (L, 1, H, W) at input
            size (a CAM that only exists there). A layer's scale does not matter.
        target: the explained class.
        layer_names: the L layer names.
        non_spatial: per layer, True where there is no map (left undefined).
        same_as: per layer, the earlier layer whose CAM it shares, or None (kept on the curves: best
            layers and correlations count each CAM once).
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
    if isinstance(cams, torch.Tensor):
        if cams.ndim not in (3, 4) or tuple(cams.shape[-2:]) != tuple(img.shape[-2:]):
            raise ValueError(f"cams {tuple(cams.shape)} do not match {len(layer_names)} layers of a "
                             f"{tuple(img.shape[-2:])} input")
        cams = list(cams[:, 0] if cams.ndim == 4 else cams)
    maps = [None if m is None else m.reshape(m.shape[-2:]) if m.ndim > 2 and m.numel() == m.shape[-2:].numel() else m
            for m in cams]  # (1, h, w) -> (h, w)
    if len(maps) != len(layer_names) or any(m is not None and m.ndim != 2 for m in maps):
        raise ValueError(f"cams ({len(maps)} maps) do not match {len(layer_names)} layers of 2-D maps")
    flags = [False] * len(layer_names) if non_spatial is None else [bool(f) for f in non_spatial]
    defined = [not flags[i] and maps[i] is not None and bool(torch.isfinite(maps[i]).all())
               and float(maps[i].max()) > float(maps[i].min()) for i in range(len(layer_names))]
    maps = [m if m is not None else torch.zeros(1, 1) for m in maps]
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
        c.same_as = None if same_as is None else list(same_as)
        c.extra["forwards"] = fw.forwards
        c.extra["images"] = fw.images
    return {m: out[m] for m in opts.metrics if m in out}


def road_curve(yb: YbRoad) -> LayerCurve:
    """ybROAD's trial-mean curve as a :class:`LayerCurve` named ``road`` (its chance band kept)."""
    values = yb.curve_mean.double().numpy().copy()
    values[~yb.defined.numpy()] = np.nan
    base = yb.baseline_curve
    return LayerCurve("road", list(yb.layer_names), values, score=yb.score,
                      baseline=None if base is None else np.asarray(base, dtype=np.float64), band=yb.baseline_band,
                      same_as=None if yb.same_as is None else list(yb.same_as))


def summary(curves: Mapping[str, LayerCurve]) -> dict[str, Any]:
    """``{metric: {"best": ..., "higher_is_better": ...}}`` for the manifest."""
    return {m: {"best": c.best(), "higher_is_better": c.higher_is_better} for m, c in curves.items()}


def with_road(entry: Mapping[str, Any], yb: YbRoad) -> dict[str, Any]:
    """A saved manifest ``metrics`` entry with ybROAD's curve replaced by ``yb`` (``camanim road OUT``): its
    values and chance band, and the agreement recomputed from them and the other metrics' saved values.

    Args:
        entry: the manifest's ``metrics`` entry (``values``, ``higher_is_better``, ``chance``, ``agreement``).
        yb: the new ybROAD of the run.

    Returns:
        A new entry (``files`` kept); its ``agreement`` is what ``metrics_agreement.*`` should hold.
    """
    road = road_curve(yb)
    same = None if yb.same_as is None else list(yb.same_as)
    curves = {"road": road}
    for m, values in (entry.get("values") or {}).items():
        if m != "road":
            curves[m] = LayerCurve(m, list(yb.layer_names),
                                   np.array([np.nan if v is None else float(v) for v in values]), same_as=same)
    out = dict(entry)
    out["values"] = {m: [None if not np.isfinite(v) else float(v) for v in c.values] for m, c in curves.items()}
    out["higher_is_better"] = {**dict(entry.get("higher_is_better") or {}), "road": road.higher_is_better}
    out["chance"] = {**dict(entry.get("chance") or {}), "road": None if road.band is None else [float(b) for b in road.band]}
    out["agreement"] = agreement(curves)
    return out
