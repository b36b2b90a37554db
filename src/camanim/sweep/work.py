"""One sweep item's work, the same on every runner: load the model once per worker, explain the
image with every method in one pass, score each method's CAMs with ybROAD, and return the rows of
the two tables (plain Python, picklable: no tensors leave the worker).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..api import animate, check_layers, ybroad
from ..compute import CamOptions
from ..errors import InputError
from ..methods import get_method
from ..road import RoadOptions, YbRoad
from ..sources import LoadedModel, load_model, resolve_target
from ..trace import class_scores, logits_of
from .items import SweepItem


@dataclass(frozen=True)
class SweepSettings:
    """What every item of a sweep is computed with (sent once to each worker).

    Attributes:
        methods: CAM method names, computed in one shared pass per item.
        cam: :class:`~camanim.compute.CamOptions` keywords (layers, score, seed, ...; plain values, sent to
            other processes); the target is set per item (label or predicted). Checked on construction.
        road: the ybROAD options (percentages, trials, noise, seed).
        weights: ``default``, ``none`` or a state dict path, for every model.
        input_size: (height, width) for models whose input size camanim cannot know, or None.
        device: ``cpu``/``cuda`` or None (the model's).
        threads: torch threads per worker (workers x threads = the machine's cores).
        model_options: :func:`~camanim.sources.load_model` keywords for every model (``num_classes``,
            ``labels``, ``channels``, ``trust_checkpoint``; plain values).

    Raises:
        InputError: (on construction) methods that are not a tuple of known names, a ``target`` in ``cam`` (the
            target is each item's label or predicted class), a bad CAM setting or an unknown device.
    """

    methods: tuple[str, ...]
    cam: dict[str, Any]
    road: RoadOptions
    weights: str = "default"
    input_size: tuple[int, int] | None = None
    device: str | None = None
    threads: int = 1
    model_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.methods, str) or not self.methods or not all(isinstance(m, str) for m in self.methods):
            raise InputError(f"SweepSettings(methods={self.methods!r}): give a tuple of method names, e.g. "
                             "('gradcam',) or ('gradcam', 'layercam')")
        for name in self.methods:
            get_method(name)  # an unknown method: refused here, before any item, not by every item
        if "target" in self.cam:
            raise InputError("SweepSettings(cam={'target': ...}): a sweep's target is each image's label or, "
                             "without one, its predicted class; give labels in a CSV/TSV list instead")
        self.cam_options()
        if self.device is not None:
            try:
                torch.device(self.device)
            except (RuntimeError, ValueError):
                raise InputError(f"--device '{self.device}' is unknown: use cpu or cuda") from None

    def cam_options(self, target: int | None = None) -> CamOptions:
        """The :class:`~camanim.compute.CamOptions` of an item with ``target`` (None: its predicted class).

        Raises:
            InputError: a bad CAM setting.
        """
        return CamOptions(**{**self.cam, "target": target})


def one_line(exc: BaseException) -> str:
    """An exception as one line: camanim's own InputError as it is, anything else with its type."""
    text = " ".join(str(exc).split())
    return text if isinstance(exc, InputError) else f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class ItemWorker:
    """What a worker process (or Ray actor) holds: the settings and each model, loaded once.

    Args:
        settings: the sweep's :class:`SweepSettings`.
        own_process: this process is the worker's own (a pool process, a Ray actor): set its torch
            threads to ``settings.threads``; False leaves the caller's process as it is.
    """

    def __init__(self, settings: SweepSettings, own_process: bool = True) -> None:
        self.settings = settings
        self.models: dict[str, LoadedModel | InputError] = {}
        if own_process:
            torch.set_num_threads(max(1, settings.threads))

    def model(self, name: str) -> LoadedModel:
        """The model ``name``, loaded on first use and kept.

        Raises:
            InputError: the model cannot be loaded (remembered: every item of it fails the same way).
        """
        if name not in self.models:
            try:
                self.models[name] = load_model(name, self.settings.weights, input_size=self.settings.input_size,
                                               **self.settings.model_options)
            except InputError as exc:
                self.models[name] = exc
        got = self.models[name]
        if isinstance(got, InputError):
            raise got
        return got

    def check(self, name: str, local: bool = True) -> None:
        """Check the sweep's options against model ``name`` before any item runs, so that an option that
        fits no image fails the sweep once instead of every item: the model loads (name, weights, labels,
        classes, channels), the layer pattern selects a layer of it, and (``local``: the workers run on
        this machine) a CUDA device asked for is there.

        Raises:
            InputError: one of these does not hold.
        """
        loaded = self.model(name)
        check_layers(loaded.module, self.settings.cam_options().layers, loaded.info)
        if local and self.settings.device is not None and torch.device(self.settings.device).type == "cuda" \
                and not torch.cuda.is_available():
            raise InputError("--device cuda was asked for but no CUDA GPU is available: use --device cpu")

    def run(self, item: SweepItem) -> dict[str, Any]:
        """Compute one item; never raises for the item's own faults (a bad image, label or model).

        Returns:
            ``{"image": row, "layers": [row, ...]}``: the images-table row (``status`` ``ok`` or
            ``failed`` with a one-line ``error``) and one layers-table row per method and layer.
        """
        t0 = time.perf_counter()
        row: dict[str, Any] = {"key": item.key, "image": item.image, "image_sha256": item.image_sha256,
                               "model": item.model, "label": item.label, "worker": os.getpid()}
        try:
            image_row, layers = self._compute(item)
        except (Exception, torch.cuda.OutOfMemoryError) as exc:  # noqa: B014 - every fault of one item is its own
            row.update(status="failed", error=one_line(exc), seconds=time.perf_counter() - t0)
            return {"image": row, "layers": []}
        row.update(image_row, status="ok", error=None, seconds=time.perf_counter() - t0)
        return {"image": row, "layers": layers}

    def target_of(self, loaded: LoadedModel, label: str | None) -> int | None:
        """The class index of an item's ``label`` (an index, or a class name of the model matched as
        :func:`~camanim.sources.labels.resolve_target` does: case-insensitively, an ambiguous name refused),
        None without a label.

        Raises:
            InputError: an index outside the model's classes, or a name that is not one of its labels or
                names several of them.
        """
        if label is None:
            return None
        labels = loaded.labels or None
        classes = loaded.info.get("num_classes") or (len(labels) if labels else None)
        if classes is None and label.strip().lstrip("-").isdigit():
            return int(label)
        return resolve_target(label, labels, int(classes or 0), what="label")

    def _compute(self, item: SweepItem) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        s = self.settings
        loaded = self.model(item.model)
        target = self.target_of(loaded, item.label)
        cam = s.cam_options(target)
        got = animate(loaded, item.image, method=list(s.methods), device=s.device, options=cam)
        results = [got] if len(s.methods) == 1 else list(got)
        first = results[0]
        with torch.no_grad():
            x = first.input_tensor
            scores = class_scores(logits_of(loaded.module(x), cam.output_key),
                                  first.options.get("probability", "softmax"))[0]
        predicted = int(scores.argmax())
        labels = loaded.labels or []
        image_row = {
            "target": first.target.index, "target_label": first.target.label,
            "probability": float(first.target.score),
            "predicted": predicted, "predicted_label": labels[predicted] if predicted < len(labels) else None,
            "predicted_probability": float(scores[predicted]),
            "correct": None if target is None else predicted == target,
            "num_classes": int(scores.shape[0]),
        }
        layers: list[dict[str, Any]] = []
        for res in results:
            yb = ybroad(res, options=s.road)
            if "baseline_morf" not in image_row and yb.baseline_morf is not None:
                # the chance baseline depends on the image, model and seed only: the same for every method
                image_row["baseline_morf"] = yb.baseline_morf.tolist()
                image_row["baseline_lerf"] = yb.baseline_lerf.tolist()
                image_row["target_probability"] = yb.target_probability
                if yb.target_probability is not None:  # one number, not two that differ in the 8th digit: ROAD's
                    image_row["probability"] = yb.target_probability  # forward's (what its chance check reads)
                image_row["probability_kind"] = yb.probability
                image_row["num_classes"] = yb.num_classes or image_row["num_classes"]
            layers += layer_rows(item, res.method, res.layers, yb)
        if image_row["predicted"] == image_row["target"]:  # one class, one number (not two forwards' 8th digits)
            image_row["predicted_probability"] = image_row["probability"]
        return image_row, layers


def layer_rows(item: SweepItem, method: str, records: Sequence[Any], yb: YbRoad) -> list[dict[str, Any]]:
    """One layers-table row per layer: ROAD per trial and percentage (MoRF, LeRF), flags, and names."""
    same_as, notes = yb.layer_same_as, yb.layer_notes
    rows = []
    for i, name in enumerate(yb.layer_names):
        rec = records[i]
        rows.append({
            "key": item.key, "image": item.image, "model": item.model, "method": method,
            "layer_index": i, "layer": name, "type": rec.type, "non_spatial": bool(rec.non_spatial),
            "same_as": same_as[i], "alias_of": None if same_as[i] is None else yb.layer_names[same_as[i]],
            "note": notes[i], "defined": bool(yb.defined[i]),
            "morf_trials": yb.morf[:, i, :].tolist(), "lerf_trials": yb.lerf[:, i, :].tolist(),
            "percentiles": [float(p) for p in yb.percentiles],
        })
    return rows


def save_run(worker: ItemWorker, item: SweepItem, folder: Any) -> dict[str, str]:
    """Write the item's full run folders (frames, videos, ``cams.npz``, ybROAD, ``report.html``) into
    ``folder`` (one sub-folder per method when the sweep has several), with the sweep's settings: the
    same numbers as the item's rows.

    Returns:
        ``{method: path of its report.html}``.

    Raises:
        InputError: the item cannot be computed (it failed in the sweep too).
    """
    from pathlib import Path

    s = worker.settings
    loaded = worker.model(item.model)
    cam = s.cam_options(worker.target_of(loaded, item.label))
    got = animate(loaded, item.image, method=list(s.methods), device=s.device, options=cam)
    results = [got] if len(s.methods) == 1 else list(got)
    for res in results:
        ybroad(res, options=s.road)
    got.save(folder)
    out = Path(folder)
    if len(results) == 1:
        return {results[0].method: str(out / "report.html")}
    return {res.method: str(out / sub / "report.html") for sub, res in zip(got.folders, results, strict=True)}
