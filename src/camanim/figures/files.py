"""A figure written as PNG (print resolution) and vector PDF, with fixed metadata, atomically.

The same runs and options give the same PNG bytes: matplotlib's ``Software`` key is dropped,
the PDF's creation date and producer too, and both files are written beside their names and
moved into place only when both are complete (nothing half-written on failure).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..rundir import atomic_path
from .grid import FigurePlan, build_figure, figure_style
from .layout import FigureOptions
from .source import FigureRun, read_runs

FORMATS = ("png", "pdf")
PNG_METADATA: dict[str, Any] = {"Software": None}
PDF_METADATA: dict[str, Any] = {"Creator": None, "Producer": None, "CreationDate": None}


def figure_paths(out: str | Path) -> dict[str, Path]:
    """``{"png": ..., "pdf": ...}`` for ``--out``: ``fig.pdf``, ``fig.png`` or ``fig`` all give ``fig.png`` + ``fig.pdf``.

    Raises:
        InputError: another suffix, a missing folder, or a folder where the file should go.
    """
    path = Path(out)
    if path.suffix.lower() in (".png", ".pdf"):
        path = path.with_suffix("")
    elif path.suffix and not path.suffix[1:].isdigit():
        raise InputError(f"--out {out}: a figure is written as .pdf and .png; give fig.pdf, fig.png or fig")
    if not path.parent.is_dir():
        raise InputError(f"--out {out}: folder {path.parent} does not exist; create it or choose another --out")
    paths = {fmt: path.with_name(f"{path.name}.{fmt}") for fmt in FORMATS}
    for p in paths.values():
        if p.is_dir():
            raise InputError(f"--out {out}: {p} is a folder; choose another --out")
    return paths


def save_figure(fig: Any, paths: dict[str, Path], dpi: int) -> dict[str, Path]:
    """Write ``fig`` to ``paths["png"]`` and ``paths["pdf"]`` at ``dpi``, with fixed metadata; both or neither."""
    with atomic_path(paths["png"]) as png, atomic_path(paths["pdf"]) as pdf:
        fig.savefig(png, format="png", dpi=dpi, metadata=PNG_METADATA, facecolor="white")
        fig.savefig(pdf, format="pdf", dpi=dpi, metadata=PDF_METADATA, facecolor="white")
    return dict(paths)


def write_figure(runs: Sequence[FigureRun | str | Path], out: str | Path,
                 options: FigureOptions = FigureOptions()) -> tuple[dict[str, Path], FigurePlan]:
    """Make the figure of ``runs`` (run folders or :class:`FigureRun`) and write it as PNG and PDF.

    A folder of several runs (``camanim run --method gradcam,hirescam``) stands for its runs.

    One run gives a filmstrip by depth; several runs of one model a methods × depths grid;
    runs of different models a models × depths grid aligned by relative depth; ``options.layer``
    one layer's normalisations side by side. See :class:`FigureOptions`.

    Returns:
        (``{"png": path, "pdf": path}``, the figure's :class:`~camanim.figures.grid.FigurePlan`).

    Raises:
        InputError: a bad output path, a folder that is not a finished run, or options the runs
            cannot satisfy (an unknown layer, ``--with-road`` on a run not scored, ...).
    """
    paths = figure_paths(out)
    loaded = [x for run in runs for x in ([run] if isinstance(run, FigureRun) else read_runs([run]))]
    with figure_style(options):
        fig, plan = build_figure(loaded, options)
        return save_figure(fig, paths, options.dpi), plan
