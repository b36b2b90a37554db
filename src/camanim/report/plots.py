"""The report's PNG plots (matplotlib): parameters and time per layer, the paper's complexity figure."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ..rundir import RunView, atomic_path, names
from .html import fmt_number, numbers


def layer_axis(ax: Any, layers: list[dict[str, Any]], max_labels: int = 36) -> None:
    """Thinned, rotated layer names: every layer cannot be labelled in DenseNet161."""
    n = len(layers)
    ticks = sorted(set(np.linspace(0, n - 1, min(n, max_labels)).round().astype(int).tolist()))
    labels = []
    for i in ticks:
        name = str(layers[i].get("name", ""))
        # The tail tells deep names apart ("...denselayer12.conv2"); their heads are all alike.
        labels.append(f"{i} {name if len(name) <= 28 else '…' + name[-27:]}")
    ax.set_xticks(ticks)
    # parse_math off: a layer name with "$" must stay text, not become mathtext.
    ax.set_xticklabels(labels, rotation=60, ha="right", rotation_mode="anchor", fontsize=7, parse_math=False)
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_xlabel("layer (execution order)")


def _plot_bars(run: RunView, path: Path, values: list[float | None], *, log: bool, ylabel: str,
               title: str, color: str) -> None:
    from matplotlib import rc_context
    from matplotlib.collections import PolyCollection
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    with rc_context({"font.size": 9}):
        fig = Figure(figsize=(12, 5), dpi=120, layout="constrained")
        ax = fig.add_subplot()
        heights = np.array([np.nan if v is None else v for v in values], dtype=float)
        x = np.arange(len(values))
        if log:
            heights[heights < 1] = np.nan
        has_bars = bool(np.isfinite(heights).any())
        # Bars of a log chart start at 1 (10^0), as in the report's SVG chart. One collection of
        # rectangles, not one patch per bar (``ax.bar``): the same bars, drawn in a fraction of the time.
        bottom, half = (1.0 if log else 0.0), (0.85 if len(values) < 150 else 1.0) / 2
        shown = np.isfinite(heights)
        left, top = x[shown] - half, heights[shown]
        verts = np.stack([np.stack([left, np.full_like(top, bottom)], 1), np.stack([left, top], 1),
                          np.stack([left + 2 * half, top], 1), np.stack([left + 2 * half, np.full_like(top, bottom)], 1)],
                         axis=1)
        bars = PolyCollection(verts, facecolors=color, edgecolors="none", linewidths=0)
        bars.sticky_edges.y.append(bottom)
        ax.add_collection(bars, autolim=True)
        ax.autoscale_view()
        if log and has_bars:
            ax.set_yscale("log")
            ax.set_ylim(bottom=1, top=10.0 ** max(1, math.ceil(math.log10(float(np.nanmax(heights))))))
            ax.yaxis.set_major_locator(LogLocator(base=10))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: fmt_number(v)))
            ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_ylabel(ylabel)
        ax.set_title(title, loc="left", fontsize=11, parse_math=False)
        ax.grid(axis="y", color="#e5e7eb", linewidth=0.8)
        ax.set_axisbelow(True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        layer_axis(ax, run.layers)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")


def write_plots(run: RunView) -> tuple[Path, Path]:
    """Write the run folder's PNG bar plots: parameters per layer (log scale) and time per layer (ms).

    Args:
        run: a run with a folder (``run.path`` is not None).

    Returns:
        The paths of the parameters plot and the time plot.
    """
    params = numbers(run.layers, "params")
    zero = sum(1 for p in params if not p)
    params_path = run.path / names.PARAMS_PLOT
    _plot_bars(
        run, params_path, params, log=True, ylabel="parameters (log scale)", color="#4c72b0",
        title=f"{run.model_name}: parameters per layer ({zero} of {len(params)} layers without parameters not drawn)",
    )
    ms = [None if s is None else s * 1000 for s in numbers(run.layers, "seconds")]
    total = sum(v for v in ms if v is not None)
    time_path = run.path / names.TIME_PLOT
    _plot_bars(
        run, time_path, ms, log=False, ylabel="milliseconds", color="#55a868",
        title=f"{run.model_name} · {run.method}: time per layer (sum {total:,.1f} ms)",
    )
    return params_path, time_path
