"""The sweep's tables, the one owner of their files: Parquet (pyarrow) and CSV.

``OUT/images/`` and ``OUT/layers/`` are Parquet datasets of one part file per finished item
(``part-<key>.parquet``, and an empty ``part-schema.parquet`` from the start that gives an empty table its columns), each written to a hidden temporary name and renamed into place, so each
folder reads as one complete table at every moment, even while the sweep runs or after it was killed
(``pyarrow.parquet.read_table("OUT/layers")``, ``pandas.read_parquet("OUT/layers")``; hidden files are
skipped by both). At the end, ``images.csv`` and ``layers.csv`` (flat columns, one per percentage;
trial-level lists stay in Parquet) are written the same way.

images: one row per (image, model): ``key``, ``image``, ``image_sha256``, ``model``, ``status``
(``ok``/``failed``), ``error`` (one line), ``label``, ``target``, ``target_label``, ``probability``,
``predicted``, ``predicted_label``, ``predicted_probability``, ``correct``, ``num_classes``,
``seconds``, ``worker``, ``attempts``, and the chance baseline (``baseline_morf``/``baseline_lerf``:
[trials][percentages]).

layers: one row per (image, model, method, layer): ``layer_index``, ``layer``, ``type``,
``non_spatial``, ``same_as``/``alias_of``, ``note``, ``defined``, ``morf``/``lerf``/``combined`` (trial
means per percentage), ``ybroad`` (their mean over percentages), ``baseline_ybroad`` (the image's
chance baseline), ``morf_trials``/``lerf_trials`` ([trials][percentages]), and ``percentiles`` (the
percentages removed, the positions of every list: ``morf[j]`` is at ``percentiles[j]`` %).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import torch

from ..road import RoadOptions, YbRoad
from ..rundir import atomic_path

IMAGES, LAYERS = "images", "layers"

_F64_2D = pa.list_(pa.list_(pa.float64()))
IMAGE_SCHEMA = pa.schema([
    ("key", pa.string()), ("image", pa.string()), ("image_sha256", pa.string()), ("model", pa.string()),
    ("status", pa.string()), ("error", pa.string()), ("label", pa.string()),
    ("target", pa.int64()), ("target_label", pa.string()), ("probability", pa.float64()),
    ("predicted", pa.int64()), ("predicted_label", pa.string()), ("predicted_probability", pa.float64()),
    ("correct", pa.bool_()), ("num_classes", pa.int64()), ("seconds", pa.float64()), ("worker", pa.string()),
    ("attempts", pa.int64()), ("target_probability", pa.float64()), ("probability_kind", pa.string()),
    ("baseline_morf", _F64_2D), ("baseline_lerf", _F64_2D),
])
LAYER_SCHEMA = pa.schema([
    ("key", pa.string()), ("image", pa.string()), ("model", pa.string()), ("method", pa.string()),
    ("layer_index", pa.int64()), ("layer", pa.string()), ("type", pa.string()), ("non_spatial", pa.bool_()),
    ("same_as", pa.int64()), ("alias_of", pa.string()), ("note", pa.string()), ("defined", pa.bool_()),
    ("morf", pa.list_(pa.float64())), ("lerf", pa.list_(pa.float64())), ("combined", pa.list_(pa.float64())),
    ("ybroad", pa.float64()), ("baseline_ybroad", pa.float64()),
    ("morf_trials", _F64_2D), ("lerf_trials", _F64_2D), ("percentiles", pa.list_(pa.float64())),
])


def _trial_mean(trials: list[list[float]]) -> list[float]:
    return np.asarray(trials, dtype=np.float64).mean(axis=0).tolist()


def _baseline_ybroad(image_row: dict[str, Any]) -> float | None:
    m, le = image_row.get("baseline_morf"), image_row.get("baseline_lerf")
    if m is None or le is None:
        return None
    return float(((np.asarray(le) - np.asarray(m)) / 2).mean(axis=1).mean())


#: a part with no rows, written when a table is made: an empty table still has its columns and types
EMPTY_PART = "part-schema.parquet"


def create_tables(out: Path) -> None:
    """The two table folders before any item finishes, each with an empty part that holds the schema:
    ``pyarrow.parquet.read_table(out / "layers")`` then reads an empty table with every column instead of
    failing or reading no columns (the tables are readable at every moment; an item's part is named by
    its 16-hex-digit key, never ``schema``)."""
    for name, schema in ((IMAGES, IMAGE_SCHEMA), (LAYERS, LAYER_SCHEMA)):
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        if not (folder / EMPTY_PART).exists():
            with atomic_path(folder / EMPTY_PART) as tmp:
                pq.write_table(schema.empty_table(), tmp)


def write_part(out: Path, image_row: dict[str, Any], layer_rows: Sequence[dict[str, Any]]) -> None:
    """Write one item's rows: its layers part first, then its images part, each renamed into place.

    An item counts as finished when its images part exists; a kill between the two leaves a layers
    part that the item's next run replaces (same name), so every item is in the tables once.
    """
    key = image_row["key"]
    row = {name: image_row.get(name) for name in IMAGE_SCHEMA.names}
    row["worker"] = None if row["worker"] is None else str(row["worker"])
    base = _baseline_ybroad(image_row)
    full = []
    for r in layer_rows:
        morf, lerf = _trial_mean(r["morf_trials"]), _trial_mean(r["lerf_trials"])
        combined = [(b - a) / 2 for a, b in zip(morf, lerf, strict=True)]
        mean = float(np.mean(combined))
        full.append({**{n: r.get(n) for n in LAYER_SCHEMA.names}, "morf": morf, "lerf": lerf, "combined": combined,
                     "ybroad": mean if math.isfinite(mean) else None, "baseline_ybroad": base})
    for name, rows, schema in ((LAYERS, full, LAYER_SCHEMA), (IMAGES, [row], IMAGE_SCHEMA)):
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / f"part-{key}.parquet") as tmp:
            pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp)


def read_table(out: Path, name: str) -> pa.Table:
    """The whole table ``name`` (``images`` or ``layers``) as it stands: every finished part, empty if none."""
    schema = IMAGE_SCHEMA if name == IMAGES else LAYER_SCHEMA
    folder = out / name
    parts = sorted(folder.glob("part-*.parquet")) if folder.is_dir() else []
    if not parts:
        return schema.empty_table()
    return pa.concat_tables([pq.read_table(p, schema=schema) for p in parts])


def finished_keys(out: Path) -> dict[str, str]:
    """``{key: status}`` of the items whose images part is in place."""
    t = read_table(out, IMAGES)
    return dict(zip(t.column("key").to_pylist(), t.column("status").to_pylist(), strict=True))


def write_csv(out: Path, percentiles: Sequence[float]) -> dict[str, Path]:
    """``images.csv`` and ``layers.csv``: the tables with list columns spread, one column per percentage.

    Returns:
        ``{"images_csv": path, "layers_csv": path}``.
    """
    paths = {}
    images = read_table(out, IMAGES).drop_columns(["baseline_morf", "baseline_lerf"])
    layers = read_table(out, LAYERS)
    flat = {n: layers.column(n) for n in layers.column_names if n not in
            ("morf", "lerf", "combined", "morf_trials", "lerf_trials", "percentiles")}
    for col in ("morf", "lerf", "combined"):
        values = layers.column(col).to_pylist()
        for j, p in enumerate(percentiles):
            flat[f"{col}_{p:g}"] = pa.array([v[j] if v is not None else None for v in values], pa.float64())
    for name, table in ((IMAGES, images), (LAYERS, pa.table(flat))):
        path = out / f"{name}.csv"
        with atomic_path(path) as tmp:
            pacsv.write_csv(table, tmp)
        paths[f"{name}_csv"] = path
    return paths


def ybroad_of(image_row: dict[str, Any], layer_rows: Sequence[dict[str, Any]], road: RoadOptions) -> YbRoad:
    """Rebuild one item's and method's :class:`YbRoad` from its rows (the numbers of the worker, bit for bit).

    Args:
        image_row: the item's images row (baseline, target probability, classes).
        layer_rows: its layers rows of one method, in layer order.
        road: the sweep's ROAD settings.
    """
    rows = sorted(layer_rows, key=lambda r: r["layer_index"])
    morf = torch.tensor([r["morf_trials"] for r in rows], dtype=torch.float64).permute(1, 0, 2).contiguous()
    lerf = torch.tensor([r["lerf_trials"] for r in rows], dtype=torch.float64).permute(1, 0, 2).contiguous()
    base_m, base_l = image_row.get("baseline_morf"), image_row.get("baseline_lerf")
    return YbRoad(
        percentiles=tuple(road.percentiles), score=road.score, noise=float(road.noise), seed=road.seed,
        trials=road.trials, layer_names=[r["layer"] for r in rows], morf=morf, lerf=lerf,
        combined=(lerf - morf) / 2, defined=torch.tensor([bool(r["defined"]) for r in rows], dtype=torch.bool),
        baseline_morf=None if base_m is None else torch.tensor(base_m, dtype=torch.float64),
        baseline_lerf=None if base_l is None else torch.tensor(base_l, dtype=torch.float64),
        same_as=[r["same_as"] for r in rows], notes=[r["note"] for r in rows],
        target_probability=image_row.get("target_probability"), num_classes=image_row.get("num_classes"),
        probability=image_row.get("probability_kind") or "softmax",
    )
