"""Every file name of a run folder, in one place.

A run folder (``camanim run --out OUT``)::

    OUT/manifest.json                 what was run and what came out (:mod:`.manifest`)
    OUT/cams.npz                      raw CAMs [L, H, W] float32, layer names, input, image, target (:mod:`.cams`)
    OUT/frames/<norm>/NNNN.png        one frame per layer, NNNN = the layer's position (0000, 0001, ...)
    OUT/camanim_<norm>.mp4            local and global videos (.gif on request)
    OUT/camanim_side_by_side.mp4      local | global
    OUT/ybroad.csv, .json, .png       ybROAD, when scored (:mod:`.ybroad`)
    OUT/metric_<name>.csv, .json, .png  each metric beside ybROAD (``--metric``; :mod:`camanim.metrics`)
    OUT/metrics_agreement.json, .csv  each metric's best layer and the Spearman correlations between metrics
    OUT/report.html, layer_params.png, layer_time.png

A folder of several runs (images x targets x methods) has a ``manifest.json`` with
``"kind": "set"``, one run folder per result and a :data:`GRID_VIDEO` per (image, target).
"""

from __future__ import annotations

from pathlib import Path

MANIFEST = "manifest.json"
CAMS = "cams.npz"
FRAMES = "frames"
REPORT = "report.html"
PARAMS_PLOT = "layer_params.png"
TIME_PLOT = "layer_time.png"
YBROAD_CSV = "ybroad.csv"
YBROAD_JSON = "ybroad.json"
YBROAD_PNG = "ybroad.png"
YBROAD_FILES = (YBROAD_CSV, YBROAD_JSON, YBROAD_PNG)
METRICS_AGREEMENT_JSON = "metrics_agreement.json"
METRICS_AGREEMENT_CSV = "metrics_agreement.csv"
SIDE_BY_SIDE = "side_by_side"
GRID_VIDEO = "camanim_methods_grid.mp4"
COMPARE_HTML = "compare.html"
COMPARE_VIDEO = "compare_grid.mp4"
INDEX = "index.html"  # the top of a multi-run output: a link to every run's report


def global_variant(video_name: str) -> str:
    """The global-normalisation grid video beside ``video_name``: ``compare_grid_global.mp4``."""
    path = Path(video_name)
    return f"{path.stem}_global{path.suffix}"
VIDEO_FORMATS = ("mp4", "gif")


def metric_file(metric: str, ext: str) -> str:
    """The file of one metric beside ybROAD: ``metric_deletion.csv`` (``ext``: csv, json or png)."""
    return f"metric_{metric}.{ext}"


def frames_dir(norm: str) -> str:
    """The frames folder of normalisation ``norm``, relative to the run folder: ``frames/local``."""
    return f"{FRAMES}/{norm}"


def frame_name(index: int) -> str:
    """The file name of layer ``index``'s frame: ``0007.png`` (frame i belongs to ``layers[i]``)."""
    return f"{index:04d}.png"


def frame_paths(folder: Path, count: int) -> list[Path]:
    """The ``count`` frame files of one frames folder, in layer order."""
    return [folder / frame_name(i) for i in range(count)]


def video_stem(kind: str) -> str:
    """``camanim_local``, ``camanim_global``, ``camanim_side_by_side``."""
    return f"camanim_{kind}"
