"""``manifest.json``: what was run and what came out. The schema is written here and nowhere else.

Outline (see the README's "Outputs" for every key)::

    {"model": {...}, "image": {"source": ..., "original_size": [W, H], "size": [H, W],
               "crop": {"box": [l, t, r, b], "resized", "resize", "crop", "lost"}},  # Preprocess.crop_box
     "method": "gradcam",
     "target": {"index": 285, "label": "Egyptian cat", "score": 0.77},
     "versions": {...}, "seconds": {...},
     "options": {"methods", "score", "probability", ...},   # probability: "softmax" or "sigmoid",
                                                           # what target.score and ROAD's prob read
                #  "layers": the --layers selection as given; "layers_recorded": how many the pass recorded;
                #  "layers_left_out": {"same_cam": n, "non_spatial": n} (distinct, --skip-non-spatial)
     "layers": [{"index", "name", "module", "type", "shape", "layout", "params", "seconds",
                 "non_spatial", "same_as", "flags"}, ...],
     "normalisations": [...], "fps": 10, "frames": {"local": "frames/local", "count": L},
     "videos": {"local": "camanim_local.mp4", ...}, "render": {...},
     "cams_sha256": "...",                                 # of cams.npz as written (read_run_cams checks it)
     "ybroad": {"csv": ..., "json": ..., "png": ..., "max": {...}, "mean": ..., ...},
     "metrics": {"files", "values", "higher_is_better", "chance", "agreement"}}   # --metric (with_metrics)

A DICOM image's ``"image"`` adds only whitelisted technical fields (``sources/dicom.py``: modality,
window, rescale, pixel spacing, frames; never a name, ID, date or UID); a 16-bit or float grey
file adds its ``"window"``.

A layer's ``"flags"`` is ``{}``, or says per kind why its map is missing or not trusted:
``{"gradient": "..."}`` (no gradient of the score reaches it, or it is zero everywhere) or
``{"layout": "..."}`` (its output's shape reads as two layouts and nothing placed it: ``non_spatial``).

A folder of several runs has ``{"kind": "set", "runs": [{"folder", "image", "target", "method"}], "grids": [...]}``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import InputError
from . import names
from .atomic import write_text
from .cams import file_sha256


def run_manifest(*, model: Mapping[str, Any], image: Mapping[str, Any], size: Sequence[int], method: str,
                 target: Mapping[str, Any], versions: Mapping[str, str], seconds: Mapping[str, float],
                 options: Mapping[str, Any], layers: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The manifest of one run, before its outputs are written (:func:`with_outputs` adds them).

    ``size`` is the input's (H, W), or (D, H, W) for a volume.
    """
    return {
        "model": dict(model),
        "image": {**image, "size": [int(s) for s in size]},
        "method": method,
        "target": dict(target),
        "versions": dict(versions),
        "seconds": {k: round(v, 4) for k, v in seconds.items()},
        **({"options": dict(options)} if options else {}),
        "layers": [dict(layer) for layer in layers],
    }


def with_outputs(manifest: dict[str, Any], *, normalisations: Sequence[str], fps: float, count: int,
                 videos: Mapping[str, str], render: Mapping[str, Any], cams: Path | None = None) -> dict[str, Any]:
    """``manifest`` with what the save wrote: frames folders, videos (kind -> file name), render settings,
    and ``cams_sha256``, the SHA-256 of the written ``cams`` file (what the run's ``cams.npz`` must be
    when it is read back: :func:`camanim.rundir.read_run_cams`)."""
    if cams is not None:
        manifest["cams_sha256"] = file_sha256(cams)
    manifest["normalisations"] = list(normalisations)
    manifest["fps"] = fps
    manifest["frames"] = {**{n: names.frames_dir(n) for n in normalisations}, "count": count}
    manifest["videos"] = dict(videos)
    manifest["render"] = dict(render)
    return manifest


