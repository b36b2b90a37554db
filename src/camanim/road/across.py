"""ybROAD across images: one model, method and set of layers scored on several images.

Each image gives its own per-layer ybROAD (a :class:`~camanim.road.YbRoad`, mean over its trials);
across images the layer's score is the mean of those, with a 95% Student-t confidence interval over
the images, and the best layer is chosen by the same rules as on one image
(:func:`camanim.road.verdict.verdict`): aliases are one candidate, the chance band is the images'
random-ranking baselines, separability from the runner-up is the paired difference over images.

An image on which no layer has a score (every CAM of the method constant, e.g. a Grad-CAM whose weighted
activations are negative everywhere and all zero after its ReLU, often for a misclassified image's label) is left out of everything and named in a
warning; a layer without a score on some of the other images gets its mean and interval over the
images where it has one (``n_images``), is not a candidate for the best layer, and is counted in a warning.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from .metric import YbRoad, score_label
from .stats import CONFIDENCE, mean_ci, prediction_band
from .verdict import verdict


@dataclass
class YbRoadAcross:
    """ybROAD of one model, method and set of layers over N images.

    Attributes:
        per_image: each image's :class:`YbRoad` (same layers, score and percentages).
        image_names: one name per image (its source), for the words.
    """

    per_image: list[YbRoad]
    image_names: list[str]

    @property
    def layer_names(self) -> list[str]:
        """The layers' names (the same for every image)."""
        return self.per_image[0].layer_names

    @property
    def draws(self) -> np.ndarray:
        """``(N, L)`` each image's ybROAD per layer (its trial mean; NaN where undefined)."""
        return np.stack([r.curve_mean.numpy() for r in self.per_image])

    @property
    def scored(self) -> np.ndarray:
        """``(N,)`` images with a score on at least one layer; the others are left out of every statistic."""
        return np.array([bool(r.defined.any()) for r in self.per_image])

    @property
    def images_left_out(self) -> list[str]:
        """Names of the images on which no layer has a ROAD score (every CAM constant)."""
        return [name for name, used in zip(self.image_names, self.scored, strict=True) if not used]

    def _used(self) -> list[YbRoad]:
        scored = self.scored
        return [r for r, used in zip(self.per_image, scored, strict=True) if used] or self.per_image

    @property
    def scored_draws(self) -> np.ndarray:
        """``(S, L)`` :attr:`draws` of the scored images only (all images when none is scored)."""
        scored = self.scored
        return self.draws[scored] if scored.any() else self.draws

    @property
    def n_images(self) -> np.ndarray:
        """``(L,)`` how many of the scored images each layer has a score on."""
        return np.isfinite(self.scored_draws).sum(axis=0) if self.scored.any() else np.zeros(len(self.layer_names), int)

    @property
    def defined(self) -> np.ndarray:
        """``(L,)`` layers with a score on every scored image (the candidates for the best layer)."""
        if not self.scored.any():
            return np.zeros(len(self.layer_names), dtype=bool)
        return np.all(np.stack([r.defined.numpy() for r in self._used()]), axis=0)

    @property
    def mean(self) -> np.ndarray:
        """``(L,)`` per-layer mean over the scored images where the layer has a score (NaN where none)."""
        draws = self.scored_draws
        n = np.isfinite(draws).sum(axis=0)
        total = np.where(np.isfinite(draws), draws, 0.0).sum(axis=0)
        return np.where(n > 0, total / np.maximum(n, 1), math.nan)

    @property
    def ci(self) -> tuple[np.ndarray, np.ndarray]:
        """``((L,), (L,))`` the 95% confidence interval of :attr:`mean` over the images it is the mean of
        (NaN with fewer than two)."""
        draws = self.scored_draws
        lo, hi = np.full(draws.shape[1], math.nan), np.full(draws.shape[1], math.nan)
        for i in range(draws.shape[1]):
            column = draws[:, i][np.isfinite(draws[:, i])]
            if column.size:
                _, lo[i], hi[i] = mean_ci(column)
        return lo, hi

    @property
    def baseline_band(self) -> tuple[float, float, float]:
        """The chance band over the scored images ``(mean, low, high)``: a prediction interval of one
        image's random-ranking ROAD (each image's baseline is the mean of its rankings)."""
        values = np.array([b[0] for r in self._used() if (b := r.baseline_band) is not None])
        if values.size == 0:
            return math.nan, math.nan, math.nan
        return prediction_band(values)

    def verdict(self) -> dict[str, Any]:
        """The best candidate across the scored images, the top 5, the layers above the band, and the
        warnings (images left out, layers scored on fewer images, low confidence)."""
        first = self.per_image[0]
        scored, defined, n_images = self.scored, self.defined, self.n_images
        warnings = []
        left_out = self.images_left_out
        if left_out:
            warnings.append(f"{len(left_out)} of {len(self.per_image)} images left out ({_names(left_out)}): no layer "
                            "has a ROAD score there (every CAM of this method constant, e.g. all zero after its ReLU), so "
                            "they say nothing about which layer is faithful")
        if not scored.any():  # no draw at all: neither "one image: no interval" nor a best layer
            return {"above_baseline": [None] * len(self.layer_names), "candidates": [], "best": None,
                    "warnings": warnings,
                    "statement": f"no image has a ROAD score on any layer (0 of {len(self.per_image)} scored: every "
                                 "CAM of this method constant there), so no layer can be called best"}
        fewer = [i for i in range(len(defined)) if not defined[i] and n_images[i] > 0]
        if fewer:
            warnings.append(f"{len(fewer)} layer{'s' if len(fewer) > 1 else ''} ({_names([self.layer_names[i] for i in fewer])}) "
                            f"scored on fewer images than the {int(scored.sum())} scored (a constant CAM on the others): "
                            "their means are over those images (n_images) and they are not compared for the best layer")
        low = [name for name, r, used in zip(self.image_names, self.per_image, scored, strict=True)
               if used and r.chance_warning]
        if low:
            warnings.append(f"low confidence on {len(low)} of {int(scored.sum())} images ({_names(low)}"
                            "): the model gives the target a probability below "
                            "chance there (each image's own ybROAD says which threshold), so their ROAD measures a score the model does not hold")
        return verdict(self.scored_draws, defined.tolist(), self.layer_names, first.layer_same_as, first.layer_notes,
                       self.baseline_band, unit="images", warnings=warnings)

    def __repr__(self) -> str:
        best = self.best
        at = "best=none" if best is None else f"best={best['ybroad']:.3g} at layer {best['index'] + 1} ({best['name']})"
        return f"YbRoadAcross({len(self.per_image)} images, {len(self.layer_names)} layers, {at})"

    @property
    def best(self) -> dict[str, Any] | None:
        """The best candidate across images (see :meth:`verdict`), or None if no layer is defined."""
        return self.verdict()["best"]

    def to_json_dict(self) -> dict[str, Any]:
        """Plain JSON: settings, per layer ``ybroad`` (mean over images), ``ybroad_ci``, ``per_image``,
        ``above_baseline``; ``baseline`` (band), ``candidates``, ``best``, ``warnings``, ``statement``."""
        first = self.per_image[0]
        mean, (lo, hi), draws = self.mean, self.ci, self.draws
        judged, n_images = self.verdict(), self.n_images
        band = self.baseline_band

        def num(v: float) -> float | None:
            return float(v) if math.isfinite(v) else None

        return {
            "images": list(self.image_names),
            "percentiles": list(first.percentiles),
            "score": first.score,
            "score_label": score_label(first.score),
            "trials": first.trials,
            "confidence": CONFIDENCE,
            "interval_meaning": f"{CONFIDENCE:.0%} confidence interval of the mean over the images a layer has "
                                "a score on (n_images; Student t); null with one image",
            "images_left_out": self.images_left_out,
            "layers": [{"index": i, "name": name, "defined": bool(self.defined[i]), "n_images": int(n_images[i]),
                        "ybroad": num(mean[i]),
                        "ybroad_ci": [float(lo[i]), float(hi[i])] if math.isfinite(lo[i]) else None,
                        "per_image": [num(v) for v in draws[:, i]],
                        "above_baseline": judged["above_baseline"][i]}
                       for i, name in enumerate(self.layer_names)],
            "baseline": {"ybroad": num(band[0]), "band": [num(band[1]), num(band[2])]},
            "candidates": judged["candidates"],
            "best": judged["best"],
            "warnings": judged["warnings"],
            "statement": judged["statement"],
        }


