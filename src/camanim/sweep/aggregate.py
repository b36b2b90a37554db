"""Aggregates of a sweep, per (model, method): ybROAD across images, by :func:`camanim.road.ybroad_across`,
the very computation :func:`camanim.ybroad` does on a list of results, on the per-image scores the
workers computed (rebuilt from the tables bit for bit), so the numbers are the same.

Per (model, method): each layer's mean ROAD over images with its 95% Student-t interval, the chance
baseline's band, the best layer with its interval and the runner-ups not separable from it (the
verdict's candidates); methods ranked per model by their best layer's mean; and, when labels were
given, the same split by correct and incorrect predictions.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from ..road import RoadOptions, YbRoadAcross, ybroad_across
from ..road.stats import mean_ci
from .tables import IMAGES, LAYERS, read_table, ybroad_of


def _across(rows: dict[str, list[dict[str, Any]]], images: dict[str, dict[str, Any]], keys: list[str],
            road: RoadOptions) -> YbRoadAcross | None:
    keys = [k for k in keys if k in rows]
    if not keys:
        return None
    return ybroad_across([ybroad_of(images[k], rows[k], road) for k in keys], [images[k]["image"] for k in keys])


def sweep_groups(out: Path, road: RoadOptions) -> dict[tuple[str, str], dict[str, YbRoadAcross | None]]:
    """``{(model, method): {"all": across, "correct": ..., "incorrect": ...}}`` over the finished items
    (``correct``/``incorrect`` only where labels were given; None where no image falls in the split)."""
    images = {r["key"]: r for r in read_table(out, IMAGES).to_pylist() if r["status"] == "ok"}
    by_group: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in read_table(out, LAYERS).to_pylist():
        if r["key"] in images:
            by_group[(r["model"], r["method"])][r["key"]].append(r)
    out_groups: dict[tuple[str, str], dict[str, YbRoadAcross | None]] = {}
    for (model, method), rows in sorted(by_group.items()):
        keys = sorted(rows, key=lambda k: images[k]["image"])
        entry = {"all": _across(rows, images, keys, road)}
        if any(images[k]["correct"] is not None for k in keys):
            entry["correct"] = _across(rows, images, [k for k in keys if images[k]["correct"] is True], road)
            entry["incorrect"] = _across(rows, images, [k for k in keys if images[k]["correct"] is False], road)
        out_groups[(model, method)] = entry
    return out_groups


def _summary(across: YbRoadAcross | None) -> dict[str, Any] | None:
    if across is None:
        return None
    data = across.to_json_dict()
    for layer in data["layers"]:
        del layer["per_image"]
    data["n_images"] = int(across.scored.sum())  # the images the statistics are over (images_left_out: the rest)
    data["not_separable"] = not_separable(across, data["best"])
    return data


def not_separable(across: YbRoadAcross, best: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The candidates (first layer of each alias group, above the best's index excluded) whose paired
    difference from the best layer over images has a 95% interval reaching 0: not separable from it.

    Returns:
        ``[{"index", "name", "ybroad", "difference_ci"}]``, best-first order; empty with one image.
    """
    draws, b = across.scored_draws, None if best is None else best["index"]
    if b is None or draws.shape[0] < 2:
        return []
    mean, defined = across.mean, across.defined
    same_as = across.per_image[0].layer_same_as
    out = []
    for j in np.argsort(-np.where(defined, mean, -np.inf), kind="stable"):
        j = int(j)
        if j == b or not defined[j] or same_as[j] is not None:
            continue
        _, lo, hi = mean_ci(draws[:, b] - draws[:, j])
        if not float(lo) > 0:
            out.append({"index": j, "name": across.layer_names[j], "ybroad": float(mean[j]),
                        "difference_ci": [float(lo), float(hi)]})
    return out


def aggregates(out: Path, road: RoadOptions) -> dict[str, Any]:
    """The sweep's aggregates as plain JSON (``sweep.json``'s ``aggregates``).

    Returns:
        ``{"groups": [{"model", "method", "all": across JSON, "correct", "incorrect"}],
        "ranking": {model: [{"method", "best_layer", "ybroad", "ci"}, ...]},
        "unranked": {model: [{"method", "reason"}, ...]}}`` (``unranked``: the methods with no best layer, so
        not in the ranking, with the statement that says why); each across JSON is
        :meth:`camanim.road.YbRoadAcross.to_json_dict` (per layer ``ybroad``, ``ybroad_ci``; ``baseline``;
        ``best``; ``candidates``) without the per-image values (they are in the layers table).
    """
    groups = []
    ranking: dict[str, list[dict[str, Any]]] = defaultdict(list)
    unranked: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for (model, method), entry in sweep_groups(out, road).items():
        summary = {split: _summary(a) for split, a in entry.items()}
        groups.append({"model": model, "method": method, **summary})
        best = (summary["all"] or {}).get("best")
        if best:
            ranking[model].append({"method": method, "best_layer": best["name"], "ybroad": best["ybroad"],
                                   "ci": best.get("ci")})
        else:  # never dropped without a word: the ranking's reader learns why the method is missing
            unranked[model].append({"method": method, "reason": (summary["all"] or {}).get("statement")
                                    or "no image of this model finished"})
    for model in ranking:
        ranking[model].sort(key=lambda r: -r["ybroad"] if r["ybroad"] is not None and math.isfinite(r["ybroad"])
                            else math.inf)
    return {"groups": groups, "ranking": dict(ranking), "unranked": dict(unranked)}
