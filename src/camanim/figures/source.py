"""What a figure reads of a run: its :class:`~camanim.rundir.RunView`, raw CAMs, image and 1-D evidence.

A run folder is read through :mod:`camanim.rundir` (``load_run`` and ``read_run_cams``, which checks the file is the run's); a result in
memory is handed over as the same pieces by :meth:`camanim.results.CamResult.figure`. Maps are
scaled by :func:`camanim.draw.normalise`, the only place min-max scaling happens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..draw import normalise
from ..errors import InputError
from ..rundir import RunView, load_run, read_manifest, read_run_cams, run_folders

DEFAULT_COLORMAP = "jet"
DEFAULT_ALPHA = 0.5


@dataclass
class FigureRun:
    """One run as a figure draws it.

    Attributes:
        view: the run's manifest, layers and ybROAD (its frames are not used: figures draw clean tiles).
        cams: raw CAMs (L, H, W) float32, as in ``cams.npz``.
        image: the display image (h, w, 3) uint8.
        vectors: per layer, a non-spatial layer's 1-D evidence or None; None as a whole when the
            run kept none (a run saved before ``cams.npz`` held them).
        vector_kind: what the vectors' values are (``"act x grad"``, ``"activation"``).
        label: how the run is named in errors (its folder, or ``"result"``).
    """

    view: RunView
    cams: np.ndarray
    image: np.ndarray
    vectors: list[np.ndarray | None] | None = None
    vector_kind: str = ""
    label: str = "result"
    _normed: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.cams.ndim == 4 and len(self.cams) == len(self.view.layers):
            raise InputError(f"{self.label} holds CAMs of a volume {tuple(self.cams.shape[1:])}: figures are drawn "
                             "for 2-D images only; use the run's frames, videos and report")
        if self.cams.ndim != 3 or len(self.cams) != len(self.view.layers):
            raise InputError(f"{self.label}: cams.npz holds {tuple(self.cams.shape)} maps for "
                             f"{len(self.view.layers)} layers in manifest.json; re-run `camanim run`")

    @property
    def layers(self) -> list[dict[str, Any]]:
        """The manifest's layer entries, one per CAM."""
        return self.view.layers

    @property
    def render(self) -> dict[str, Any]:
        """The manifest's render settings (``colormap``, ``alpha``), empty if missing."""
        render = self.view.manifest.get("render")
        return render if isinstance(render, dict) else {}

    @property
    def colormap(self) -> str:
        """The run's colormap name (``jet`` if the manifest has none)."""
        return str(self.render.get("colormap") or DEFAULT_COLORMAP)

    @property
    def alpha(self) -> float:
        """The run's overlay opacity in [0, 1] (0.5 if the manifest has none)."""
        alpha = self.render.get("alpha")
        return float(alpha) if isinstance(alpha, (int, float)) and 0 <= alpha <= 1 else DEFAULT_ALPHA

    @property
    def model_name(self) -> str:
        """The model's name from the manifest."""
        return self.view.model_name

    @property
    def method(self) -> str:
        """The CAM method's name from the manifest."""
        return self.view.method

    @property
    def image_source(self) -> str:
        """Where the image came from (``sample:cat``, a file name), from the manifest."""
        image = self.view.manifest.get("image")
        return str(image.get("source", "image")) if isinstance(image, dict) else "image"

    def non_spatial(self, index: int) -> bool:
        """Whether layer ``index`` has no 2-D map."""
        return bool(self.layers[index].get("non_spatial")) or self.layers[index].get("layout") == "non_spatial"

    def normalised(self, norm: str) -> np.ndarray:
        """The CAMs (L, H, W) float32 in [0, 1] scaled by :func:`camanim.draw.normalise` (kept once made).

        Raises:
            InputError: ``norm`` is not ``local`` or ``global``.
        """
        if norm not in self._normed:
            try:
                self._normed[norm] = normalise(torch.from_numpy(np.asarray(self.cams)), norm).numpy()
            except ValueError as exc:
                raise InputError(f"--norms: {exc}") from exc
        return self._normed[norm]


def read_run(run_dir: str | Path) -> FigureRun:
    """A finished run folder as a :class:`FigureRun` (manifest, layers, ybROAD, ``cams.npz``).

    Raises:
        InputError: not a run folder (a folder of several runs included: see :func:`read_runs`),
            an incomplete run, or a ``cams.npz`` that is missing or does not match the manifest.
    """
    path = Path(run_dir)
    view = load_run(path)
    saved = read_run_cams(path, view.manifest)
    return FigureRun(view=view, cams=saved.cams, image=saved.image, vectors=saved.vectors,
                     vector_kind=saved.vector_kind, label=str(path))


def read_runs(run_dirs: Sequence[str | Path]) -> list[FigureRun]:
    """Run folders as :class:`FigureRun` s, in order; a folder of several runs (``camanim run
    --method a,b``, several images or targets) gives each of its runs, in its manifest's order.

    Raises:
        InputError: see :func:`read_run`.
    """
    out = []
    for run_dir in run_dirs:
        path = Path(run_dir)
        manifest = read_manifest(path, run=False)
        if manifest.get("kind") == "set":
            out += [read_run(path / folder) for folder in run_folders(manifest)]
        else:
            out.append(read_run(path))
    return out
