"""The HTML report, its PNG plots and the multi-run comparison, on synthetic run folders."""

from __future__ import annotations

import base64
import html
import io
import json
import os
import re
import stat
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
import torch
from _runfixture import frame_colour, make_run_dir, ybroad_values
from PIL import Image

from camanim.draw.render import render_frames
from camanim.report import align_by_depth, build_report, compare, report_html
from camanim.report.template import COMPARE_JS, REPORT_JS
from camanim.road import YbRoad, write_ybroad
from camanim.trace import LayerRecord

# Lossy frame encoding (WebP/JPEG, then H.264 for the video) moves solid colours
# by a few levels; neighbouring fixture colours differ by far more than this.
COLOUR_TOL = 12
VIDEO_COLOUR_TOL = 24


def _json_script(page: str, element_id: str):
    match = re.search(rf'<script type="application/json" id="{re.escape(element_id)}">(.*?)</script>', page, re.S)
    assert match, f"no JSON script #{element_id}"
    return json.loads(match.group(1))


def _decode_data_uri(uri: str) -> np.ndarray:
    header, payload = uri.split(",", 1)
    assert re.fullmatch(r"data:image/(webp|jpeg);base64", header), header
    with Image.open(io.BytesIO(base64.b64decode(payload))) as img:
        return np.asarray(img.convert("RGB"), dtype=np.float64)


def _assert_colour(pixels: np.ndarray, expected: tuple[int, int, int], tol: float) -> None:
    mean = pixels.reshape(-1, 3).mean(axis=0)
    assert np.abs(mean - np.array(expected)).max() <= tol, (mean.round(1).tolist(), expected)


@pytest.fixture()
def run(tmp_path: Path) -> Path:
    return make_run_dir(tmp_path / "run", n_layers=5)


def test_build_report_writes_files_and_shows_run_facts(run: Path) -> None:
    path = build_report(run)

    assert path == run / "report.html"
    page = path.read_text(encoding="utf-8")
    assert page.lower().startswith("<!doctype html>")
    assert "resnet_tiny" in page and "resnet_tiny-weights" in page
    assert "gradcam" in page
    assert "Egyptian cat" in page and "285" in page and "77.0%" in page
    assert "sample:cat" in page and "224×224" in page
    for name in ("layer_params.png", "layer_time.png"):
        assert (run / name).is_file()
    # no leftovers from the atomic write
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == []


def test_report_is_self_contained(run: Path) -> None:
    page = report_html(run)

    # nothing fetched from disk or network when the file is opened: images are data URIs, and the
    # only links are the download links to the run's own files (relative, each there)
    assert not re.search(r'\ssrc="(?!data:)', page), "external resource referenced"
    hrefs = re.findall(r'\shref="([^"]*)"', page)
    assert hrefs and all(":" not in h and not h.startswith(("/", "..")) for h in hrefs), hrefs
    assert all((run / h).exists() for h in hrefs if not h.startswith("#")), hrefs
    downloads = re.search(r'<p class="cam-downloads" id="downloads">(.*?)</p>', page).group(1)
    for name in ("manifest.json", "cams.npz", "ybroad.json", "frames/local/", "frames/global/"):
        assert f'href="{name}"' in downloads, name
    assert "frames folder (PNG)" in downloads  # (review) a folder is not a download: said so
    videos = ["camanim_local.mp4", "camanim_global.mp4", "camanim_side_by_side.mp4"]
    for name in videos:
        (run / name).write_bytes(b"")  # the manifest names them; now they are there
    hrefs = re.findall(r'\shref="([^"]*)"', report_html(run))
    assert [hrefs.count(name) for name in videos] == [1, 1, 1], hrefs  # (review) each linked once, not twice
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in page
    # interactive elements the browser test and users rely on
    for element_id in ("layer-slider", "frame-local", "frame-global", "layer-caption", "layer-table", "play",
                       "ybroad-plot", "params-plot", "time-plot"):
        assert f'id="{element_id}"' in page, element_id


