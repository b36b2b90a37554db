"""Which layer each column shows: depth by value, layer names, non-spatial layers, the figure's kind."""

from __future__ import annotations

import pytest

from camanim import InputError
from camanim.figures import (
    FigureOptions,
    depth_of,
    figure_kind,
    layer_at_depth,
    nearest_spatial,
    read_run,
    tiles_for,
)
from camanim.report import align_by_depth


def test_layer_at_depth_rounds_halves_up_exactly():
    assert [layer_at_depth(p, 10) for p in (0, 10, 50, 90, 100)] == [0, 1, 5, 8, 9]  # 50 % of 9 = 4.5 -> 5
    assert [layer_at_depth(p, 7) for p in (0, 20, 40, 60, 80, 100)] == [0, 1, 2, 4, 5, 6]  # 1.2, 2.4, 3.6, 4.8
    assert [layer_at_depth(p, 4) for p in (0, 30, 50, 100)] == [0, 1, 2, 3]  # 0.9, 1.5 -> 2
    assert layer_at_depth(100 / 3, 4) == 1 and layer_at_depth(50, 1) == 0
    with pytest.raises(ValueError):
        layer_at_depth(50, 0)


def test_layer_at_depth_agrees_with_the_compare_pages_alignment():
    for counts, steps in (([7, 4, 61, 2], 11), ([571, 10], 7)):
        mapping = align_by_depth(counts, steps)
        for r, count in enumerate(counts):
            assert [layer_at_depth(100 * s / (steps - 1), count) for s in range(steps)] == mapping[r]


def test_depth_of_is_the_layers_share_of_the_depth():
    assert [depth_of(i, 7) for i in (0, 3, 6)] == [0.0, 50.0, 100.0]
    assert depth_of(0, 1) == 0.0


def test_options_are_checked_on_construction():
    assert FigureOptions.parse_depths("0, 25,50%,100") == (0.0, 25.0, 50.0, 100.0)
    for bad, match in ((dict(depths=(0, 120)), "outside 0-100"), (dict(depths=()), "empty"),
                       (dict(norms=("local", "max")), "--norms"), (dict(layers=("a",), layer="b"), "exclude"),
                       (dict(dpi=5), "--dpi")):
        with pytest.raises(InputError, match=match):
            FigureOptions(**bad)
    with pytest.raises(InputError, match="'ten' is not a number"):
        FigureOptions.parse_depths("0,ten")


def test_tiles_by_depth_name_the_layer_its_depth_and_a_non_spatial_stripe(figure_runs):
    run = read_run(figure_runs["gradcam"])  # 7 layers, the last (fc) non-spatial
    tiles = tiles_for(run, FigureOptions(depths=(0, 50, 100)))
    assert [(t.index, round(t.depth, 3), t.asked, t.note) for t in tiles] == [
        (0, 0.0, "0%", ""), (3, 50.0, "50%", ""), (6, 100.0, "100%", "non-spatial: 1-D stripe")]


def test_spatial_only_moves_to_the_nearest_spatial_layer_and_says_so(figure_runs):
    run = read_run(figure_runs["gradcam"])
    assert nearest_spatial(run, 6) == 5 and nearest_spatial(run, 2) == 2
    tiles = tiles_for(run, FigureOptions(depths=(100,), spatial_only=True))
    assert [(t.index, t.note) for t in tiles] == [(5, "nearest spatial to #6")]


def test_tiles_by_name_and_an_unknown_name(figure_runs):
    run = read_run(figure_runs["gradcam"])
    tiles = tiles_for(run, FigureOptions(layers=("layer2.0.conv1", "conv1")))
    assert [(t.index, t.asked) for t in tiles] == [(2, "layer2.0.conv1"), (0, "conv1")]
    with pytest.raises(InputError, match="has no layer 'layer9'.*conv1"):
        tiles_for(run, FigureOptions(layers=("layer9",)))


def test_the_kind_follows_the_runs(figure_runs):
    gc, hc, mb = (read_run(figure_runs[k]) for k in ("gradcam", "hirescam", "mobilenet"))
    assert figure_kind([gc], FigureOptions()) == "filmstrip"
    assert figure_kind([gc, hc], FigureOptions()) == "methods"
    assert figure_kind([gc, mb], FigureOptions()) == "models"
    assert figure_kind([gc, mb], FigureOptions(layer="conv1")) == "norms"
    with pytest.raises(InputError, match="different models: use --depths"):
        figure_kind([gc, mb], FigureOptions(layers=("conv1",)))
    with pytest.raises(InputError, match="one-run filmstrip"):
        figure_kind([gc, hc], FigureOptions(with_road=True))
    with pytest.raises(InputError, match="no run folder"):
        figure_kind([], FigureOptions())


def _copy_run(src, dst, image_source=None):
    import json
    import shutil

    shutil.copytree(src, dst)
    if image_source is not None:
        manifest = json.loads((dst / "manifest.json").read_text())
        manifest["image"]["source"] = image_source
        (dst / "manifest.json").write_text(json.dumps(manifest))
    return dst


def test_runs_of_different_images_are_refused_not_mislabelled(figure_runs, tmp_path):
    other = _copy_run(figure_runs["hirescam"], tmp_path / "coffee", image_source="sample:coffee")
    runs = [read_run(figure_runs["gradcam"]), read_run(other)]
    with pytest.raises(InputError, match=r"different images \(sample:cat, sample:coffee\)"):
        figure_kind(runs, FigureOptions())


def test_rows_that_would_read_the_same_are_told_apart_by_their_folder(figure_runs, tmp_path):
    from camanim.figures.layout import METHODS, row_label

    a = read_run(_copy_run(figure_runs["gradcam"], tmp_path / "first"))
    b = read_run(_copy_run(figure_runs["gradcam"], tmp_path / "second"))
    c = read_run(figure_runs["hirescam"])
    assert [row_label(r, [a, b, c], METHODS) for r in (a, b, c)] == ["gradcam · first", "gradcam · second", "hirescam"]
    assert [row_label(r, [a, c], METHODS) for r in (a, c)] == ["gradcam", "hirescam"]
