"""figures: a paper's figures from finished runs, as PNG (print resolution) and vector PDF.

Filmstrips by depth (local and global rows, an optional ybROAD strip), methods × depths and
models × depths grids (aligned by relative depth), and one layer's normalisations side by side;
clean tiles (the CAM over the image with the run's colormap), text set by matplotlib.

============  ==============================================================
module        job
============  ==============================================================
``source``    a run as a figure reads it (:class:`camanim.rundir.RunView` + ``cams.npz``)
``layout``    ``FigureOptions``; which layer each column shows (depth, names, spatial only)
``tiles``     clean tiles: overlays and non-spatial stripes
``strip``     the ybROAD strip on the filmstrip's depth axis
``grid``      the figures as matplotlib figures, with their plan
``files``     PNG + PDF, fixed metadata, written atomically
============  ==============================================================

Example:
    >>> from camanim.figures import FigureOptions, write_figure
    >>> write_figure(["camanim-out"], "fig.pdf", FigureOptions(with_road=True))  # doctest: +SKIP
"""

from .files import figure_paths, save_figure, write_figure
from .grid import FigurePlan, Row, build_figure, figure_style
from .layout import (
    DEFAULT_DEPTHS,
    FigureOptions,
    Tile,
    depth_of,
    figure_kind,
    layer_at_depth,
    nearest_spatial,
    tiles_for,
)
from .source import FigureRun, read_run, read_runs
from .strip import RoadCurve, road_curve
from .tiles import cam_tile, overlay, stripe_tile, tile_image

__all__ = ["DEFAULT_DEPTHS", "FigureOptions", "FigurePlan", "FigureRun", "RoadCurve", "Row", "Tile",
           "build_figure", "cam_tile", "depth_of", "figure_kind", "figure_paths", "figure_style", "layer_at_depth",
           "nearest_spatial", "overlay", "read_run", "read_runs", "road_curve", "save_figure", "stripe_tile", "tile_image",
           "tiles_for", "write_figure"]
