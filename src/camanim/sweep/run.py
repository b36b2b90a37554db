"""A sweep from start to end: items, the runner (local pool or Ray), the tables as items finish,
then the CSVs, the aggregates, the saved runs, ``sweep.json`` and ``sweep.html``.

``OUT/sweep.json`` is written first (``"state": "running"`` with the settings) and last (``"done"``
with the counts and the aggregates); ``--resume`` checks that the settings are the same and
computes only the items without a finished ``ok`` part (failed items are tried again).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..rundir import write_text
from .aggregate import aggregates
from .items import SweepItem, expand_images, file_sha256, sweep_plan
from .page import write_page, write_plot
from .pool import run_pool
from .tables import IMAGES, LAYERS, create_tables, finished_keys, read_table, write_csv, write_part, ybroad_of
from .work import ItemWorker, SweepSettings, one_line, save_run

SWEEP_JSON, SWEEP_HTML, SWEEP_PNG = "sweep.json", "sweep.html", "sweep.png"
SAVE_WHICH = ("first", "misclassified", "lowest-confidence")
#: ROAD options that set only how the numbers are computed, not the numbers (perturbed images per forward):
#: left out of the settings a resume compares
HOW_ONLY = ("batch_size",)


def _compared_road(road: dict[str, Any]) -> dict[str, Any]:
    """The ROAD settings a resume compares: all but :data:`HOW_ONLY`."""
    return {k: v for k, v in road.items() if k not in HOW_ONLY}


@dataclass(frozen=True)
class SweepOptions:
    """How a sweep runs (what each item computes is :class:`~camanim.sweep.work.SweepSettings`).

    Attributes:
        models: model names, one item per image and model.
        workers: worker processes (or Ray actors); None: the machine's cores, at most one per item.
        threads: torch threads per worker; None: cores // workers (at least 1).
        ray: None for the local pool; ``auto`` or a cluster address for Ray.
        resume: continue the sweep in ``out`` (skip its finished items).
        save_runs: write full run folders for this many images.
        save_which: which images: ``first``, ``misclassified`` or ``lowest-confidence``.

    Raises:
        InputError: (on construction) models that are not a tuple of names, a count below its minimum or an
            unknown ``save_which``.
    """

    models: tuple[str, ...] = ("efficientnet_lite0",)
    workers: int | None = None
    threads: int | None = None
    ray: str | None = None
    resume: bool = False
    save_runs: int = 0
    save_which: str = "first"

    def __post_init__(self) -> None:
        if isinstance(self.models, str) or not all(isinstance(m, str) for m in self.models):
            raise InputError(f"SweepOptions(models={self.models!r}): give a tuple of model names, e.g. ('resnet18',)")
        if self.workers is not None and self.workers < 1:
            raise InputError(f"--workers {self.workers} must be at least 1")
        if self.threads is not None and self.threads < 1:
            raise InputError(f"--threads {self.threads} must be at least 1")
        if self.save_runs < 0:
            raise InputError(f"--save-runs {self.save_runs} must not be negative")
        if self.save_which not in SAVE_WHICH:
            raise InputError(f"--save-which '{self.save_which}' is unknown: use {', '.join(SAVE_WHICH)}")


def _settings_json(settings: SweepSettings, options: SweepOptions) -> dict[str, Any]:
    cam = dict(settings.cam)
    road = _compared_road(dataclasses.asdict(settings.road))
    files = {"weights_sha256": file_sha256(settings.weights),
             "labels_sha256": file_sha256(settings.model_options.get("labels"))}  # a file changed in place
    return json.loads(json.dumps({"models": list(options.models), "methods": list(settings.methods),
                                  "weights": settings.weights, **files, "input_size": settings.input_size,
                                  "model_options": dict(settings.model_options),
                                  "cam": cam, "road": road}, default=str))


def _check_out(out: Path, settings: dict[str, Any], resume: bool) -> None:
    """Raises InputError: a sweep in ``out`` without ``--resume``, or ``--resume`` with other settings."""
    path = out / SWEEP_JSON
    if not path.exists() and any((out / name).exists() for name in (IMAGES, LAYERS)):
        raise InputError(f"'{out}' has an '{IMAGES}' or '{LAYERS}' folder but no {SWEEP_JSON}, so it is not a "
                         "sweep's folder (a sweep writes those tables there): give another --out")
    if not resume:
        if path.exists():
            raise InputError(f"'{out}' holds a sweep already: add --resume to continue it, or give another --out")
        return
    if not path.exists():
        raise InputError(f"--resume: '{out}' holds no sweep (no {SWEEP_JSON}): drop --resume to start one")
    before = json.loads(path.read_text(encoding="utf-8")).get("settings")
    if isinstance(before, dict) and isinstance(before.get("road"), dict):  # a sweep.json that kept them
        before["road"] = _compared_road(before["road"])
    if before != settings:
        changed = sorted(k for k in settings if settings.get(k) != (before or {}).get(k))
        raise InputError(f"--resume with other settings than the sweep in '{out}' ({', '.join(changed)}): "
                         "use the same options, or another --out")


def _check_resumed_items(out: Path, items: list[SweepItem]) -> None:
    """Raises InputError: ``out`` holds items finished ``ok`` that are not among ``items`` (a resume with other
    images would mix both in the tables and the aggregates; more images than before are fine).

    A *failed* item that is not among them is one the user fixed (a corrected label or image gives the item
    another key): its parts are removed, so the fixed item replaces it instead of the resume being refused."""
    keys = {it.key for it in items}
    finished = finished_keys(out)
    others = {k for k, status in finished.items() if status == "ok" and k not in keys}
    if others:  # refused: nothing changed
        images = {r["key"]: r["image"] for r in read_table(out, IMAGES).to_pylist()}
        example = images[sorted(others, key=lambda k: images[k])[0]]
        raise InputError(f"--resume: '{out}' holds {len(others)} finished items that are not among this sweep's "
                         f"(e.g. '{example}'): give the same images (more are fine; a failed one may change), "
                         "or another --out")
    for key in (k for k, status in finished.items() if status != "ok" and k not in keys):  # fixed since: replaced
        for name in (LAYERS, IMAGES):  # the images part last: while it is there the item counts as finished
            (out / name / f"part-{key}.parquet").unlink(missing_ok=True)


def _remove_stale_parts(out: Path) -> None:
    for name in (IMAGES, LAYERS):
        for tmp in (out / name).glob(".part-*") if (out / name).is_dir() else ():
            tmp.unlink(missing_ok=True)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:60] or "image"


def _chosen(rows: list[dict[str, Any]], k: int, which: str) -> list[dict[str, Any]]:
    ok = [r for r in rows if r["status"] == "ok"]
    if which == "misclassified":
        ok = [r for r in ok if r["correct"] is False]
    elif which == "lowest-confidence":
        ok = sorted(ok, key=lambda r: r["predicted_probability"])
    return ok[:k]


def _per_image_best(out: Path, settings: SweepSettings) -> dict[str, dict[str, Any]]:
    """``{key: {method: {"layer", "ybroad"}}}``: each image's own best layer (its ybROAD maximum)."""
    images = {r["key"]: r for r in read_table(out, IMAGES).to_pylist() if r["status"] == "ok"}
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in read_table(out, LAYERS).to_pylist():
        groups.setdefault((r["key"], r["method"]), []).append(r)
    best: dict[str, dict[str, Any]] = {}
    for (key, method), rows in groups.items():
        if key not in images:
            continue
        m = ybroad_of(images[key], rows, settings.road).ybroad_max
        best.setdefault(key, {})[method] = None if m is None else {"layer": m.name, "ybroad": m.value}
    return best


