"""A ybROAD result as files: ``ybroad.json`` and ``ybroad.csv`` (through :mod:`camanim.rundir`) and the ``ybroad.png`` plot."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..rundir import atomic_path, names, write_ybroad_tables
from .metric import YbRoad, score_label

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def write_ybroad(out_dir: Path, result: YbRoad) -> dict[str, Path]:
    """Write ``ybroad.csv``, ``ybroad.json`` and ``ybroad.png`` into ``out_dir``.

    The CSV has one row per layer: ``index, name, defined``, then for each
    percentage ``morf_p, lerf_p, combined_p`` (trial means), then ``ybroad`` (mean
    over percentages) and ``ybroad_std`` (over trials); undefined values are empty.
    The JSON is :meth:`YbRoad.to_json_dict` (``null`` for undefined values). The
    PNG is :func:`ybroad_figure`: the curve over layers with its interval, the chance
    band, the best candidate (or the warning) and the MoRF and LeRF curves.

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


def _wrap(text: str, width: int) -> str:
    return "\n".join(textwrap.wrap(text, width=width, break_long_words=True)) if text else ""


def ybroad_figure(result: YbRoad) -> Figure:
    """The ``ybroad.png`` figure (Agg canvas, no pyplot state).

    Top panel: ROAD per layer (trial mean) with its 95% interval, the chance band of the random pixel
    rankings, layers above the band filled, and the best candidate with its aliases: a star, or, when
    the verdict has warnings, a ring and the warning in words. Bottom panel: the two curves ROAD is
    made of, ``C_MoRF`` and ``C_LeRF`` (mean over percentages), with the random rankings' as lines.
    The y axes name the score used (``score_label``).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(result.layer_names)
    x = np.arange(n)
    mean = result.curve_mean.numpy()
    lo, hi = result.curve_ci
    judged = result.verdict()
    label = score_label(result.score)
    ticks = tick_positions(n)
    width = min(16.0, max(8.0, 4.0 + 0.25 * len(ticks)))
    chars = int(width * 14)
    fig = Figure(figsize=(width, 8.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax, ax2 = fig.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    ax.axhline(0.0, color="0.6", lw=0.8)
    band = result.baseline_band
    if band is not None:
        if band[2] > band[1]:
            ax.axhspan(band[1], band[2], color="0.55", alpha=0.25, lw=0,
                       label=f"chance: {result.trials} random pixel ranking(s), 95% band")
        ax.axhline(band[0], color="0.35", lw=1.0, ls="--",
                   label=f"chance: random rankings' mean {band[0]:+.3g}")
    if np.isfinite(lo).any():
        ax.fill_between(x, lo, hi, color="#d4a017", alpha=0.35, lw=0,
                        label=f"95% CI over {result.trials} trials")
    ax.plot(x, mean, color="#b8860b", lw=1.5, label="ROAD per layer (mean)")
    above = np.array([a is True for a in judged["above_baseline"]])
    if n <= 120:
        ax.plot(x[above], mean[above], ls="none", marker="o", ms=4, color="#b8860b", label="above chance band")
        ax.plot(x[~above], mean[~above], ls="none", marker="o", ms=4, mfc="white", color="#b8860b",
                label="not above chance band")
    undefined = np.flatnonzero(~result.defined.numpy())
    if undefined.size:
        ax.plot(undefined, np.zeros(undefined.size), ls="none", marker="x", ms=4, color="0.5",
                label="no score (non-spatial or constant CAM)")
    best = judged["best"]
    warnings = judged["warnings"]
    if best is not None:
        i = best["index"]
        if warnings:
            ax.plot([i], [best["ybroad"]], marker="o", ms=13, mfc="none", mew=2, color="crimson", ls="none",
                    label="highest layer (not trusted, see warning)")
        else:
            ax.plot([i], [best["ybroad"]], marker="*", ms=15, color="crimson", ls="none",
                    label=f"best {best['ybroad']:.3g}")
        low, high = ax.get_ylim()
        ax.set_ylim(low, low + (high - low) / 0.8)
        ha = "left" if i < 0.15 * n else "right" if i > 0.85 * n else "center"
        name = _short(best["name"], 40)
        extra = []
        if best.get("note"):
            extra.append(best["note"])
        if best.get("aliases"):
            extra.append("= " + ", ".join(_short(a, 30) for a in best["aliases"][:3])
                         + (" …" if len(best["aliases"]) > 3 else ""))
        ax.text(i, 0.97, "\n".join([name, *extra]), transform=ax.get_xaxis_transform(), ha=ha, va="top",
                fontsize=8, color="crimson", parse_math=False)
    else:
        ax.text(0.5, 0.5, "no spatial layer with a ranking CAM", transform=ax.transAxes, ha="center")
    pct = ", ".join(f"{p:g}" for p in result.percentiles)
    head = _wrap(judged["statement"], chars)
    if warnings:
        head += "\n" + _wrap("WARNING: " + " · ".join(warnings), chars)
    fig.suptitle(head, fontsize=9, ha="left", x=0.01, color="crimson" if warnings else "black", parse_math=False)
    ax.set_title(f"ybROAD per layer (removed {pct}% of pixels; noise {result.noise:g}; "
                 f"{result.trials} trial(s))", fontsize=9, loc="left", parse_math=False)
    ax.set_ylabel(f"ROAD = (C_LeRF − C_MoRF) / 2\nC = {label}", parse_math=False)
    ax.grid(True, axis="y", alpha=0.3)
    # legends beside the axes, never over the curve
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.005, 1.0), borderaxespad=0.0)

    for key, color, text in (("morf", "#c0392b", "C_MoRF: most relevant removed first"),
                             ("lerf", "#2471a3", "C_LeRF: least relevant removed first")):
        values = getattr(result, key).mean(dim=(0, 2)).numpy()
        ax2.plot(x, values, color=color, lw=1.3, label=text)
        chance = getattr(result, f"baseline_{key}")
        if chance is not None:
            ax2.axhline(float(chance.mean()), color=color, lw=0.9, ls="--", label=f"{key.upper()} of random rankings")
    ax2.axhline(0.0, color="0.6", lw=0.8)
    ax2.set_ylabel(f"C = {label}\n(mean over percentages)", parse_math=False)
    ax2.grid(True, axis="y", alpha=0.3)
    ax2.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.005, 1.0), borderaxespad=0.0)
    ax2.set_xticks(ticks)
    ax2.set_xticklabels([_short(result.layer_names[i]) for i in ticks], rotation=90, fontsize=7, parse_math=False)
    ax2.set_xlim(-0.5, max(n - 0.5, 0.5))
    ax2.set_xlabel("layer (execution order)")
    return fig


def _write_png(path: Path, result: YbRoad) -> None:
    ybroad_figure(result).savefig(path, dpi=120, format="png")