def _names(names: Sequence[str]) -> str:
    return ", ".join(names[:5]) + (" …" if len(names) > 5 else "")


def ybroad_across(results: Sequence[YbRoad], image_names: Sequence[str] | None = None) -> YbRoadAcross:
    """Combine per-image ybROAD results of one model, method and set of layers.

    Args:
        results: one :class:`YbRoad` per image, all with the same layer names, score and percentages.
        image_names: one name per image (default ``image 0``, ``image 1``, ...).

    Returns:
        A :class:`YbRoadAcross`.

    Raises:
        InputError: no result, or results whose layers, score or percentages differ.
    """
    results = list(results)
    if not results:
        raise InputError("ybroad across images needs at least one scored result: pass a list of CamResults")
    first = results[0]
    for k, r in enumerate(results[1:], start=1):
        if r.layer_names != first.layer_names:
            raise InputError(f"result {k} has other layers than result 0 ({len(r.layer_names)} vs "
                             f"{len(first.layer_names)}): animate every image with the same model and --layers")
        if (r.score, tuple(r.percentiles)) != (first.score, tuple(first.percentiles)):
            raise InputError(f"result {k} was scored with other ROAD settings than result 0: score all with one "
                             "RoadOptions")
    names = [f"image {i}" for i in range(len(results))] if image_names is None else [str(n) for n in image_names]
    if len(names) != len(results):
        raise InputError(f"image_names: {len(names)} names for {len(results)} results; give one per result")
    return YbRoadAcross(per_image=results, image_names=names)