def run_sweep(images: Sequence[str], out: str | Path, settings: SweepSettings, options: SweepOptions,
              progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Run a sweep of ``images`` × ``options.models`` into ``out`` (see the module docstring).

    Args:
        images: folders, globs, CSV/TSV lists, image files, ``sample:NAME``.
        out: the sweep's folder.
        settings: what each item computes (methods, CAM and ROAD options, weights).
        options: how it runs (models, workers, Ray, resume, saved runs).
        progress: called as ``progress(done, total)`` items after each finished item (and once at the start).

    Returns:
        The summary: ``items``, ``ok``, ``failed``, ``skipped`` (finished before a resume), ``seconds`` (this
        session), ``seconds_total`` (with the earlier sessions of a resumed sweep that finished), ``duplicates``
        (``[{"path", "same_as"}]``: files with the content of an earlier one, not run again), ``restarts``
        (workers replaced), ``paths`` and ``aggregates`` (as in ``sweep.json``).

    Raises:
        InputError: no image or model, a model that does not load, a layer pattern that selects no layer
            of it, CUDA asked for without a GPU (all before any item runs and before ``out`` is made),
            a folder or glob without images, ``misclassified`` runs to save
            without any label, a sweep in ``out`` without
            ``resume`` (or with other settings), Ray asked for but missing, or no cluster joined (then nothing
            is left in ``out`` unless it resumes).
        KeyboardInterrupt: (or its subclass, as raised) Ctrl-C while the items ran, re-raised with how many
            are finished (``"N of M items finished"``): their parts are in ``out``, for ``resume``.
    """
    t0 = time.perf_counter()
    out = Path(out)
    meta = _settings_json(settings, options)  # hashes a --weights/--labels file once
    weights = settings.weights
    if meta["weights_sha256"] is not None:  # one item key per checkpoint content, not per path
        weights = f"{weights}|sha256:{meta['weights_sha256']}"
    # a resume keeps the file its tables recorded for an image with copies, so names agree across sessions
    recorded = ({r["image"] for r in read_table(out, IMAGES).to_pylist()}
                if options.resume and (out / SWEEP_JSON).is_file() else set())
    items, duplicates = sweep_plan(expand_images(images, exclude=out), options.models, weights, prefer=recorded)
    if options.save_runs and options.save_which == "misclassified" and all(it.label is None for it in items):
        raise InputError("--save-which misclassified needs true labels, and no image has one: give a CSV/TSV list "
                         "with a label column, or choose --save-which first or lowest-confidence")
    if options.ray is not None:
        from .cluster import check_address

        check_address(options.ray)  # a dead address at once, before Ray is imported
    here = ItemWorker(settings, own_process=False)  # loads each model once here, for the checks and saved runs
    for model in dict.fromkeys(options.models):
        here.check(model, local=options.ray is None)  # an option that fits no item: refused before any runs
    _check_out(out, meta, options.resume)
    if options.resume:
        _check_resumed_items(out, items)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    done_before = {k for k, s in finished_keys(out).items() if s == "ok"} if options.resume else set()
    todo = [it for it in items if it.key not in done_before]
    cores = os.cpu_count() or 1
    workers = options.workers or max(1, min(cores, len(todo)))
    settings = dataclasses.replace(settings, threads=options.threads or max(1, cores // workers))
    previous = (out / SWEEP_JSON).read_text(encoding="utf-8") if options.resume else None
    write_text(out / SWEEP_JSON, json.dumps({"state": "running", "settings": meta, "items": len(items)}, indent=2))
    create_tables(out)  # after sweep.json (a folder with tables but without it is not a sweep's); readable, empty
    _remove_stale_parts(out)
    total, finished = len(items), [len(items) - len(todo)]
    if progress is not None:
        progress(finished[0], total)

    def on_result(item: SweepItem, result: dict[str, Any], attempts: int) -> None:
        write_part(out, {**result["image"], "attempts": attempts}, result["layers"])
        finished[0] += 1
        if progress is not None:
            progress(finished[0], total)

    restarts = 0
    if todo:
        try:
            if options.ray is not None:
                from .cluster import run_ray

                restarts = run_ray(todo, settings, workers, options.ray, on_result)
            else:
                restarts = run_pool(todo, settings, workers, on_result)
        except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM: the same exception, saying how far the sweep got
            keys = {it.key for it in items}
            n = sum(k in keys for k in finished_keys(out))  # the tables, not the count: a part may be just in
            raise type(exc)(f"{n} of {len(items)} items finished") from None
        except InputError:
            if finished[0] == total - len(todo):  # refused before any item (no Ray cluster, no worker started)
                if previous is not None:  # a resume: the sweep as it was
                    write_text(out / SWEEP_JSON, previous)
                elif created:  # a new sweep: leave nothing
                    shutil.rmtree(out, ignore_errors=True)
                else:  # a new sweep in a folder that was there: what it made (no table was there before)
                    (out / SWEEP_JSON).unlink(missing_ok=True)
                    for name in (IMAGES, LAYERS):
                        shutil.rmtree(out / name, ignore_errors=True)
            raise
    skipped = sum(it.key in done_before for it in items)  # this sweep's own, never another's
    try:
        before = json.loads(previous) if previous is not None else {}
    except json.JSONDecodeError:
        before = {}
    return _finish(out, items, settings, options, meta, restarts, skipped, t0, here, duplicates, before)


def _finish(out: Path, items: list[SweepItem], settings: SweepSettings, options: SweepOptions,
            meta: dict[str, Any], restarts: int, skipped: int, t0: float, worker: ItemWorker,
            duplicates: list[dict[str, str]], before: dict[str, Any] | None = None) -> dict[str, Any]:
    paths: dict[str, str] = {k: str(p) for k, p in write_csv(out, settings.road.percentiles).items()}
    paths.update(images=str(out / IMAGES), layers=str(out / LAYERS))
    rows = read_table(out, IMAGES).to_pylist()
    keys = {it.key for it in items}
    rows = [r for r in rows if r["key"] in keys]
    order = {it.key: i for i, it in enumerate(items)}
    rows.sort(key=lambda r: order[r["key"]])
    before = before or {}
    # runs saved by earlier sessions of this sweep keep their links while their folders are there
    runs: dict[str, dict[str, str]] = {
        r["key"]: r["runs"] for r in before.get("per_image") or [] if isinstance(r, dict) and r.get("runs")
        and "error" not in r["runs"] and all((out / p).exists() for p in r["runs"].values())}
    if options.save_runs:
        by_key = {it.key: it for it in items}
        for r in _chosen(rows, options.save_runs, options.save_which):
            folder = out / "runs" / f"{_safe(Path(r['image']).stem or r['image'])}-{_safe(r['model'])}-{r['key'][:6]}"
            try:
                runs[r["key"]] = {m: os.path.relpath(p, out) for m, p in save_run(worker, by_key[r["key"]], folder).items()}
            except InputError as exc:
                runs[r["key"]] = {"error": one_line(exc)}
    agg = aggregates(out, settings.road)
    best = _per_image_best(out, settings)
    n_ok = sum(r["status"] == "ok" for r in rows)
    seconds = time.perf_counter() - t0  # to the end: saving runs and the aggregates included
    earlier = before.get("seconds_total", before.get("seconds")) if before.get("state") == "done" else None
    summary = {
        "state": "done", "settings": meta, "items": len(items), "ok": n_ok, "failed": len(rows) - n_ok,
        "skipped": skipped, "restarts": restarts, "seconds": seconds,
        "seconds_total": seconds + (earlier if isinstance(earlier, int | float) else 0.0), "duplicates": duplicates,
        "accuracy": _accuracy(rows),
        "failures": [{"image": r["image"], "model": r["model"], "error": r["error"]} for r in rows
                     if r["status"] != "ok"],
        "per_image": [{"key": r["key"], "image": r["image"], "model": r["model"], "status": r["status"],
                       "error": r["error"], "label": r["label"], "target": r["target"],
                       "predicted": r["predicted"], "predicted_label": r["predicted_label"],
                       "predicted_probability": r["predicted_probability"], "correct": r["correct"],
                       "best": best.get(r["key"], {}), "runs": runs.get(r["key"], {})} for r in rows],
        "aggregates": agg,
    }
    summary = _finite(summary)
    paths["png"] = str(write_plot(out / SWEEP_PNG, agg))
    paths["html"] = str(write_page(out / SWEEP_HTML, summary))
    paths["json"] = str(out / SWEEP_JSON)
    summary["paths"] = paths
    summary = _finite(summary)
    write_text(out / SWEEP_JSON, json.dumps(summary, indent=2, allow_nan=False, default=str))
    return summary


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float made None (plain JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _accuracy(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Per model, the share of labelled images predicted right (None without labels)."""
    labelled = [r for r in rows if r["status"] == "ok" and r["correct"] is not None]
    if not labelled:
        return None
    acc: dict[str, Any] = {}
    for model in sorted({r["model"] for r in labelled}):
        mine = [r for r in labelled if r["model"] == model]
        acc[model] = {"correct": sum(r["correct"] for r in mine), "images": len(mine),
                      "accuracy": sum(r["correct"] for r in mine) / len(mine)}
    return acc