def test_every_frame_embedded_once_in_layer_order(run: Path) -> None:
    page = report_html(run)

    for norm in ("local", "global"):
        frames = _json_script(page, f"frames-data-{norm}")
        assert len(frames) == 5
        for i, uri in enumerate(frames):
            _assert_colour(_decode_data_uri(uri), frame_colour(norm, i), COLOUR_TOL)
        # the first frame is also the image's static source: what shows without JavaScript
        static = re.search(rf'<img id="frame-{norm}" src="([^"]+)"', page)
        assert static is not None and static.group(1) == frames[0]
    assert page.count("data:image/") == 10 + 2


def test_layer_data_round_trips_through_embedded_json(tmp_path: Path) -> None:
    names = ["stem", 'quote"s', "amp&ersand", "layer1.0.relu#2", "ünïcode →"]
    run = make_run_dir(tmp_path / "run", n_layers=5, names=names)
    manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))

    data = _json_script(report_html(run), "report-data")

    assert data["layers"] == manifest["layers"]
    assert [layer["name"] for layer in data["layers"]] == names
    assert data["norms"] == ["local", "global"]
    assert data["ybroad"]["values"] == ybroad_values(5)
    assert data["ybroad"]["best"] == 3


def test_hostile_layer_names_are_escaped_everywhere(tmp_path: Path) -> None:
    names = ["<script>alert(1)</script>", "</script><!--", "<img src=x onerror=alert(2)>", "a&b", "ok"]
    run = make_run_dir(tmp_path / "run", n_layers=5, names=names)

    page = report_html(run)

    assert "<script>alert(1)" not in page
    assert "<img src=x" not in page
    assert "<!--" not in page
    # only our own scripts: page data, two frame arrays, the viewer code
    assert page.count("<script") == 4
    assert page.count("</script>") == 4
    # shown as text in the table ...
    assert html.escape(names[0]) in page
    # ... and exact again after JSON.parse
    assert [layer["name"] for layer in _json_script(page, "report-data")["layers"]] == names


def test_table_rows_carry_layer_index_and_flags(run: Path) -> None:
    page = report_html(run)

    rows = re.findall(r'<tr data-index="(\d+)"[^>]*>(.*?)</tr>', page, re.S)
    assert [int(i) for i, _ in rows] == [0, 1, 2, 3, 4]
    assert "non-spatial" in rows[4][1]
    assert "non-spatial" not in rows[0][1]
    assert "best ybROAD" in rows[3][1]
    assert "1×64×56×56" in rows[0][1]
    assert "9,408" in rows[0][1]


def test_ybroad_points_cover_defined_layers_and_mark_the_best(run: Path) -> None:
    page = report_html(run)

    svg = re.search(r'<svg[^>]*id="ybroad-plot".*?</svg>', page, re.S).group(0)
    points = [int(i) for i in re.findall(r'<circle[^>]*data-index="(\d+)"', svg)]
    assert points == [0, 1, 2, 3]  # layer 4 is undefined
    best = re.findall(r'<circle[^>]*class="[^"]*cam-best[^"]*"[^>]*data-index="(\d+)"', svg)
    assert best == ["3"]


def test_report_without_ybroad(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "run", n_layers=3, with_ybroad=False)

    page = report_html(run)

    assert 'id="ybroad-plot"' not in page
    assert _json_script(page, "report-data")["ybroad"] is None
    assert 'id="params-plot"' in page


