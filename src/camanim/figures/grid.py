"""The figures, as matplotlib figures: a filmstrip, a methods or models grid, one layer's normalisations.

Every figure is a grid of clean tiles (:mod:`.tiles`) with text set by matplotlib: each tile is
captioned with its layer's name, index and depth, each row of maps has one colour bar, and
each axes is labelled (``input:R``, ``tile:R:C``, ``colorbar:R`` or ``colorbar:R:C``, ``road``)
so the layout can be read back from the figure.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .layout import (
    FILMSTRIP,
    METHODS,
    MODELS,
    NORMS,
    FigureOptions,
    Tile,
    depth_of,
    figure_kind,
    find_layer,
    norms_for,
    row_label,
    tiles_for,
)
from .source import FigureRun
from .strip import draw_road_strip
from .tiles import cam_tile, stripe_tile, tile_image

_NORM_MEANING = {"local": "local (per map)", "global": "global (raw CAM)"}


@dataclass
class Row:
    """One row of maps: the run, its normalisation, its label and its tiles (one per column)."""

    run: int
    norm: str
    label: str
    tiles: list[Tile]


@dataclass
class FigurePlan:
    """What a figure shows, for its caller and tests: the kind, the rows and their tiles.

    Attributes:
        kind: ``filmstrip``, ``methods``, ``models`` or ``norms``.
        rows: the rows of maps, top to bottom.
        columns: the column headers (the depth or layer asked for; the normalisation in ``norms``).
        title: the figure's title.
    """

    kind: str
    rows: list[Row] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    title: str = ""


def style(options: FigureOptions) -> dict[str, Any]:
    """The matplotlib rc settings of every figure: one font (DejaVu Sans, shipped with matplotlib) and
    size, TrueType fonts embedded in the PDF (text stays text), no hashing salt left to chance."""
    fs = float(options.font_size)
    return {"font.family": "DejaVu Sans", "font.size": fs, "axes.titlesize": fs - 1, "axes.labelsize": fs,
            "xtick.labelsize": fs - 1, "ytick.labelsize": fs - 1, "legend.fontsize": fs - 1,
            "figure.titlesize": fs + 1, "pdf.fonttype": 42, "svg.hashsalt": "camanim"}


def set_title(fig: Any, title: str, options: FigureOptions) -> None:
    """The figure's title, wrapped at word boundaries to the figure's width (a one-column figure is
    narrower than its title; unwrapped, the title would be cut at both edges)."""
    import textwrap

    width_pt = float(fig.get_figwidth()) * 72.0
    # DejaVu Sans averages about 0.6 em per character; the title is font_size + 1 points
    chars = max(12, int(width_pt / (0.6 * (float(options.font_size) + 1))))
    fig.suptitle(textwrap.fill(title, chars, break_long_words=True))


@contextmanager
def figure_style(options: FigureOptions) -> Iterator[None]:
    """matplotlib's rc settings for building and saving a figure (see :func:`style`)."""
    from matplotlib import rc_context

    with rc_context(style(options)):
        yield


def _short(name: str, limit: int = 22) -> str:
    return name if len(name) <= limit else "…" + name[-(limit - 1):]


def caption(run: FigureRun, tile: Tile, with_name: bool = True) -> str:
    """A tile's caption: the layer's name, then ``#index · depth%``, then the note if any."""
    name = str(run.layers[tile.index].get("name", ""))
    lines = [_short(name)] if with_name else []
    lines.append(f"#{tile.index} · {tile.depth:.0f}%")
    if tile.note:
        lines.append(tile.note)
    return "\n".join(lines)


def _plain(ax: Any) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for side in ax.spines.values():
        side.set_visible(False)


def interpolation(image: np.ndarray, options: FigureOptions) -> str:
    """How a tile's pixels are resampled: ``nearest`` when the tile is printed at least as many
    dots wide as it has pixels (each CAM pixel shown as it is, as at 300 dpi), ``antialiased`` when
    it is shrunk (a low ``dpi`` for the screen), where nearest sampling would alias."""
    return "nearest" if options.tile_inches * options.dpi >= image.shape[1] else "antialiased"


def _show(ax: Any, image: np.ndarray, options: FigureOptions) -> None:
    ax.imshow(image, interpolation=interpolation(image, options))


def _draw_tile(ax: Any, run: FigureRun, tile: Tile, norm: str, options: FigureOptions) -> None:
    if run.non_spatial(tile.index):
        image, has_stripe = stripe_tile(run, tile.index, norm)
        _show(ax, image, options)
        text = "1-D layer, not a location" if has_stripe else "1-D layer: no evidence saved"
        ax.text(0.5, 0.25, text, transform=ax.transAxes, ha="center", va="center", color="white",
                fontsize=options.font_size - 2)
    else:
        _show(ax, cam_tile(run, tile.index, norm), options)
    _plain(ax)


