"""The ybROAD strip under a filmstrip: the run's curve on the filmstrip's depth axis, the best layer marked.

Read from the run's ``ybroad.json`` (through :class:`camanim.rundir.RunView`): per layer
``ybroad`` (None where undefined) and ``ybroad_max`` (``value``, ``index``, ``name``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from .layout import Tile, depth_of
from .source import FigureRun


@dataclass(frozen=True)
class RoadCurve:
    """A run's ybROAD against depth.

    Attributes:
        depths: (L,) percent of depth of each layer.
        values: (L,) ybROAD per layer, NaN where undefined.
        best: the best layer's index, or None when no layer is defined.
        best_name: its name ("" when None).
    """

    depths: np.ndarray
    values: np.ndarray
    best: int | None
    best_name: str


def road_curve(run: FigureRun) -> RoadCurve:
    """The run's ybROAD curve from its ``ybroad.json``.

    Raises:
        InputError: the run was not scored, or its ybROAD does not match its layers.
    """
    data = run.view.ybroad
    if not data:
        how = ("camanim.ybroad(result) before result.figure(...), or with_road=False" if run.label == "result"
               else f"`camanim road {run.label}`, or drop --with-road")
        raise InputError(f"{run.label} has no ybROAD: score it first with {how}")
    layers = data.get("layers") or []
    count = len(run.layers)
    if len(layers) != count:
        raise InputError(f"{run.label}: ybroad.json scores {len(layers)} layers but the run has {count}; "
                         f"score it again with `camanim road {run.label}`")
    values = np.array([np.nan if layer.get("ybroad") is None else float(layer["ybroad"]) for layer in layers])
    best: dict[str, Any] | None = data.get("ybroad_max")
    index = int(best["index"]) if isinstance(best, dict) and best.get("index") is not None else None
    name = str(best.get("name", "")) if index is not None and isinstance(best, dict) else ""
    return RoadCurve(np.array([depth_of(i, count) for i in range(count)]), values, index, name)


def draw_road_strip(ax: Any, run: FigureRun, tiles: Sequence[Tile], xlim: tuple[float, float],
                    font_size: float) -> RoadCurve:
    """Draw ``run``'s ybROAD against depth on ``ax`` (x in percent, limits ``xlim``), mark the best
    layer, and draw a thin line at each tile's depth; returns the curve drawn.

    Raises:
        InputError: see :func:`road_curve`.
    """
    curve = road_curve(run)
    for tile in tiles:
        ax.axvline(tile.depth, color="#9ca3af", linewidth=0.5, linestyle=":", zorder=0)
    ax.plot(curve.depths, curve.values, color="#1f4e79", linewidth=1.0, marker="." if len(curve.depths) < 60 else None,
            markersize=2.5, label="ybROAD per layer")
    ax.axhline(0, color="#6b7280", linewidth=0.5)
    if curve.best is not None:
        x, y = curve.depths[curve.best], curve.values[curve.best]
        ax.plot([x], [y], marker="*", color="#c0392b", markersize=7, linestyle="none", label="best layer")
        right = x > (xlim[0] + xlim[1]) / 2
        ax.annotate(f"best: {curve.best_name} (#{curve.best}, {x:.0f}%)", (x, y), xytext=(-5 if right else 5, -3),
                    textcoords="offset points", fontsize=font_size - 1, color="#c0392b", va="top",
                    ha="right" if right else "left", annotation_clip=False)
    ax.set_xlim(*xlim)
    ax.set_xlabel("depth (% of layers)")
    ax.set_ylabel("ybROAD")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return curve