def test_inline_fragment_is_namespaced(run: Path) -> None:
    first = report_html(run, inline=True)
    second = report_html(run, inline=True)

    for fragment in (first, second):
        assert not re.search(r"<(!doctype|html|head|body)\b", fragment, re.I)
    prefix_a = re.search(r'id="(camanim-[0-9a-f]+-)root"', first).group(1)
    prefix_b = re.search(r'id="(camanim-[0-9a-f]+-)root"', second).group(1)
    assert prefix_a != prefix_b
    ids = re.findall(r'\sid="([^"]+)"', first)
    assert ids and all(i.startswith(prefix_a) for i in ids), [i for i in ids if not i.startswith(prefix_a)]
    assert f'id="{prefix_a}layer-slider"' in first
    # a notebook gets one contact sheet per normalisation (an <img>: visible without JavaScript), tile i = layer i
    data = _json_script(first, f"{prefix_a}report-data")
    assert f"{prefix_a}frames-data-local" not in first
    for norm in ("local", "global"):
        sheet = data["sheets"][norm]
        uri = re.search(rf'<img class="cam-sheet" id="{prefix_a}sheet-{norm}" src="([^"]+)"', first).group(1)
        pixels = _decode_data_uri(uri)
        th, tw = sheet["tile"]
        assert pixels.shape[:2] == (sheet["rows"] * th, sheet["cols"] * tw) and sheet["cols"] * sheet["rows"] >= 5
        for i in range(5):
            r, c = divmod(i, sheet["cols"])
            tile = pixels[r * th:(r + 1) * th, c * tw:(c + 1) * tw]
            _assert_colour(tile[2:-2, 2:-2], frame_colour(norm, i), COLOUR_TOL)
    # styles stay inside the fragment's root so a notebook's own look is untouched
    style = re.search(r"<style>(.*?)</style>", first, re.S).group(1)
    selectors = [s.strip() for block in re.findall(r"([^{}]+)\{[^{}]*\}", style) for s in block.split(",")]
    assert selectors and all(s.startswith(".camanim") for s in selectors if not s.startswith("@")), selectors


def test_plots_written_as_readable_pngs(tmp_path: Path) -> None:
    # "$...$" would be mathtext to matplotlib; a name must not break (or change) the plot
    names = [f"block{i}.conv" for i in range(38)] + ["price$tag$", "x" * 80]
    run = make_run_dir(tmp_path / "run", n_layers=40, names=names)
    build_report(run)

    for name in ("layer_params.png", "layer_time.png"):
        with Image.open(run / name) as img:
            assert img.format == "PNG"
            width, height = img.size
            assert 800 <= width <= 3000 and 400 <= height <= 1600, img.size
            pixels = np.asarray(img.convert("L"))
        # a chart, not a blank canvas: plenty of dark (bars, text) and light (background) pixels
        assert (pixels < 128).mean() > 0.01
        assert (pixels > 200).mean() > 0.5


def test_align_by_depth_maps_relative_depth() -> None:
    mapping = align_by_depth([5, 3, 9, 1])

    assert mapping == [
        [0, 1, 1, 2, 2, 3, 3, 4, 4],
        [0, 0, 1, 1, 1, 1, 2, 2, 2],
        list(range(9)),
        [0] * 9,
    ]
    assert align_by_depth([1, 1]) == [[0], [0]]
    assert align_by_depth([4], steps=3) == [[0, 2, 3]]  # t = 0, 0.5, 1 -> round(1.5) = 2, half up
    with pytest.raises(ValueError, match="layer"):
        align_by_depth([3, 0])


def test_compare_page_aligns_runs_of_different_lengths(tmp_path: Path) -> None:
    short = make_run_dir(tmp_path / "short", n_layers=3, model="tiny_a", method="gradcam")
    long = make_run_dir(tmp_path / "long", n_layers=5, model="tiny_b", method="scorecam")

    result = compare([short, long], tmp_path / "cmp", fps=5)

    assert set(result) == {"html", "video", "video_global"}  # the grid in both normalisations
    assert result["video_global"] == tmp_path / "cmp" / "compare_grid_global.mp4" and result["video_global"].is_file()
    assert result["html"] == tmp_path / "cmp" / "compare.html"
    page = result["html"].read_text(encoding="utf-8")
    assert "tiny_a" in page and "scorecam" in page
    assert "relative depth" in page
    data = _json_script(page, "compare-data")
    assert data["steps"] == 5
    assert data["mapping"] == [[0, 1, 1, 2, 2], [0, 1, 2, 3, 4]]
    assert [len(run["layers"]) for run in data["runs"]] == [3, 5]
    for r, n in enumerate((3, 5)):
        frames = _json_script(page, f"frames-data-{r}-local")
        assert len(frames) == n
        _assert_colour(_decode_data_uri(frames[-1]), frame_colour("local", n - 1), COLOUR_TOL)
    for element_id in ("depth-slider", "play", "frame-0", "frame-1", "caption-0", "caption-1"):
        assert f'id="{element_id}"' in page


