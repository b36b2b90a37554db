"""How the metrics agree: each metric's best layer and the Spearman rank correlation between metrics over layers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .curve import LayerCurve


def agreement(curves: Mapping[str, LayerCurve]) -> dict[str, Any]:
    """Each metric's best layer, and Spearman's rho between every two metrics over the layers both define.

    Each metric is oriented so that higher is better before ranking (deletion and Average Drop are
    negated), so a positive rho means the two metrics order the layers alike. Layers that share one CAM
    (``same_as``: a container and its last child) count once, as the first layer of the group: the
    correlations are over distinct CAMs.

    Args:
        curves: ``{metric: LayerCurve}`` over the same layers (ybROAD's curve included as ``road``).

    Returns:
        ``{"best": [{"metric", "layer", "index", "value", "ties", "scored", "higher_is_better"}] (see
        :meth:`LayerCurve.best`: ``layer`` None when every scored layer ties), "metrics": [names],
        "spearman": [[rho or None]] (a square matrix, None where fewer than 3 common distinct CAMs or a
        metric is constant there), "layers": [[n common distinct CAMs]]}``.
    """
    from scipy.stats import spearmanr  # scipy.stats takes a while to import: only when metrics are compared

    names = list(curves)
    best = []
    for n in names:
        b = curves[n].best()
        best.append({"metric": n, "higher_is_better": curves[n].higher_is_better,
                     **(b if b is not None else {"index": None, "layer": None, "value": None, "ties": 0, "scored": 0})})
    own = next((c.distinct for c in curves.values() if c.same_as is not None),
               np.ones(len(next(iter(curves.values())).layer_names) if curves else 0, dtype=bool))
    k = len(names)
    rho: list[list[float | None]] = [[None] * k for _ in range(k)]
    common: list[list[int]] = [[0] * k for _ in range(k)]
    for a in range(k):
        for b in range(k):
            va, vb = oriented(curves[names[a]]), oriented(curves[names[b]])
            both = np.isfinite(va) & np.isfinite(vb) & own
            common[a][b] = int(both.sum())
            if both.sum() >= 3 and np.ptp(va[both]) > 0 and np.ptp(vb[both]) > 0:
                rho[a][b] = float(spearmanr(va[both], vb[both]).statistic)
    return {"best": best, "metrics": names, "spearman": rho, "layers": common}


def oriented(curve: LayerCurve) -> np.ndarray:
    """The curve's values, negated when lower is better (so higher is better for every metric)."""
    v = np.asarray(curve.values, dtype=np.float64)
    return v if curve.higher_is_better else -v
