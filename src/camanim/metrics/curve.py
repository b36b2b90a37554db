"""``LayerCurve``: one metric's value per layer, with its chance band where one applies."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .options import METRICS


@dataclass
class LayerCurve:
    """One faithfulness metric over the layers of a run.

    Attributes:
        metric: its name (:data:`camanim.metrics.METRICS`).
        layer_names: the L layers, in execution order.
        values: (L,) float64, NaN where the metric is undefined (a non-spatial layer, a constant CAM, a
            layer its method does not apply to).
        score: ``"prob"`` or ``"logit"``: what was read off the model.
        baseline: the metric for random pixel orders (one value per trial), or None where no chance
            baseline applies.
        band: (mean, low, high) of the chance baseline, a 95% prediction interval (Student t), or None.
        extra: per-metric details (deletion/insertion: the fractions and each layer's curve).
        same_as: per layer, the earlier layer whose CAM it shares (a container and its last child), or
            None; not given: every layer has its own CAM. Ties and correlations count each CAM once.
    """

    metric: str
    layer_names: list[str]
    values: np.ndarray
    score: str = "prob"
    baseline: np.ndarray | None = None
    band: tuple[float, float, float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    same_as: list[int | None] | None = None

    @property
    def higher_is_better(self) -> bool:
        """Whether a larger value means a more faithful CAM."""
        return METRICS[self.metric][1]

    @property
    def defined(self) -> np.ndarray:
        """(L,) bool: the layers the metric has a value for."""
        return np.isfinite(self.values)

    @property
    def distinct(self) -> np.ndarray:
        """(L,) bool: the layers with a CAM of their own (the first layer of each ``same_as`` group)."""
        if self.same_as is None:
            return np.ones(len(self.layer_names), dtype=bool)
        return np.array([s is None for s in self.same_as], dtype=bool)

    def best(self) -> dict[str, Any] | None:
        """The best layer ``{"index", "layer", "value", "ties", "scored"}``, or None if no layer has a value.

        ``scored`` counts the distinct CAMs with a value, ``ties`` those with the best value (a layer that
        shares another's CAM, ``same_as``, is not counted again). Of several tied CAMs the first layer is
        named; when every scored CAM ties (and there are two or more) no layer is best: ``index`` and
        ``layer`` are None.
        """
        own = self.defined & self.distinct
        if not own.any():
            return None
        vals = np.where(own, self.values, -np.inf if self.higher_is_better else np.inf)
        i = int(np.argmax(vals) if self.higher_is_better else np.argmin(vals))
        value = float(self.values[i])
        ties, scored = int((own & (self.values == value)).sum()), int(own.sum())
        if ties == scored > 1:
            return {"index": None, "layer": None, "value": value, "ties": ties, "scored": scored}
        return {"index": i, "layer": self.layer_names[i], "value": value, "ties": ties, "scored": scored}

    def to_json_dict(self) -> dict[str, Any]:
        """Plain JSON: the metric, its description, the direction, per-layer values (null: undefined), best (:meth:`best`), band."""
        def num(v: float) -> float | None:
            return None if not math.isfinite(float(v)) else float(v)

        out: dict[str, Any] = {
            "metric": self.metric, "description": METRICS[self.metric][0], "reference": METRICS[self.metric][2],
            "higher_is_better": self.higher_is_better, "score": self.score,
            "layers": [{"index": i, "name": n, "value": num(v)}
                       for i, (n, v) in enumerate(zip(self.layer_names, self.values))],
            "best": self.best(),
            "chance": None if self.band is None else {
                "mean": self.band[0], "low": self.band[1], "high": self.band[2],
                "trials": [float(v) for v in self.baseline] if self.baseline is not None else []},
        }
        out.update({k: v for k, v in self.extra.items() if k in ("fractions", "steps")})
        return out


def best_words(best: dict[str, Any] | None) -> str:
    """How a best layer (:meth:`LayerCurve.best`) reads: ``"layer3.1"``, ``"layer3.1 (2 layers tie)"``,
    ``"all layers tie"``, or ``"-"`` where no layer has a value."""
    if best is None:
        return "-"
    if best.get("layer") is None:
        return "all layers tie"
    ties = int(best.get("ties", 1))
    return best["layer"] + (f" ({ties} layers tie)" if ties > 1 else "")
