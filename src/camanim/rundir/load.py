"""Loading a run back: a run folder, or a result still in memory, as one :class:`RunView`.

The report, the notebook view and ``compare`` read runs only through a :class:`RunView`, so a
report can be rebuilt long after the model is gone, or drawn from memory without writing a file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from . import names
from .manifest import read_manifest
from .ybroad import read_ybroad

_HOW_TO_MAKE_A_RUN = "pass the folder written by `camanim run IMAGE --out DIR`"
_DEFAULT_FPS = 10

#: A run's frames of one normalisation: PNG files on disk, or an (L, H, W, 3) uint8 array in memory.
Frames = Sequence[Path] | np.ndarray


@dataclass(frozen=True)
class RunView:
    """What a report needs from one run, checked once.

    Attributes:
        path: the run folder, or None for a result in memory.
        manifest: the run's manifest (see :mod:`.manifest`).
        layers: ``manifest["layers"]``: one entry per frame.
        frames: normalisation -> one frame per layer, in layer order.
        ybroad: the run's ybROAD dict (``ybroad.json``), or None.
        encoded: normalisation -> each frame already as the report's data URI (a run being saved
            encodes them while they are in memory), in layer order; where missing, the report encodes
            :attr:`frames`.
    """

    path: Path | None
    manifest: dict[str, Any]
    layers: list[dict[str, Any]]
    frames: dict[str, Frames]
    ybroad: dict[str, Any] | None
    encoded: dict[str, list[str]] = field(default_factory=dict)

    @property
    def model_name(self) -> str:
        """The model's name from the manifest (``"model"`` if it has none)."""
        model = self.manifest.get("model")
        return str(model.get("name", "model")) if isinstance(model, dict) else "model"

    @property
    def method(self) -> str:
        """The CAM method's name from the manifest; several are joined with ", " (``"?"`` if none)."""
        method = self.manifest.get("method", "?")
        return ", ".join(map(str, method)) if isinstance(method, list) else str(method)

    @property
    def fps(self) -> int:
        """The videos' frames per second from the manifest (10 if missing or not positive)."""
        fps = self.manifest.get("fps")
        return int(fps) if isinstance(fps, (int, float)) and fps > 0 else _DEFAULT_FPS


def load_run(out_dir: str | Path) -> RunView:
    """Read a finished run folder: its manifest, the frame files of each normalisation, its ybROAD.

    Raises:
        InputError: the folder does not exist, is a file, has no or a broken manifest, holds
            several runs, lists layers and frames that disagree, misses a frame, or has no frames
            at all; the message names the file and what to do.
    """
    path = Path(out_dir)
    if not path.exists():
        raise InputError(f"run folder {path} does not exist; {_HOW_TO_MAKE_A_RUN}")
    if not path.is_dir():
        raise InputError(f"{path} is a file, not a run folder; {_HOW_TO_MAKE_A_RUN}")
    manifest_path = path / names.MANIFEST
    if not manifest_path.is_file():
        raise InputError(f"{path} is not a camanim run folder (no manifest.json); {_HOW_TO_MAKE_A_RUN}")
    manifest = read_manifest(path)
    layers = manifest["layers"]
    frame_spec = manifest.get("frames") if isinstance(manifest.get("frames"), dict) else {}
    count = frame_spec.get("count")
    if isinstance(count, int) and count != len(layers):
        raise InputError(f"{manifest_path} lists {len(layers)} layers but {count} frames; re-run `camanim run`")
    norms = manifest.get("normalisations") or [key for key in frame_spec if key != "count"]
    frames: dict[str, Frames] = {}
    for norm in map(str, norms):
        paths = names.frame_paths(path / str(frame_spec.get(norm, names.frames_dir(norm))), len(layers))
        missing = next((p for p in paths if not p.is_file()), None)
        if missing is not None:
            raise InputError(f"{missing} is missing ({len(layers)} layers in {manifest_path.name}); "
                             "the run is incomplete, re-run `camanim run`")
        frames[norm] = paths
    if not frames:
        raise InputError(f"{path} has no frames (manifest lists no normalisations); re-run `camanim run` with --norm")
    return RunView(path=path, manifest=manifest, layers=layers, frames=frames, ybroad=read_ybroad(path, manifest))
