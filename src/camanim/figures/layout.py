"""Which layers a figure shows, and how its rows and columns are laid out.

Depth is relative: layer ``i`` of a run with ``L`` layers is at ``100 * i / (L - 1)`` percent,
and a requested depth ``p`` shows layer ``round(p / 100 * (L - 1))`` (halves up), the same rule
as :func:`camanim.report.align_by_depth`, so runs of different depth line up column by column.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from ..draw import NORMALISATIONS
from ..errors import InputError
from .source import FigureRun

DEFAULT_DEPTHS = (0.0, 20.0, 40.0, 60.0, 80.0, 100.0)
FILMSTRIP, METHODS, MODELS, NORMS = "filmstrip", "methods", "models", "norms"


@dataclass(frozen=True)
class FigureOptions:
    """How a figure is made (checked on construction).

    Attributes:
        depths: percentages of depth, one column each (ignored with ``layers`` or ``layer``).
        layers: layer names, one column each, instead of ``depths`` (one model only).
        norms: normalisations, one row each (per run in a grid); None: ``local,global`` for one
            run or one layer, ``local`` for a grid of several runs.
        layer: one layer's normalisations side by side (the normalisation figure) instead of a strip.
        with_road: a ybROAD strip under a one-run filmstrip, on the same depth axis.
        spatial_only: a non-spatial layer at a requested depth is replaced by the nearest
            spatial layer (the caption says so); otherwise it is drawn as its 1-D stripe.
        dpi: resolution of the PNG (and of the PDF's images), dots per inch.
        font_size: the figure's text size in points (captions one point smaller).
        tile_inches: the width of one tile in inches.

    Raises:
        InputError: a depth outside 0-100, an unknown normalisation, an empty list, dpi or sizes
            that are not positive, or ``layers`` given with ``layer``.
    """

    depths: tuple[float, ...] = DEFAULT_DEPTHS
    layers: tuple[str, ...] = ()
    norms: tuple[str, ...] | None = None
    layer: str | None = None
    with_road: bool = False
    spatial_only: bool = False
    dpi: int = 300
    font_size: float = 7.0
    tile_inches: float = 1.15

    def __post_init__(self) -> None:
        object.__setattr__(self, "depths", tuple(float(d) for d in self.depths))
        object.__setattr__(self, "layers", tuple(self.layers))
        if self.norms is not None:
            object.__setattr__(self, "norms", tuple(self.norms))
            bad = [n for n in self.norms if n not in NORMALISATIONS]
            if bad or not self.norms:
                raise InputError(f"--norms '{','.join(self.norms)}' is not a list of local, global: "
                                 "use local, global or local,global")
        if not self.depths:
            raise InputError("--depths is empty: give percentages such as 0,25,50,75,100")
        bad_depths = [d for d in self.depths if not 0 <= d <= 100]
        if bad_depths:
            raise InputError(f"--depths {bad_depths[0]:g} is outside 0-100: depths are percent of the layers")
        if self.layers and self.layer is not None:
            raise InputError("--layers and --layer exclude each other: --layers makes a strip, --layer one "
                             "layer's normalisations")
        if self.dpi < 30 or self.dpi > 1200:
            raise InputError(f"--dpi {self.dpi} is out of range: use 30 to 1200 (300 for print)")
        if not self.font_size > 0 or not self.tile_inches > 0:
            raise InputError("font size and tile width must be positive")

    @staticmethod
    def parse_depths(text: str) -> tuple[float, ...]:
        """``"0,25,50"`` -> (0.0, 25.0, 50.0).

        Raises:
            InputError: an item that is not a number.
        """
        out = []
        for item in (t.strip().rstrip("%") for t in text.split(",") if t.strip()):
            try:
                out.append(float(item))
            except ValueError:
                raise InputError(f"--depths '{item}' is not a number: give percentages such as 0,50,100") from None
        return tuple(out)


@dataclass(frozen=True)
class Tile:
    """One tile: which layer of which run, at which depth, and what the caption says about it.

    Attributes:
        index: the layer shown (index into the run's layers).
        depth: its own depth, ``100 * index / (L - 1)`` percent.
        asked: the depth asked for (percent) or the layer name asked for.
        note: why the tile is not the plain layer asked for (``""``: it is), e.g. a non-spatial
            layer drawn as a stripe, or moved to the nearest spatial layer.
    """

    index: int
    depth: float
    asked: str
    note: str = ""


def depth_of(index: int, count: int) -> float:
    """The relative depth of layer ``index`` of ``count`` layers, in percent (0 for a single layer)."""
    return 0.0 if count <= 1 else 100.0 * index / (count - 1)


def layer_at_depth(percent: float, count: int) -> int:
    """The layer of ``count`` layers at ``percent`` of depth: ``round(percent / 100 * (count - 1))``, halves up.

    Exact (rational) arithmetic, so 50 % of 10 layers is layer 5 (4.5 rounded up), as
    :func:`camanim.report.align_by_depth` plays it; ``percent`` is read as the nearest fraction
    with a denominator up to 10 000, so ``100 * 5 / 6`` is 5/6 of the depth, not just below it.

    Raises:
        ValueError: ``count`` is below 1.
    """
    if count < 1:
        raise ValueError(f"a run needs at least one layer, got {count}")
    x = Fraction(str(percent)).limit_denominator(10_000) / 100 * (count - 1)
    return int((2 * x + 1) // 2)


def nearest_spatial(run: FigureRun, index: int) -> int | None:
    """The spatial layer nearest to ``index`` (the shallower one on a tie), or None if there is none."""
    spatial = [i for i in range(len(run.layers)) if not run.non_spatial(i)]
    return min(spatial, key=lambda i: (abs(i - index), i)) if spatial else None


def _tile(run: FigureRun, index: int, asked: str, spatial_only: bool) -> Tile:
    count = len(run.layers)
    if not run.non_spatial(index):
        return Tile(index, depth_of(index, count), asked)
    if spatial_only:
        near = nearest_spatial(run, index)
        if near is None:
            raise InputError(f"{run.label} has no spatial layer to show with --spatial-only: drop --spatial-only")
        return Tile(near, depth_of(near, count), asked, f"nearest spatial to #{index}")
    return Tile(index, depth_of(index, count), asked, "non-spatial: 1-D stripe")


def find_layer(run: FigureRun, name: str) -> int:
    """The index of the layer called ``name`` in ``run`` (its first call; ``name#2`` for the second).

    Raises:
        InputError: no layer has that name; the message shows a few that exist.
    """
    for i, layer in enumerate(run.layers):
        if layer.get("name") == name:
            return i
    some = ", ".join(str(layer.get("name")) for layer in run.layers[:: max(1, len(run.layers) // 5)][:5])
    raise InputError(f"{run.label} has no layer '{name}': use a name from its manifest.json or "
                     f"`camanim layers`, e.g. {some}")


def tiles_for(run: FigureRun, options: FigureOptions) -> list[Tile]:
    """The tiles of one run's strip: one per ``options.layers`` name, else one per depth.

    Raises:
        InputError: an unknown layer name, or no spatial layer with ``spatial_only``.
    """
    if options.layers:
        return [_tile(run, find_layer(run, name), name, options.spatial_only) for name in options.layers]
    count = len(run.layers)
    return [_tile(run, layer_at_depth(p, count), f"{p:g}%", options.spatial_only) for p in options.depths]


def figure_kind(runs: Sequence[FigureRun], options: FigureOptions) -> str:
    """Which figure ``runs`` make: ``norms`` with ``layer``; else ``filmstrip`` for one run, ``methods``
    for several runs of one model (same layers), ``models`` for runs of different models.

    Raises:
        InputError: no run, ``with_road`` with several runs, runs of different images, or ``layers`` across
            different models.
    """
    if not runs:
        raise InputError("no run folder given: pass one or more folders written by `camanim run`")
    if options.layer is not None:
        return NORMS
    if len(runs) == 1:
        return FILMSTRIP
    if options.with_road:
        raise InputError("--with-road draws a ybROAD strip under a one-run filmstrip: pass one run folder")
    images = list(dict.fromkeys(run.image_source for run in runs))
    if len(images) > 1:
        raise InputError(f"these runs explain different images ({', '.join(images[:3])}): a grid compares methods "
                         "or models on one image; make one figure per image")
    layer_names = {tuple(str(layer.get("name")) for layer in run.layers) for run in runs}
    if len(layer_names) == 1 and len({run.model_name for run in runs}) == 1:
        return METHODS
    if options.layers:
        raise InputError("--layers names layers of one model, and these runs are of different models: "
                         "use --depths to align them by relative depth")
    return MODELS


def norms_for(kind: str, options: FigureOptions) -> tuple[str, ...]:
    """The normalisations drawn: ``options.norms``, else both for a filmstrip or one layer, local for a grid."""
    if options.norms is not None:
        return options.norms
    return NORMALISATIONS if kind in (FILMSTRIP, NORMS) else ("local",)


def row_label(run: FigureRun, runs: Sequence[FigureRun], kind: str) -> str:
    """A grid row's label: what differs between the runs (method, model, image), and the folder as well
    where that leaves two rows with the same label (e.g. one model with two layer selections)."""
    def differs(r: FigureRun) -> str:
        parts = []
        if len({x.model_name for x in runs}) > 1 or kind == MODELS:
            parts.append(r.model_name)
        if len({x.method for x in runs}) > 1 or kind == METHODS:
            parts.append(r.method)
        if len({x.image_source for x in runs}) > 1:
            parts.append(r.image_source)
        return " · ".join(dict.fromkeys(parts))

    label = differs(run)
    if not label:
        return run.label
    if sum(differs(r) == label for r in runs) > 1:
        return f"{label} · {Path(run.label).name or run.label}"
    return label