def test_compare_titles_tell_runs_of_the_same_model_and_method_apart(tmp_path: Path) -> None:
    """(review) Two runs of one model and method (two targets, two images) are titled by their folders too."""
    one = make_run_dir(tmp_path / "tabby", n_layers=3, model="tiny_a", method="gradcam")
    two = make_run_dir(tmp_path / "eel", n_layers=3, model="tiny_a", method="gradcam")
    other = make_run_dir(tmp_path / "other", n_layers=3, model="tiny_b", method="gradcam")
    page = html.unescape(compare([one, two, other], tmp_path / "cmp", fps=5)["html"].read_text(encoding="utf-8"))
    assert re.findall(r'<div class="cam-col"><h2>(.*?)</h2>', page) == [
        "tiny_a · gradcam · tabby", "tiny_a · gradcam · eel", "tiny_b · gradcam"]
    assert [run["title"] for run in _json_script(page, "compare-data")["runs"]] == [
        "tiny_a · gradcam · tabby", "tiny_a · gradcam · eel", "tiny_b · gradcam"]


def test_compare_video_tiles_aligned_frames(tmp_path: Path) -> None:
    short = make_run_dir(tmp_path / "short", n_layers=3, size=(64, 48))
    long = make_run_dir(tmp_path / "long", n_layers=5, size=(70, 45))  # odd height, other size

    video = compare([short, long], tmp_path / "cmp", fps=4)["video"]

    reader = imageio_ffmpeg.read_frames(str(video))
    meta = reader.__next__()
    width, height = meta["size"]
    assert width % 2 == 0 and height % 2 == 0
    frames = [np.frombuffer(f, dtype=np.uint8).reshape(height, width, 3) for f in reader]
    assert len(frames) == 5
    mapping = align_by_depth([3, 5])
    for step, frame in enumerate(frames):
        for r in range(2):
            # the middle of each run's column shows that run's aligned layer
            cx = (2 * r + 1) * width // 4
            patch = frame[height // 2 - 4 : height // 2 + 4, cx - 4 : cx + 4].astype(np.float64)
            _assert_colour(patch, frame_colour("local", mapping[r][step]), VIDEO_COLOUR_TOL)


def test_not_a_run_folder_is_a_clear_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"empty.*manifest\.json.*camanim run"):
        build_report(empty)
    with pytest.raises(ValueError, match="does not exist"):
        report_html(tmp_path / "missing")
    good = make_run_dir(tmp_path / "good", n_layers=2)
    with pytest.raises(ValueError, match=r"empty.*manifest\.json"):
        compare([good, empty], tmp_path / "cmp")
    with pytest.raises(ValueError, match="at least one run"):
        compare([], tmp_path / "cmp")
    assert not (tmp_path / "cmp" / "compare.html").exists()


