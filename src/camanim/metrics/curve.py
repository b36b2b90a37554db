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
    """

    metric: str
    layer_names: list[str]
    values: np.ndarray
    score: str = "prob"
    baseline: np.ndarray | None = None
    band: tuple[float, float, float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def higher_is_better(self) -> bool:
        """Whether a larger value means a more faithful CAM."""
        return METRICS[self.metric][1]

    @property
    def defined(self) -> np.ndarray:
        """(L,) bool: the layers the metric has a value for."""
        return np.isfinite(self.values)

    def best(self) -> dict[str, Any] | None:
        """The best layer ``{"index", "layer", "value"}`` (first of ties), or None if no layer has a value."""
        if not self.defined.any():
            return None
        vals = np.where(self.defined, self.values, -np.inf if self.higher_is_better else np.inf)
        i = int(np.argmax(vals) if self.higher_is_better else np.argmin(vals))
        return {"index": i, "layer": self.layer_names[i], "value": float(self.values[i])}

    def to_json_dict(self) -> dict[str, Any]:
        """Plain JSON: the metric, its description, the direction, per-layer values (null: undefined), best, band."""
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