def _colorbar(fig: Any, cax: Any, run: FigureRun, norm: str, index: int | None = None) -> None:
    """A colour bar of the run's colormap: 0-1 for local maps of many layers, the raw CAM values
    the colours stand for otherwise (one layer's range, or the network's for global)."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    cams = np.nan_to_num(run.cams[index] if index is not None and norm == "local" else run.cams)
    lo, hi = (float(cams.min()), float(cams.max())) if cams.size else (0.0, 0.0)
    if norm == "local" and index is None or not hi > lo:
        lo, hi = 0.0, 1.0
        label = _NORM_MEANING[norm] if norm == "local" else f"{norm}: constant map"
    else:
        label = f"{norm}: raw CAM" if index is not None else _NORM_MEANING[norm]
    bar = fig.colorbar(ScalarMappable(Normalize(lo, hi), run.colormap), cax=cax)
    bar.set_label(label)
    bar.outline.set_linewidth(0.4)


def _figsize(options: FigureOptions, cols: float, rows: Sequence[float]) -> tuple[float, float]:
    return options.tile_inches * cols + 0.9, sum(rows) + 0.45


def _title(run: FigureRun) -> str:
    target = run.view.manifest.get("target") or {}
    label = target.get("label")
    what = (str(label) if target.get("kind") == "value"
            else f"class {target.get('index')}" + (f" ({label})" if label else ""))
    return f"{run.model_name} · {run.method} · {run.image_source} · {what}"


def _caption_h(options: FigureOptions, lines: int) -> float:
    return lines * (options.font_size * 1.25) / 72


def build_figure(runs: Sequence[FigureRun], options: FigureOptions) -> tuple[Any, FigurePlan]:
    """The figure ``runs`` make (see :func:`camanim.figures.layout.figure_kind`) and its plan.

    Call inside :func:`figure_style` so that text is set, and the figure saved, with one font.

    Returns:
        (a ``matplotlib.figure.Figure`` not attached to pyplot, its :class:`FigurePlan`).

    Raises:
        InputError: see :func:`figure_kind`, :func:`camanim.figures.layout.tiles_for` and
            :func:`camanim.figures.strip.road_curve`.
    """
    kind = figure_kind(runs, options)
    if kind == NORMS:
        return _norms_figure(runs, options)
    if kind == FILMSTRIP:
        return _filmstrip(runs[0], options)
    return _grid(runs, options, kind)


def _tile_h(run: FigureRun, options: FigureOptions) -> float:
    h, w = run.cams.shape[-2:]
    return options.tile_inches * h / max(w, 1)


def _filmstrip(run: FigureRun, options: FigureOptions) -> tuple[Any, FigurePlan]:
    from matplotlib.figure import Figure

    norms = norms_for(FILMSTRIP, options)
    tiles = tiles_for(run, options)
    plan = FigurePlan(FILMSTRIP, [Row(0, n, n, tiles) for n in norms],
                      list(options.layers) or [f"{d:g}%" for d in options.depths], _title(run))
    n = len(tiles)
    cap = _caption_h(options, 3 if any(t.note for t in tiles) else 2)
    heights = [_tile_h(run, options) + cap] * len(norms) + ([options.tile_inches * 1.1] if options.with_road else [])
    fig = Figure(figsize=_figsize(options, n + 1, heights), dpi=options.dpi, layout="constrained")
    gs = fig.add_gridspec(len(heights), n + 2, width_ratios=[1.0] * (n + 1) + [0.07], height_ratios=heights)
    image_ax = fig.add_subplot(gs[0, 0], label="input:0")
    _show(image_ax, tile_image(run), options)
    image_ax.set_title("input", loc="center")
    _plain(image_ax)
    first_row = []
    for r, norm in enumerate(norms):
        for c, tile in enumerate(tiles):
            ax = fig.add_subplot(gs[r, c + 1], label=f"tile:{r}:{c}")
            first_row += [ax] if r == 0 else []
            _draw_tile(ax, run, tile, norm, options)
            ax.set_title(caption(run, tile))
            if c == 0:
                ax.set_ylabel(norm)
        _colorbar(fig, fig.add_subplot(gs[r, n + 1], label=f"colorbar:{r}"), run, norm)
    if options.with_road:
        road_ax = fig.add_subplot(gs[len(norms), 1:n + 1], label="road")
        draw_road_strip(road_ax, run, tiles, (-2.0, 102.0), options.font_size)
        set_title(fig, plan.title, options)
        _share_depth_axis(fig, road_ax, first_row, options)
        return fig, plan
    set_title(fig, plan.title, options)
    return fig, plan


def _share_depth_axis(fig: Any, road_ax: Any, first_row: Sequence[Any], options: FigureOptions) -> None:
    """Set the ybROAD strip's x limits so that each requested depth lies under the centre of its
    column (when the depths are evenly spaced and increasing; else the strip keeps 0-100 %)."""
    d = np.array(options.depths, float)
    if options.layers or len(d) < 2 or not (np.diff(d) > 0).all() or not np.allclose(np.diff(d), d[1] - d[0]):
        return
    fig.draw_without_rendering()  # the layout engine places the axes
    centre = [ax.get_window_extent().x0 + ax.get_window_extent().width / 2 for ax in (first_row[0], first_row[-1])]
    box = road_ax.get_window_extent()
    per_px = (d[-1] - d[0]) / (centre[1] - centre[0])
    road_ax.set_xlim(d[0] - (centre[0] - box.x0) * per_px, d[-1] + (box.x1 - centre[1]) * per_px)


def _grid(runs: Sequence[FigureRun], options: FigureOptions, kind: str) -> tuple[Any, FigurePlan]:
    from matplotlib.figure import Figure

    norms = norms_for(kind, options)
    per_run = [tiles_for(run, options) for run in runs]
    columns = list(options.layers) or [f"{d:g}%" for d in options.depths]
    rows = [Row(i, norm, row_label(run, runs, kind) + (f" · {norm}" if len(norms) > 1 else ""), per_run[i])
            for i, run in enumerate(runs) for norm in norms]
    if kind == METHODS:
        title = f"{runs[0].model_name} · {runs[0].image_source}: methods × depth"
    else:
        title = f"{', '.join(dict.fromkeys(r.method for r in runs))}: models × relative depth " \
                "(column = % of each model's layers)"
    plan = FigurePlan(kind, rows, columns, title)
    n = len(columns)
    # a methods grid shows the same layer down a column: its name once, in the header
    names_in_tiles = kind == MODELS
    cap = _caption_h(options, (3 if names_in_tiles else 1) + any(t.note for ts in per_run for t in ts))
    header = _caption_h(options, 1 if names_in_tiles else 3)
    heights = [_tile_h(runs[row.run], options) + cap for row in rows]
    heights[0] += header
    fig = Figure(figsize=_figsize(options, n + 1, heights), dpi=options.dpi, layout="constrained")
    gs = fig.add_gridspec(len(rows), n + 2, width_ratios=[1.0] * (n + 1) + [0.07], height_ratios=heights)
    for r, row in enumerate(rows):
        run = runs[row.run]
        if r == 0 or rows[r - 1].run != row.run:
            image_ax = fig.add_subplot(gs[r, 0], label=f"input:{r}")
            _show(image_ax, tile_image(run), options)
            _plain(image_ax)
            image_ax.set_ylabel(row.label)
            if r == 0:
                image_ax.set_title("input")
        for c, tile in enumerate(row.tiles):
            ax = fig.add_subplot(gs[r, c + 1], label=f"tile:{r}:{c}")
            _draw_tile(ax, run, tile, row.norm, options)
            text = caption(run, tile, with_name=names_in_tiles)
            if r == 0:
                head = f"depth {columns[c]}" if kind == MODELS and not options.layers else \
                    _short(str(run.layers[tile.index].get("name", "")))
                text = f"{head}\n{text}"
            ax.set_title(text)
            if len(norms) > 1 and c == 0 and not (r == 0 or rows[r - 1].run != row.run):
                ax.set_ylabel(row.label)
        _colorbar(fig, fig.add_subplot(gs[r, n + 1], label=f"colorbar:{r}"), run, row.norm)
    set_title(fig, plan.title, options)
    return fig, plan


def _norms_figure(runs: Sequence[FigureRun], options: FigureOptions) -> tuple[Any, FigurePlan]:
    from matplotlib.figure import Figure

    norms = norms_for(NORMS, options)
    name = str(options.layer)
    rows = []
    for i, run in enumerate(runs):
        index = find_layer(run, name)
        tile = Tile(index, depth_of(index, len(run.layers)), name,
                    "non-spatial: 1-D stripe" if run.non_spatial(index) else "")
        rows.append(Row(i, ",".join(norms), row_label(run, runs, METHODS) if len(runs) > 1 else name,
                        [tile] * len(norms)))
    plan = FigurePlan(NORMS, rows, list(norms), f"{name}: " + " vs ".join(norms) + " normalisation")
    cap = _caption_h(options, 3 + bool(rows[0].tiles[0].note))
    heights = [_tile_h(runs[row.run], options) + cap for row in rows]
    fig = Figure(figsize=_figsize(options, 1 + len(norms) * 1.35, heights), dpi=options.dpi, layout="constrained")
    ratios = [1.0] + [1.0, 0.07] * len(norms)
    gs = fig.add_gridspec(len(rows), len(ratios), width_ratios=ratios, height_ratios=heights)
    for r, row in enumerate(rows):
        run = runs[row.run]
        image_ax = fig.add_subplot(gs[r, 0], label=f"input:{r}")
        _show(image_ax, tile_image(run), options)
        image_ax.set_title("input")
        image_ax.set_ylabel(row.label if len(runs) > 1 else run.model_name)
        _plain(image_ax)
        for c, norm in enumerate(norms):
            tile = row.tiles[c]
            ax = fig.add_subplot(gs[r, 1 + 2 * c], label=f"tile:{r}:{c}")
            _draw_tile(ax, run, tile, norm, options)
            ax.set_title(f"{norm}\n{caption(run, tile)}")
            _colorbar(fig, fig.add_subplot(gs[r, 2 + 2 * c], label=f"colorbar:{r}:{c}"), run, norm, tile.index)
    set_title(fig, plan.title, options)
    return fig, plan