def test_broken_run_folders_name_the_problem(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "run", n_layers=3)
    (run / "frames" / "global" / "0002.png").unlink()
    with pytest.raises(ValueError, match=r"0002\.png"):
        build_report(run)
    assert not (run / "report.html").exists()

    bad = make_run_dir(tmp_path / "bad", n_layers=2)
    (bad / "manifest.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match=r"manifest\.json.*not valid JSON"):
        build_report(bad)


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_written_files_follow_the_umask_like_open(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        run = make_run_dir(tmp_path / "run", n_layers=3)
        build_report(run)
        compare([run], tmp_path / "cmp", fps=4)
    finally:
        os.umask(old)

    written = [run / "report.html", run / "layer_params.png", run / "layer_time.png",
               tmp_path / "cmp" / "compare.html", tmp_path / "cmp" / "compare_grid.mp4"]
    assert {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in written} == {
        p.name: oct(0o666 & ~umask) for p in written
    }


def _rewrite_json(path: Path, edit) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    edit(data)
    path.write_text(json.dumps(data), encoding="utf-8")


def _row_cells(page: str) -> list[list[str]]:
    rows = re.findall(r'<tr data-index="\d+"[^>]*>(.*?)</tr>', page, re.S)
    return [re.findall(r"<td[^>]*>(.*?)</td>", row, re.S) for row in rows]


def test_ybroad_column_keeps_significant_digits_of_probability_scores(run: Path) -> None:
    values = [0.00052, 0.0012345, 0.0019, -0.0007, None]

    def edit(data: dict) -> None:
        for entry, value in zip(data["layers"], values, strict=True):
            entry["ybroad"] = value
        data["ybroad_max"] = {"value": 0.0019, "index": 2, "name": data["layers"][2]["name"]}

    _rewrite_json(run / "ybroad.json", edit)

    cells = _row_cells(report_html(run))

    # the value first (an interval's ± sits under it, in its own element)
    assert [re.sub(r"<div.*", "", row[-1], flags=re.S) for row in cells] == [
        "0.00052", "0.00123", "0.0019", "-0.0007", "—"]


def test_layers_sharing_a_cam_are_flagged(run: Path) -> None:
    def edit(manifest: dict) -> None:
        manifest["layers"][2]["same_as"] = 1
        manifest["layers"][3]["same_as"] = None

    _rewrite_json(run / "manifest.json", edit)

    names = [row[1] for row in _row_cells(report_html(run))]

    assert "same CAM as 2" in names[2]  # layers count from 1 wherever a person reads them
    assert [i for i, name in enumerate(names) if "same CAM as" in name] == [2]


def test_layer_numbers_count_from_one_in_frames_viewer_and_compare(drawn_text) -> None:
    drawn = drawn_text
    records = [LayerRecord(index=i, name=f"block{i}", module=f"block{i}", type="Conv2d", shape=(1, 2, 4, 4),
                           layout="NCHW", params=0, seconds=0.0) for i in range(3)]

    render_frames(np.zeros((16, 16, 3), np.uint8), torch.zeros(3, 4, 4), records, "local")

    # the frame caption reads like the viewer's "Layer 3 / 3", the table's # column and the CLI
    assert [text for text in drawn if "/" in text] == ["1/3", "2/3", "3/3"]
    assert '"Layer " + (i + 1) + " / " + n' in REPORT_JS
    assert '"Layer " + (i + 1) + " / " + run.layers.length' in COMPARE_JS
    assert 'step " + (s + 1) + " / " + steps' in COMPARE_JS


def test_ybroad_png_best_layer_label_stays_inside_the_axes(tmp_path: Path, monkeypatch) -> None:
    from matplotlib.figure import Figure

    figures: list[Figure] = []
    savefig = Figure.savefig

    def keep(self, *args, **kwargs):
        figures.append(self)
        return savefig(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    n = 12
    curve = torch.tensor([0.1 * np.sin(i / 2) for i in range(n)], dtype=torch.float64)
    curve[6] = 0.5  # a sharp peak: the best layer is the top of the plot
    lerf = (2 * curve).view(1, n, 1).expand(1, n, 2).clone()
    morf = torch.zeros_like(lerf)
    names = [f"features.{i}.conv" for i in range(n)]
    result = YbRoad(percentiles=(20.0, 40.0), score="prob", noise=0.01, seed=0, trials=1, layer_names=names,
                    morf=morf, lerf=lerf, combined=(lerf - morf) / 2, defined=torch.ones(n, dtype=torch.bool))

    write_ybroad(tmp_path, result)

    (fig,) = figures
    ax = fig.axes[0]  # the ROAD panel (the MoRF/LeRF one is below)
    renderer = fig.canvas.get_renderer()
    (label,) = [t for t in ax.texts if t.get_text() == "features.6.conv"]
    box = label.get_window_extent(renderer)
    axes_box = ax.get_window_extent(renderer)
    title_box = ax.title.get_window_extent(renderer)
    assert axes_box.y0 <= box.y0 and box.y1 <= axes_box.y1, (box, axes_box)
    assert box.y1 < title_box.y0, (box, title_box)
    # and clear of the star it names
    star_y = ax.transData.transform((6, 0.5))[1]
    assert box.y0 > star_y + 10, (box, star_y)


def test_report_draws_chance_band_intervals_two_curves_and_names_the_score(tmp_path: Path) -> None:
    from _runfixture import write_scored_ybroad

    run = make_run_dir(tmp_path / "run", n_layers=8)
    data = write_scored_ybroad(run)
    page = report_html(run)
    chart = re.search(r'<svg class="cam-chart" id="ybroad-plot".*?</svg>', page, re.S).group(0)
    curves = re.search(r'<svg class="cam-chart" id="road-curves-plot".*?</svg>', page, re.S).group(0)
    assert 'class="cam-chance"' in chart and 'class="cam-yb-band"' in chart
    assert ">ROAD (Δ logit)</text>" in chart and ">C (Δ logit)</text>" in curves
    assert 'class="cam-morf-line"' in curves and 'class="cam-lerf-line"' in curves
    assert "cam-morf-chance" in curves and "cam-lerf-chance" in curves
    band = data["baseline"]["band"]
    assert f"chance band (random pixel rankings): {band[0]:.4g} to {band[1]:.4g}" in chart
    # layer 1 sits in the band: a hollow point, ▽ in the table; the others above it: ▲
    assert re.search(r'class="cam-yb-point cam-below" data-index="1"', chart)
    marks = [("▲" in row[-1], "▽" in row[-1]) for row in _row_cells(page)]
    assert marks[1] == (False, True) and marks[0] == (True, False) and marks[-1] == (False, False)


def test_report_names_the_best_candidate_its_aliases_and_what_a_pass_through_carries(tmp_path: Path) -> None:
    from _runfixture import write_scored_ybroad

    run = make_run_dir(tmp_path / "run", n_layers=8)
    data = write_scored_ybroad(run, best=2, alias=3, note=4)
    names = [layer["name"] for layer in data["layers"]]
    page = report_html(run)
    assert data["best"]["index"] == 2 and data["best"]["aliases"] == [names[3]] and not data["warnings"]
    assert f"best: 3 {names[2]} = {names[3]}" in html.unescape(page)  # layer 3 of the page: counted from 1
    cells = _row_cells(page)
    assert "aliases: 4" in cells[2][1] and "★ best ybROAD" in cells[2][1] and "same CAM as 3" in cells[3][1]
    assert "BatchNorm output, before activation" in cells[4][1]
    # type names wrap between CamelCase words only, so the table fits its column
    assert cells[0][2] == "Conv2d" and cells[1][2] == "Batch<wbr>Norm2d"
    assert "ybROAD best ★" in page and html.escape(data["statement"][1:]) in page
    # every numeric cell carries its sort key; the ybROAD one its value
    assert re.search(rf'<td class="cam-num cam-yb" data-sort="{data["layers"][2]["ybroad"]!r}">', page)


def test_report_shows_the_warning_instead_of_a_star(tmp_path: Path) -> None:
    from _runfixture import write_scored_ybroad

    run = make_run_dir(tmp_path / "run", n_layers=8)
    data = write_scored_ybroad(run, probability=0.0004, num_classes=1000)
    (warning,) = data["warnings"]
    assert warning.startswith("low confidence: the model gives the target 0.040% probability")
    page = report_html(run)
    assert "★" not in page and "cam-warned" in page
    assert f"Warning: {html.escape(warning)}." in page and "ybROAD warning" in page
    assert "highest ybROAD, not trusted" in _row_cells(page)[data["best"]["index"]][1]


def test_containers_are_left_out_of_the_parameter_and_time_charts(tmp_path: Path) -> None:
    from camanim.report.page import containers

    names = ["stem", "block.conv", "block.bn", "block", "head"]
    run = make_run_dir(tmp_path / "run", n_layers=5, names=names)
    manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    for layer, params, ms in zip(manifest["layers"], [10, 200, 30, 230, 5], [1, 2, 3, 5, 1]):
        layer["module"], layer["params"], layer["seconds"] = layer["name"], params, ms / 1000
    (run / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    assert containers(manifest["layers"]) == {3}
    page = report_html(run)
    for chart in ("params-plot", "time-plot"):
        svg = re.search(rf'<svg[^>]*id="{chart}".*?</svg>', page, re.S).group(0)
        assert sorted(map(int, re.findall(r'<rect class="cam-bar[^"]*" data-index="(\d+)"', svg))) == [0, 1, 2, 4]
    assert "245 in all. 1 container (blocks whose children are recorded too) left out" in page
    assert "7.0 ms in all." in page  # 1 + 2 + 3 + 1: the container's 5 ms are its children's


def _with_rocket_crop(run: Path, original_size: list[int]) -> None:
    from camanim.sources import Preprocess

    crop = Preprocess.imagenet().crop_box((640, 427))
    _rewrite_json(run / "manifest.json", lambda m: m["image"].update(
        source="sample:rocket", original_size=original_size, crop=crop))


def test_report_shows_the_original_with_the_crop_box_and_says_what_was_cut(run: Path) -> None:
    _with_rocket_crop(run, [640, 427])
    page = build_report(run).read_text(encoding="utf-8")
    svg = re.search(r'<svg class="cam-input" viewBox="0 0 640 427".*?</svg>', page, re.S)
    assert svg, "no input picture"
    # The box, in original pixels, as computed by hand in tests/sources/test_sources.py.
    rect = re.search(r'<rect class="cam-crop-box" x="([\d.]+)" y="([\d.]+)" width="([\d.]+)" height="([\d.]+)"',
                     svg.group(0))
    assert [float(v) for v in rect.groups()] == [133.33, 26.69, 373.34, 373.62]
    # The original image itself, downscaled to 320 px wide, its colours those of the sample.
    thumb = _decode_data_uri(re.search(r'<image href="([^"]+)"', svg.group(0)).group(1))
    assert thumb.shape[:2] == (214, 320)  # 427 * 320 / 640 = 213.5, rounded up
    from camanim import load_image

    original = np.asarray(load_image("sample:rocket")[0].resize((320, 214)), dtype=np.float64)
    assert np.abs(thumb.mean(axis=(0, 1)) - original.mean(axis=(0, 1))).max() < 3
    assert ("centre crop 224×224: 20.8% of the width lost at each side, "
            "6.2% of the height lost at top and bottom") in html.unescape(page)


def test_report_says_the_crop_without_a_picture_when_the_original_changed(run: Path) -> None:
    _with_rocket_crop(run, [100, 100])  # not the size the file has now: no stale picture
    page = html.unescape(build_report(run).read_text(encoding="utf-8"))
    assert 'class="cam-input"' not in page
    assert "20.8% of the width lost at each side" in page


def test_header_gives_a_small_probability_in_significant_digits_and_names_the_prediction(run: Path) -> None:
    """(review) A target the model barely believes in is not shown as 0.0%, and when it is not the prediction
    the header names the prediction beside it."""
    def edit(m: dict) -> None:
        m["target"].update(index=281, label="tabby", score=0.000442)
        m["top"] = [{"index": 238, "label": "Swiss dog", "score": 0.013}, {"index": 281, "label": "tabby", "score": 0.000442}]

    _rewrite_json(run / "manifest.json", edit)
    page = html.unescape(build_report(run).read_text(encoding="utf-8"))
    target = re.search(r"Target</[^>]+>(.*?)</div>", page, re.S).group(1)
    assert "0.044%" in target and "0.0%" not in target
    assert re.search(r"predicted: Swiss dog\s*#238", re.sub("<[^>]+>", "", target)), target
    top = re.search(r'<ol class="cam-top".*?</ol>', page, re.S).group(0)
    assert "1.3%" in top and "0.044%" in top


def test_header_does_not_repeat_a_target_that_is_the_prediction(run: Path) -> None:
    def edit(m: dict) -> None:
        m["target"].update(index=238, label="Swiss dog", score=0.013)
        m["top"] = [{"index": 238, "label": "Swiss dog", "score": 0.013}]

    _rewrite_json(run / "manifest.json", edit)
    page = html.unescape(build_report(run).read_text(encoding="utf-8"))
    assert "predicted:" not in page and "1.3%" in page