def with_ybroad(manifest: dict[str, Any], summary: Mapping[str, Any]) -> dict[str, Any]:
    """``manifest`` linking the ybROAD files, with the curve's summary (max, mean, settings)."""
    manifest["ybroad"] = {"csv": names.YBROAD_CSV, "json": names.YBROAD_JSON, "png": names.YBROAD_PNG, **summary}
    return manifest


def with_metrics(manifest: dict[str, Any], data: Mapping[str, Any]) -> dict[str, Any]:
    """``manifest`` with the metrics beside ybROAD: ``{"files": {metric: {csv, json, png}}, "values":
    {metric: [value or None per layer]}, "higher_is_better": {metric: bool}, "chance": {metric: [mean,
    low, high] or None}, "agreement": {"best", "metrics", "spearman", "layers"}}`` (the report reads it)."""
    manifest["metrics"] = dict(data)
    return manifest


def set_manifest(runs: Sequence[Mapping[str, Any]], *, model: Mapping[str, Any], methods: Sequence[str],
                 options: Mapping[str, Any], versions: Mapping[str, str], grids: Sequence[str]) -> dict[str, Any]:
    """The top manifest of a folder of several runs (``"kind": "set"``)."""
    return {"kind": "set", "model": dict(model), "methods": list(methods), "options": dict(options),
            "versions": dict(versions), "runs": [dict(r) for r in runs], "grids": list(grids)}


def run_folders(manifest: Mapping[str, Any]) -> list[str]:
    """The run folders a folder of several runs lists (relative paths, as written); [] for one run."""
    if manifest.get("kind") != "set":
        return []
    return [str(r["folder"]) for r in manifest.get("runs", []) if isinstance(r, dict) and isinstance(r.get("folder"), str)]


def write_manifest(folder: Path, manifest: Mapping[str, Any]) -> Path:
    """Write ``folder/manifest.json`` atomically; returns its path."""
    return write_text(Path(folder) / names.MANIFEST, json.dumps(manifest, indent=2))


def read_json(path: Path, what: str) -> Any:
    """Parse a JSON file of a run folder.

    Raises:
        InputError: the file is not valid JSON or cannot be read; ``what`` says what to do.
    """
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}); {what}") from exc
    except OSError as exc:
        raise InputError(f"cannot read {path} ({exc.strerror}); check its permissions") from exc


def read_manifest(folder: Path, *, run: bool = True) -> dict[str, Any]:
    """``folder/manifest.json`` as a dict, checked: a JSON object and, for one run, a list of layers.

    Args:
        folder: a run folder, or with ``run=False`` also a folder of several runs (``"kind": "set"``).
        run: require the manifest of one run (a non-empty ``layers`` list of objects).

    Raises:
        InputError: no manifest (not a run folder), one that is not a JSON object, a folder of several
            runs where one run is needed (the message names one of them), or a run without its layers.
    """
    path = Path(folder) / names.MANIFEST
    if not path.is_file():
        raise InputError(f"'{folder}' is not a camanim run folder (no manifest.json): give the --out folder of a run")
    manifest = read_json(path, "re-run `camanim run` to write it again")
    if not isinstance(manifest, dict):
        raise InputError(f"{path} is not a camanim manifest; re-run `camanim run` to write it again")
    if run and manifest.get("kind") == "set":
        runs = run_folders(manifest)
        if runs == ["."]:
            raise InputError(f"'{folder}' was saved by an older camanim from a one-image list: its manifest.json "
                             "lists the folder itself as its only run and lost the run's layers; save it again "
                             "(`camanim run`, or result.save)")
        example = f", e.g. {Path(folder) / runs[0]}" if runs else ""
        raise InputError(f"'{folder}' holds several runs (see its manifest.json): give one of its run folders{example}")
    layers = manifest.get("layers")
    if run and (not isinstance(layers, list) or not layers or not all(isinstance(x, dict) for x in layers)):
        raise InputError(f"{path} has no 'layers' list; re-run `camanim run` to write it again")
    return manifest
