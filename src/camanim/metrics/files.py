"""The metrics beside ybROAD as files: ``metric_<name>.csv/.json/.png`` and ``metrics_agreement.json/.csv``."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..road.files import tick_positions
from ..rundir import atomic_path, names
from .curve import LayerCurve, best_words


def _cell(v: Any) -> str:
    return "" if v is None or (isinstance(v, float) and not math.isfinite(v)) else repr(float(v))


def write_metric(folder: Path, curve: LayerCurve) -> dict[str, Path]:
    """Write ``metric_<name>.json`` (:meth:`LayerCurve.to_json_dict`), ``.csv`` and ``.png`` into ``folder``.

    The CSV has one row per layer: ``index, name, defined, value, best`` and, where a chance baseline
    applies, ``chance_mean, chance_low, chance_high`` (the same on every row); undefined values are empty.
    ``best`` is True on no row when every scored layer ties (:meth:`LayerCurve.best`). The PNG is the
    value over the layers with the chance band and the best layer marked (its legend says how many tie).

    Returns:
        ``{"csv": path, "json": path, "png": path}``.

    Raises:
        OSError: ``folder`` cannot be written.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {ext: folder / names.metric_file(curve.metric, ext) for ext in ("csv", "json", "png")}
    with atomic_path(paths["json"]) as tmp, tmp.open("w", encoding="utf-8") as fh:
        json.dump(curve.to_json_dict(), fh, indent=2, allow_nan=False)
        fh.write("\n")
    best = curve.best()
    band = curve.band or (None, None, None)
    with atomic_path(paths["csv"]) as tmp, tmp.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["index", "name", "defined", "value", "best", "chance_mean", "chance_low", "chance_high"])
        for i, (n, v) in enumerate(zip(curve.layer_names, curve.values)):
            w.writerow([i, n, bool(np.isfinite(v)), _cell(float(v)), best is not None and best["index"] == i,
                        _cell(band[0]), _cell(band[1]), _cell(band[2])])
    with atomic_path(paths["png"]) as tmp:
        _plot(tmp, curve)
    return paths


def _plot(path: Path, curve: LayerCurve) -> None:
    from matplotlib.figure import Figure

    n = len(curve.layer_names)
    fig = Figure(figsize=(max(6.0, min(16.0, 0.12 * n + 4)), 3.6), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(n)
    ax.plot(x, curve.values, marker="o", ms=3, lw=1.2, color="#1f77b4", label=curve.metric)
    if curve.band is not None:
        ax.axhspan(curve.band[1], curve.band[2], color="0.85", label="chance (random pixel order), 95%")
        ax.axhline(curve.band[0], color="0.5", lw=0.8, ls="--")
    best = curve.best()
    if best is not None and best["index"] is not None:
        ax.plot([best["index"]], [best["value"]], marker="*", ms=12, color="#d62728",
                label=f"best: {best_words(best)} ({best['value']:.3g})")
    elif best is not None:
        ax.axhline(best["value"], color="#d62728", lw=0.8, ls=":", label=f"{best_words(best)} ({best['value']:.3g})")
    ticks = tick_positions(n)
    ax.set_xticks(ticks)
    ax.set_xticklabels([curve.layer_names[i][-24:] for i in ticks], rotation=90, fontsize=6)
    ax.set_ylabel(curve.metric + (" (higher is better)" if curve.higher_is_better else " (lower is better)"))
    ax.set_xlabel("layer (execution order)")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, format="png")


def write_agreement(folder: Path, table: Mapping[str, Any]) -> dict[str, Path]:
    """Write ``metrics_agreement.json`` (``table`` as is) and ``metrics_agreement.csv`` into ``folder``.

    The CSV: one row per metric, ``metric, best_layer, best_index, best_value, higher_is_better, ties,
    scored`` (``best_layer`` and ``best_index`` empty when every scored layer ties; ``ties``: how many
    distinct CAMs share the best value, of ``scored``), then one column ``rho_<other>`` per metric
    (Spearman over the distinct CAMs both define; empty: undefined).

    Returns:
        ``{"json": path, "csv": path}``.

    Raises:
        OSError: ``folder`` cannot be written.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"json": folder / names.METRICS_AGREEMENT_JSON, "csv": folder / names.METRICS_AGREEMENT_CSV}
    with atomic_path(paths["json"]) as tmp, tmp.open("w", encoding="utf-8") as fh:
        json.dump(dict(table), fh, indent=2, allow_nan=False)
        fh.write("\n")
    metrics = list(table["metrics"])
    with atomic_path(paths["csv"]) as tmp, tmp.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["metric", "best_layer", "best_index", "best_value", "higher_is_better", "ties", "scored",
                    *[f"rho_{m}" for m in metrics]])
        for a, b in enumerate(table["best"]):
            w.writerow([b["metric"], b["layer"] or "", "" if b["index"] is None else b["index"], _cell(b["value"]),
                        b["higher_is_better"], b.get("ties") or "", b.get("scored") or "",
                        *[_cell(r) for r in table["spearman"][a]]])
    return paths


def agreement_markdown(table: Mapping[str, Any]) -> str:
    """The agreement table as Markdown: each metric's best layer (or that all layers tie, or how many tie
    for best), then the Spearman matrix."""
    lines = ["| metric | best layer | value |", "|---|---|---|"]
    for b in table["best"]:
        val = "" if b["value"] is None else f"{b['value']:.4g}"
        layer = best_words(b if b["value"] is not None else None)
        lines.append(f"| {b['metric']}{'' if b['higher_is_better'] else ' (lower better)'} | {layer} "
                     f"| {val} |")
    metrics = list(table["metrics"])
    lines += ["", "| Spearman rho | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    for m, row in zip(metrics, table["spearman"]):
        lines.append(f"| {m} | " + " | ".join("-" if r is None else f"{r:+.2f}" for r in row) + " |")
    return "\n".join(lines)
