"""A ybROAD result as files: ``ybroad.json`` and ``ybroad.csv`` (through :mod:`camanim.rundir`) and the ``ybroad.png`` plot."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..rundir import atomic_path, names, write_ybroad_tables
from .metric import YbRoad


def write_ybroad(out_dir: Path, result: YbRoad) -> dict[str, Path]:
    """Write ``ybroad.csv``, ``ybroad.json`` and ``ybroad.png`` into ``out_dir``.

    The CSV has one row per layer: ``index, name, defined``, then for each
    percentage ``morf_p, lerf_p, combined_p`` (trial means), then ``ybroad`` (mean
    over percentages) and ``ybroad_std`` (over trials); undefined values are empty.
    The JSON is :meth:`YbRoad.to_json_dict` (``null`` for undefined values). The
    PNG plots the curve over layers, a one-std band when ``trials > 1`` and the
    best layer.

    Args:
        out_dir: Directory, created if missing.
        result: What :func:`camanim.road.ybroad` returned.

    Returns:
        ``{"csv": path, "json": path, "png": path}``.

    Raises:
        OSError: ``out_dir`` cannot be created or written.
    """
    paths = write_ybroad_tables(Path(out_dir), result.to_json_dict())
    paths["png"] = Path(out_dir) / names.YBROAD_PNG
    with atomic_path(paths["png"]) as tmp:
        _write_png(tmp, result)
    return paths


def tick_positions(n: int, max_labels: int = 40) -> np.ndarray:
    """At most ``max_labels`` evenly spaced layer indices, always starting at 0."""
    step = max(1, math.ceil(n / max_labels))
    return np.arange(0, n, step)


def _short(name: str, limit: int = 28) -> str:
    # Keep the tail: it names the layer, the head repeats the block path.
    return name if len(name) <= limit else "…" + name[-(limit - 1):]


def _write_png(path: Path, result: YbRoad) -> None:
    # The figure API with the Agg canvas: no pyplot state, no GUI backend.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(result.layer_names)
    x = np.arange(n)
    mean = result.curve_mean.numpy()
    ticks = tick_positions(n)
    fig = Figure(figsize=(min(16.0, max(7.0, 4.0 + 0.25 * len(ticks))), 5.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.axhline(0.0, color="0.6", lw=0.8)
    if result.trials > 1:
        std = result.curve_std.numpy()
        ax.fill_between(x, mean - std, mean + std, color="#d4a017", alpha=0.3, lw=0,
                        label=f"±1 std over {result.trials} trials")
    ax.plot(x, mean, color="#b8860b", lw=1.5, marker="o" if n <= 80 else None, ms=3, label="ROAD per layer")
    undefined = np.flatnonzero(~result.defined.numpy())
    if undefined.size:
        ax.plot(undefined, np.zeros(undefined.size), ls="none", marker="x", ms=4, color="0.5",
                label="no score (non-spatial or constant CAM)")
    best = result.ybroad_max
    if best is not None:
        ax.plot([best.index], [best.value], marker="*", ms=15, color="crimson", ls="none",
                label=f"ybROAD_max {best.value:.3g}")
        # The best layer is the top of the curve: a fifth of the height is left free above it for its
        # name, pinned inside the axes so it never reaches the title; near either end it is aligned inwards.
        low, high = ax.get_ylim()
        ax.set_ylim(low, low + (high - low) / 0.8)
        ha = "left" if best.index < 0.15 * n else "right" if best.index > 0.85 * n else "center"
        ax.text(best.index, 0.97, _short(best.name, 40), transform=ax.get_xaxis_transform(), ha=ha, va="top",
                fontsize=8, color="crimson")
        title = f"ybROAD: max {best.value:.3g} at {_short(best.name, 40)}, mean {result.ybroad_mean:.3g}"
    else:
        title = "ybROAD: no layer has a defined ROAD score"
        ax.text(0.5, 0.5, "no spatial layer with a ranking CAM", transform=ax.transAxes, ha="center")
    pct = ", ".join(f"{p:g}" for p in result.percentiles)
    ax.set_title(f"{title}\n(removed {pct}% of pixels; noise {result.noise:g})", fontsize=10)
    ax.set_xticks(ticks)
    ax.set_xticklabels([_short(result.layer_names[i]) for i in ticks], rotation=90, fontsize=7)
    ax.set_xlim(-0.5, max(n - 0.5, 0.5))
    ax.set_xlabel("layer")
    ax.set_ylabel("ROAD = (C_LeRF − C_MoRF) / 2,  C = Δ " + ("probability" if result.score == "prob" else "logit"))
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.savefig(path, dpi=120, format="png")
