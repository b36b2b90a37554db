"""``ybroad.json`` and ``ybroad.csv``: a run's ybROAD scores as files (the plot is :mod:`camanim.road.files`'s)."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import InputError
from . import names
from .atomic import atomic_path
from .manifest import read_json


def write_ybroad_tables(folder: Path, data: Mapping[str, Any]) -> dict[str, Path]:
    """Write ``ybroad.json`` (``data`` as is) and ``ybroad.csv`` into ``folder``.

    Args:
        folder: the run folder (created if missing).
        data: ``YbRoad.to_json_dict()``: ``percentiles`` and one entry per layer with ``morf``,
            ``lerf``, ``combined`` (one per percentage), ``ybroad`` and ``ybroad_std`` (None: undefined).

    Returns:
        ``{"csv": path, "json": path}``. The CSV has one row per layer: ``index, name, defined``, then
        per percentage ``morf_p, lerf_p, combined_p`` (trial means), then ``ybroad`` and ``ybroad_std``,
        then ``ybroad_ci_low, ybroad_ci_high`` (the interval), ``morf_mean, lerf_mean`` (over
        percentages), ``above_baseline``, ``baseline_band_low, baseline_band_high`` (the chance band, the
        same on every row), ``same_as`` and ``note``; undefined values are empty cells.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"csv": folder / names.YBROAD_CSV, "json": folder / names.YBROAD_JSON}
    with atomic_path(paths["json"]) as tmp, tmp.open("w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, allow_nan=False)
        fh.write("\n")
    labels = [f"{p:g}" for p in data["percentiles"]]
    header = ["index", "name", "defined"]
    for p in labels:
        header += [f"morf_{p}", f"lerf_{p}", f"combined_{p}"]
    header += ["ybroad", "ybroad_std", "ybroad_ci_low", "ybroad_ci_high", "morf_mean", "lerf_mean", "above_baseline",
               "baseline_band_low", "baseline_band_high", "same_as", "note"]
    baseline = data.get("baseline") if isinstance(data.get("baseline"), Mapping) else {}
    band = baseline.get("band") or [None, None]

    def cell(v: float | None) -> str:
        return "" if v is None else repr(float(v))

    with atomic_path(paths["csv"]) as tmp, tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for layer in data["layers"]:
            row = [layer["index"], layer["name"], layer["defined"]]
            for j in range(len(labels)):
                row += [cell(layer["morf"][j]), cell(layer["lerf"][j]), cell(layer["combined"][j])]
            ci = layer.get("ybroad_ci") or [None, None]
            above = layer.get("above_baseline")
            row += [cell(layer["ybroad"]), cell(layer["ybroad_std"]), cell(ci[0]), cell(ci[1]),
                    cell(layer.get("morf_mean")), cell(layer.get("lerf_mean")), "" if above is None else above,
                    cell(band[0]), cell(band[1]), "" if layer.get("same_as") is None else layer["same_as"],
                    layer.get("note") or ""]
            writer.writerow(row)
    return paths


def read_ybroad(folder: Path, manifest: Mapping[str, Any]) -> dict[str, Any] | None:
    """The run's ``ybroad.json`` as a dict, or None when the run was not scored.

    Raises:
        InputError: the file is not valid JSON, or not a ybROAD result.
    """
    entry = manifest.get("ybroad")
    rel = entry.get("json", names.YBROAD_JSON) if isinstance(entry, dict) else names.YBROAD_JSON
    path = Path(folder) / str(rel)
    if not path.is_file():
        return None
    data = read_json(path, "re-run `camanim road` to write it again")
    if not isinstance(data, dict):
        raise InputError(f"{path} is not a ybROAD result; re-run `camanim road {folder}`")
    return data
