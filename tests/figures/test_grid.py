"""The figures' layout read back from their axes, captions, colours in the saved PNG, and the
ybROAD strip's depth axis under the filmstrip's columns."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from camanim.draw import colormap_lut, normalise
from camanim.figures import FigureOptions, build_figure, cam_tile, figure_style, read_run, road_curve
from camanim.figures.grid import interpolation
from camanim.rundir import load_cams, names, read_cams


def _axes(fig) -> dict[str, object]:
    return {ax.get_label(): ax for ax in fig.axes}


def _tiles(axes: dict) -> dict[tuple[int, int], object]:
    return {tuple(map(int, k.split(":")[1:])): ax for k, ax in axes.items() if k.startswith("tile:")}


def _png(fig, dpi: int) -> np.ndarray:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return np.asarray(Image.open(buf).convert("RGB"))


def _check_grid(tiles: dict, rows: int, cols: int) -> None:
    """``rows`` x ``cols`` tiles: one row shares its top edge, one column its centre, in reading order."""
    assert sorted(tiles) == [(r, c) for r in range(rows) for c in range(cols)]
    pos = {k: ax.get_position() for k, ax in tiles.items()}
    for r in range(rows):
        assert len({round(pos[r, c].y1, 4) for c in range(cols)}) == 1
        xs = [pos[r, c].x0 for c in range(cols)]
        assert xs == sorted(xs) and len(set(xs)) == cols
    for c in range(cols):
        centres = {round((pos[r, c].x0 + pos[r, c].x1) / 2, 4) for r in range(rows)}
        assert len(centres) == 1
        ys = [pos[r, c].y0 for r in range(rows)]
        assert ys == sorted(ys, reverse=True)


def test_filmstrip_local_and_global_rows_one_colour_bar_each_and_captions(figure_runs):
    run = read_run(figure_runs["gradcam"])
    options = FigureOptions(depths=(0, 50, 100), dpi=72)
    with figure_style(options):
        fig, plan = build_figure([run], options)
        fig.draw_without_rendering()
    axes = _axes(fig)
    assert plan.kind == "filmstrip" and [r.norm for r in plan.rows] == ["local", "global"]
    _check_grid(_tiles(axes), 2, 3)
    assert sorted(k for k in axes if not k.startswith("tile:")) == ["colorbar:0", "colorbar:1", "input:0"]
    tiles = _tiles(axes)
    assert tiles[0, 0].get_title() == "conv1\n#0 · 0%"
    assert tiles[0, 1].get_title() == "layer3.0.conv1\n#3 · 50%"
    assert tiles[1, 2].get_title() == "fc\n#6 · 100%\nnon-spatial: 1-D stripe"
    assert [tiles[r, 0].get_ylabel() for r in (0, 1)] == ["local", "global"]
    # 1.15 in at 72 dpi shrinks a 224-pixel tile: antialiased; at 300 dpi each pixel is shown as is
    assert {ax.get_images()[0].get_interpolation() for ax in tiles.values()} == {"antialiased"}
    assert interpolation(np.zeros((224, 224, 3)), FigureOptions(dpi=300)) == "nearest"
    for r in (0, 1):  # the colour bar stands right of its own row
        bar = axes[f"colorbar:{r}"].get_position()
        row = [tiles[r, c].get_position() for c in range(3)]
        assert bar.x0 > max(p.x1 for p in row) and bar.y0 < row[0].y1 and bar.y1 > row[0].y0
    assert axes["colorbar:0"].get_ylim() == (0.0, 1.0)  # local maps: each its own 0-1
    cams = load_cams(figure_runs["gradcam"])
    assert axes["colorbar:1"].get_ylim() == pytest.approx((float(cams.min()), float(cams.max())))  # global: raw


def test_tile_colours_in_the_saved_png_are_the_runs_normalised_cams(figure_runs):
    """Each tile's pixels in the PNG, at known CAM pixels, are the overlay of the run's normalised CAM."""
    run = read_run(figure_runs["gradcam"])
    saved = read_cams(figure_runs["gradcam"] / names.CAMS)
    lut = colormap_lut("jet").astype(np.float64)
    options = FigureOptions(depths=(0, 50), dpi=200)
    with figure_style(options):
        fig, plan = build_figure([run], options)
        png = _png(fig, options.dpi)
    tiles = _tiles(_axes(fig))
    assert png.shape[:2] == (round(fig.get_figheight() * 200), round(fig.get_figwidth() * 200))
    checked = 0
    for (r, c), ax in tiles.items():
        norm, index = plan.rows[r].norm, plan.rows[r].tiles[c].index
        normed = normalise(torch.from_numpy(saved.cams), norm)[index].numpy()
        tile = np.rint(0.5 * saved.image + 0.5 * lut[np.rint(255 * normed).astype(int)]).astype(np.uint8)
        points = [(40, 40), (112, 150), (200, 20), np.unravel_index(normed.argmax(), normed.shape)]
        for y, x in points:
            px, py = ax.transData.transform((x, y))
            row, col = png.shape[0] - int(py) - 1, int(px)
            # nearest-neighbour sampling may land on a neighbouring CAM pixel at a boundary
            near = {tuple(tile[j, i]) for j in range(max(y - 1, 0), min(y + 2, 224))
                    for i in range(max(x - 1, 0), min(x + 2, 224))}
            assert tuple(png[row, col]) in near, (norm, index, y, x)
            checked += 1
    assert checked == 16


def test_the_road_strip_shares_the_filmstrips_depth_axis_and_marks_the_best_layer(figure_runs):
    run = read_run(figure_runs["gradcam"])
    options = FigureOptions(depths=(0, 20, 40, 60, 80, 100), with_road=True, dpi=100)
    with figure_style(options):
        fig, _ = build_figure([run], options)
        fig.draw_without_rendering()
    axes = _axes(fig)
    tiles, road = _tiles(axes), axes["road"]
    for c, depth in enumerate(options.depths):  # each requested depth lies under the centre of its column
        box = tiles[0, c].get_window_extent()
        assert road.transData.transform((depth, 0))[0] == pytest.approx((box.x0 + box.x1) / 2, abs=1.0)
    assert road.get_position().y1 < min(ax.get_position().y0 for ax in tiles.values())
    curve = road_curve(run)
    line = next(ln for ln in road.get_lines() if ln.get_label() == "ybROAD per layer")
    np.testing.assert_allclose(line.get_xdata(), [100 * i / 6 for i in range(7)])
    np.testing.assert_allclose(line.get_ydata(), curve.values, equal_nan=True)
    star = next(ln for ln in road.get_lines() if ln.get_label() == "best layer")
    best = curve.best
    assert best == int(np.nanargmax(curve.values))
    assert (star.get_xdata()[0], star.get_ydata()[0]) == pytest.approx((100 * best / 6, curve.values[best]))
    assert any(t.get_text().startswith(f"best: {curve.best_name} (#{best},") for t in road.texts)


def test_methods_grid_is_methods_by_depths_with_the_same_layers(figure_runs):
    runs = [read_run(figure_runs[k]) for k in ("gradcam", "hirescam")]
    options = FigureOptions(depths=(0, 50, 100), norms=("local", "global"), dpi=72)
    with figure_style(options):
        fig, plan = build_figure(runs, options)
        fig.draw_without_rendering()
    axes = _axes(fig)
    assert plan.kind == "methods"
    assert [r.label for r in plan.rows] == ["gradcam · local", "gradcam · global", "hirescam · local",
                                            "hirescam · global"]
    _check_grid(_tiles(axes), 4, 3)
    assert sorted(k for k in axes if k.startswith("colorbar:")) == [f"colorbar:{r}" for r in range(4)]
    assert [[t.index for t in r.tiles] for r in plan.rows] == [[0, 3, 6]] * 4
    assert _tiles(axes)[0, 1].get_title() == "layer3.0.conv1\n#3 · 50%"  # the layer named once, at the top
    assert axes["input:0"].get_ylabel() == "gradcam · local" and axes["input:2"].get_ylabel() == "hirescam · local"


def test_models_grid_aligns_models_of_different_depth_by_value(figure_runs):
    runs = [read_run(figure_runs[k]) for k in ("gradcam", "mobilenet")]  # 7 and 4 layers
    options = FigureOptions(depths=(0, 30, 50, 100), dpi=72)
    with figure_style(options):
        fig, plan = build_figure(runs, options)
        fig.draw_without_rendering()
    assert plan.kind == "models" and [r.label for r in plan.rows] == ["resnet18", "mobilenet_v3_small"]
    # resnet18: 30 % of 6 = 1.8 -> 2, 50 % -> 3; mobilenet: 30 % of 3 = 0.9 -> 1, 50 % = 1.5 -> 2
    assert [[t.index for t in r.tiles] for r in plan.rows] == [[0, 2, 3, 6], [0, 1, 2, 3]]
    tiles = _tiles(_axes(fig))
    _check_grid(tiles, 2, 4)
    assert tiles[0, 1].get_title() == "depth 30%\nlayer2.0.conv1\n#2 · 33%"
    assert tiles[1, 2].get_title() == "features.12\n#2 · 67%"
    assert tiles[1, 3].get_title() == "classifier.3\n#3 · 100%\nnon-spatial: 1-D stripe"
    assert "relative depth" in plan.title


def test_norms_figure_puts_one_layers_local_and_global_side_by_side(figure_runs):
    run = read_run(figure_runs["gradcam"])
    options = FigureOptions(layer="layer3.0.conv1", dpi=72)
    with figure_style(options):
        fig, plan = build_figure([run], options)
        fig.draw_without_rendering()
    axes = _axes(fig)
    assert plan.kind == "norms" and plan.columns == ["local", "global"]
    assert sorted(axes) == ["colorbar:0:0", "colorbar:0:1", "input:0", "tile:0:0", "tile:0:1"]
    assert axes["tile:0:0"].get_title() == "local\nlayer3.0.conv1\n#3 · 50%"
    assert axes["tile:0:1"].get_title() == "global\nlayer3.0.conv1\n#3 · 50%"
    local, glob = axes["tile:0:0"].get_images()[0].get_array(), axes["tile:0:1"].get_images()[0].get_array()
    assert np.array_equal(local, cam_tile(run, 3, "local")) and np.array_equal(glob, cam_tile(run, 3, "global"))
    cams = load_cams(figure_runs["gradcam"])
    assert axes["colorbar:0:0"].get_ylim() == pytest.approx((float(cams[3].min()), float(cams[3].max())))
    assert axes["colorbar:0:1"].get_ylim() == pytest.approx((float(cams.min()), float(cams.max())))


@pytest.mark.parametrize(("depths", "font_size"), [((50,), 9), ((50,), 16), ((0, 50, 100), 16)])
def test_the_title_fits_the_figure_however_narrow(figure_runs, depths, font_size):
    run = read_run(figure_runs["mobilenet"])
    options = FigureOptions(depths=depths, dpi=60, font_size=font_size)
    with figure_style(options):
        fig, plan = build_figure([run], options)
        fig.draw_without_rendering()
        box, page = fig._suptitle.get_window_extent(), fig.bbox
    assert plan.title.split()[0] in fig._suptitle.get_text()
    assert page.x0 - 1 <= box.x0 and box.x1 <= page.x1 + 1 and box.y1 <= page.y1 + 1
