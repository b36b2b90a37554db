"""Jupyter display of results: ``_repr_html_`` and ``show()``, with a stand-in for IPython."""

from __future__ import annotations

import base64
import io
import json
import re
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import camanim
from camanim.results import CamSet

# WebP at quality 80 moves a frame's pixels by a few levels on average.
FRAME_TOL = 6.0
# The notebook's contact sheet is one JPEG at quality 60 (4:2:0 chroma): on the tiny net's 16 px noise
# input, blown up to 80 px, that moves pixels by ~9 levels on average (tile order: tests/report/test_page.py).
SHEET_TOL = 12.0


class _HTML:
    """What ``IPython.display.HTML`` keeps: the markup."""

    def __init__(self, data: str) -> None:
        self.data = data


@pytest.fixture
def displayed(monkeypatch) -> list[tuple]:
    """Install a fake ``IPython.display``; return the argument tuples ``display`` was called with."""
    calls: list[tuple] = []
    display_module = types.ModuleType("IPython.display")
    display_module.HTML = _HTML
    display_module.display = lambda *objs: calls.append(objs)
    package = types.ModuleType("IPython")
    package.display = display_module
    monkeypatch.setitem(sys.modules, "IPython", package)
    monkeypatch.setitem(sys.modules, "IPython.display", display_module)
    return calls


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch) -> Path:
    """The temporary-files folder, redirected so a test can see what is left in it."""
    folder = tmp_path / "scratch"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.fixture
def result(tiny, tiny_input) -> camanim.CamResult:
    return camanim.animate(tiny, tiny_input)


def _json_script(fragment: str, suffix: str):
    match = re.search(rf'<script type="application/json" id="camanim-[0-9a-f]+-{suffix}">(.*?)</script>',
                      fragment, re.S)
    assert match, f"no JSON script *{suffix}"
    return json.loads(match.group(1))


def _decode(uri: str) -> np.ndarray:
    with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as img:
        return np.asarray(img.convert("RGB"), dtype=np.float64)


def _sheet_tiles(fragment: str, norm: str) -> list[np.ndarray]:
    """The notebook view's contact sheet of ``norm``, cut back into its tiles (tile i = layer i)."""
    sheet = _json_script(fragment, "report-data")["sheets"][norm]
    uri = re.search(rf'<img class="cam-sheet" id="camanim-[0-9a-f]+-sheet-{norm}" src="([^"]+)"', fragment).group(1)
    pixels, (th, tw) = _decode(uri), sheet["tile"]
    n = len(_json_script(fragment, "report-data")["layers"])
    return [pixels[(i // sheet["cols"]) * th:(i // sheet["cols"] + 1) * th,
                   (i % sheet["cols"]) * tw:(i % sheet["cols"] + 1) * tw] for i in range(n)]


def _panels(result: camanim.CamResult, norm: str) -> np.ndarray:
    """The caption-free panels the notebook's sheet should show, drawn the slow way (full-size scaling)."""
    from camanim.draw import FrameRenderer, FrameStyle
    from camanim.results import NOTEBOOK_WIDTH

    style = FrameStyle(width=NOTEBOOK_WIDTH)
    return FrameRenderer(result.image, result.layers, style, result.stripes(style)).panels(
        result.normalised(norm), norm).astype(np.float64)


def test_repr_html_of_an_unsaved_result_inlines_its_frames_and_leaves_no_folder(result, scratch) -> None:
    fragment = result._repr_html_()

    assert list(scratch.iterdir()) == []
    assert result.saved_dir is None
    assert "<html" not in fragment and re.search(r'id="camanim-[0-9a-f]+-layer-slider"', fragment)
    data = _json_script(fragment, "report-data")
    assert [layer["name"] for layer in data["layers"]] == [r.name for r in result.layers]
    assert not re.search(r"id=\"[^\"]*frames-data-", fragment)  # one sheet per normalisation, not one image per layer
    for norm in ("local", "global"):
        tiles = _sheet_tiles(fragment, norm)
        expected = _panels(result, norm)
        assert len(tiles) == len(result.layers)
        for i in range(len(tiles)):
            assert tiles[i].shape == expected[i].shape
            assert np.abs(tiles[i] - expected[i]).mean() < SHEET_TOL, i


def test_repr_html_of_a_saved_result_is_built_from_memory_as_saved(result, scratch, tmp_path, monkeypatch) -> None:
    import shutil

    import camanim.report.page as page

    result.save(tmp_path / "out", normalisations=["local"], video=False)
    shutil.rmtree(tmp_path / "out")  # nothing on disk is needed for the view
    monkeypatch.setattr(page, "load_run", lambda *a, **k: pytest.fail("the notebook view read a run folder"))

    fragment = result._repr_html_()

    assert list(scratch.iterdir()) == []
    assert _json_script(fragment, "report-data")["norms"] == ["local"]
    tiles, expected = _sheet_tiles(fragment, "local"), _panels(result, "local")
    assert "sheet-global" not in fragment and len(tiles) == len(result.layers)
    assert np.abs(tiles[-1] - expected[-1]).mean() < SHEET_TOL


def test_show_displays_the_viewer_once_and_returns_none(result, displayed, scratch) -> None:
    assert result.show() is None

    assert len(displayed) == 1
    (html,) = displayed[0]
    assert isinstance(html, _HTML)
    assert re.search(r'id="camanim-[0-9a-f]+-layer-slider"', html.data)
    assert result.layers[0].name in html.data
    assert list(scratch.iterdir()) == []


def test_show_without_ipython_says_what_is_missing(result, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "IPython", None)
    with pytest.raises(RuntimeError, match="IPython"):
        result.show()


@pytest.fixture
def camset(tiny, tiny_input) -> CamSet:
    out = camanim.animate(tiny, tiny_input, method="gradcam,hirescam")
    assert isinstance(out, CamSet)
    return out


def test_camset_repr_html_lists_one_viewer_per_run(camset, scratch) -> None:
    fragment = camset._repr_html_()

    assert list(scratch.iterdir()) == []
    prefixes = re.findall(r'id="(camanim-[0-9a-f]+-)root"', fragment)
    assert len(set(prefixes)) == len(prefixes) == 2
    summaries = re.findall(r"<summary>(.*?)</summary>", fragment, re.S)
    assert len(summaries) == 2
    for summary, folder, res in zip(summaries, camset.folders, camset.results, strict=True):
        assert folder in summary and res.method in summary and f"#{res.target.index}" in summary
    # the first run is unfolded, the others one click away
    assert re.findall(r"<details( open)?>", fragment) == [" open", ""]
    methods = [_json_script(part, "report-data")["method"] for part in fragment.split("<details")[1:]]
    assert methods == ["gradcam", "hirescam"]


def test_camset_show_displays_once(camset, displayed, scratch) -> None:
    assert camset.show() is None

    assert len(displayed) == 1
    (html,) = displayed[0]
    assert isinstance(html, _HTML) and html.data.count("<details") == 2


# -- figures from memory ----------------------------------------------------------------


def test_figure_of_a_result_in_memory_is_the_figure_of_its_saved_run(result, tmp_path) -> None:
    from camanim.figures import FigureOptions

    result.save(tmp_path / "run", video=False, report=False)
    from_memory = result.figure(tmp_path / "memory.pdf", depths=(0, 50, 100), dpi=60)
    assert from_memory == {"png": tmp_path / "memory.png", "pdf": tmp_path / "memory.pdf"}
    from camanim.figures import write_figure

    from_disk, plan = write_figure([tmp_path / "run"], tmp_path / "disk.pdf", FigureOptions(depths=(0, 50, 100), dpi=60))
    assert plan.kind == "filmstrip" and [t.index for t in plan.rows[0].tiles] == [
        0, round(0.5 * (len(result.layers) - 1) + 1e-9), len(result.layers) - 1]
    assert from_memory["png"].read_bytes() == from_disk["png"].read_bytes()


def test_figure_of_several_results_is_a_grid_and_options_are_checked(tiny, tiny_input, tmp_path) -> None:
    from pypdf import PdfReader

    from camanim.figures import FigureOptions

    results = camanim.animate(tiny, tiny_input, method=["gradcam", "hirescam"])
    paths = results[0].figure(tmp_path / "grid", others=list(results)[1:], dpi=60)
    assert len(PdfReader(paths["pdf"]).pages) == 1
    with pytest.raises(TypeError, match="not both"):
        results[0].figure(tmp_path / "x.pdf", options=FigureOptions(), dpi=100)
    with pytest.raises(camanim.InputError, match=r"has no ybROAD: score it first with camanim.ybroad\(result\) before result.figure\(...\), or with_road=False"):
        results[0].figure(tmp_path / "x.pdf", with_road=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.pdf", "grid.png"]


def test_repr_is_one_short_line_naming_model_method_target_layers(result, tmp_path) -> None:
    text = repr(result)
    assert "\n" not in text and len(text) < 300 and "tensor" not in text
    assert f"method={result.method}" in text and f"layers={len(result.layers)}" in text
    assert f"target={result.target.index}" in text
    result.save(tmp_path / "out", video=False, report=False)
    assert repr(str(tmp_path / "out")) in repr(result)


def test_camset_repr_is_one_short_line(tiny, tiny_input) -> None:
    cams = camanim.animate(tiny, tiny_input, method=["gradcam", "layercam"])
    text = repr(cams)
    assert "\n" not in text and len(text) < 300 and "tensor" not in text
    assert text.startswith("CamSet(2 results") and "methods=gradcam,layercam" in text


def test_cam_by_name_or_index_raw_or_normalised(result) -> None:
    name = result.layers[1].name
    raw = result.cam(name)
    assert raw.dtype == np.float32 and raw.shape == tuple(result.cams.shape[-2:])
    np.testing.assert_array_equal(raw, result.cams[1].numpy())
    np.testing.assert_array_equal(result.cam(1), raw)
    local = result.cam(name, "local")
    np.testing.assert_allclose(local, (raw - raw.min()) / (raw.max() - raw.min()), atol=1e-6)
    whole = result.cams.numpy()
    np.testing.assert_allclose(result.cam(name, "global"), (raw - whole.min()) / (whole.max() - whole.min()), atol=1e-6)
    with pytest.raises(camanim.InputError, match="not in this result"):
        result.cam("no.such.layer")
    with pytest.raises(camanim.InputError, match="kind"):
        result.cam(name, "loud")


def test_overlay_is_the_caption_free_blend_at_image_size(result) -> None:
    from camanim.draw import colormap_lut

    name = [r for r in result.layers if not r.non_spatial][-1].name
    out = result.overlay(name, "local", colormap="viridis", alpha=0.25)
    assert out.shape == result.image.shape and out.dtype == np.uint8
    level = np.rint(np.clip(result.cam(name, "local"), 0, 1) * 255).astype(int)  # CAMs are at image size here
    expected = np.rint(0.75 * result.image.astype(np.float32) + 0.25 * colormap_lut("viridis")[level])
    assert np.abs(out.astype(int) - expected.astype(int)).max() <= 1
    with pytest.raises(ValueError, match="alpha"):
        camanim.overlay(result.image, result.cam(name, "local"), alpha=2)


def test_cam_and_overlay_refuse_a_non_spatial_layer(result) -> None:
    """(review) A non-spatial layer (fc: 1 x classes) has no map over the image: saying so, not an all-zero
    map that reads as "nothing here"."""
    fc = next(r for r in result.layers if r.non_spatial)
    for call in (lambda: result.cam(fc.name), lambda: result.overlay(fc.name), lambda: result.cam(fc.index, "local")):
        with pytest.raises(camanim.InputError, match=rf"layer {fc.name!r} is non-spatial .*result.vectors") as err:
            call()
        assert "\n" not in str(err.value)


def test_a_multi_run_save_writes_an_index_linking_every_report(tiny, tiny_input, tmp_path) -> None:
    cams = camanim.animate(tiny, tiny_input, method=["gradcam", "layercam"])
    written = cams.save(tmp_path / "out", video=True, formats=("mp4",))
    index = tmp_path / "out" / "index.html"
    assert written["index"] == index
    page = index.read_text(encoding="utf-8")
    links = re.findall(r'<a href="([^"]+)">', page)
    assert links == ["gradcam/report.html", "layercam/report.html", "compare.html"]
    assert all((tmp_path / "out" / link).is_file() for link in links)
    # the "wrote" list names the methods grid's page and both of its videos
    assert written["compare.html"] == tmp_path / "out" / "compare.html"
    assert written["camanim_methods_grid.mp4"].is_file() and written["camanim_methods_grid_global.mp4"].is_file()


def test_a_multi_method_save_without_video_still_writes_the_compare_page(tiny, tiny_input, tmp_path) -> None:
    """(review) --no-video leaves out the grid videos, not the side-by-side page (it shows the frames)."""
    cams = camanim.animate(tiny, tiny_input, method=["gradcam", "layercam"])
    written = cams.save(tmp_path / "out", video=False)
    assert written["compare.html"] == tmp_path / "out" / "compare.html" and written["compare.html"].is_file()
    assert not list((tmp_path / "out").rglob("*.mp4"))
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["grids"] == []  # no video named unwritten
    links = re.findall(r'<a href="([^"]+)">', (tmp_path / "out" / "index.html").read_text(encoding="utf-8"))
    assert links == ["gradcam/report.html", "layercam/report.html", "compare.html"]


def _deep(seed: int = 0, blocks: int = 12):
    """A plain CNN of ``blocks`` conv + ReLU pairs at 16 x 16, then a head: 2 x blocks + 3 layers."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    body = [m for _ in range(blocks) for m in (nn.Conv2d(3, 3, 3, padding=1), nn.ReLU())]
    model = nn.Sequential(*body, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 4)).eval()
    return model, torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def test_a_result_keeps_its_cams_at_layer_resolution_and_cams_is_their_upsampling(tiny, tiny_input) -> None:
    import torch

    from camanim.compute import LazyCams, upsample
    from camanim.draw import normalise

    result = camanim.animate(tiny, tiny_input)
    assert isinstance(result.lazy_cams, LazyCams) and result.lazy_cams.maps is not None
    assert "_whole_cams" not in result.__dict__  # nothing upsampled yet
    whole = upsample([None if m is None else m[None] for m in result.maps], (16, 16))[:, 0]
    assert result.cams.shape == whole.shape and torch.equal(result.cams, whole)
    assert result.cams is result.cams  # made once, then kept
    for i in range(len(result.layers)):
        assert torch.equal(result.lazy_cams[i], whole[i])
    assert torch.equal(result.normalised("global"), normalise(whole, "global"))


def test_save_draws_every_frame_as_the_whole_stack_would_without_making_it(tmp_path, monkeypatch) -> None:
    """Frames, report frames and the global scale from layer maps read a run at a time: pixel for pixel
    what normalising the whole (L, H, W) stack and drawing it gave, and the stack is never made."""
    import torch

    from camanim.compute import LazyCams
    from camanim.draw import FrameRenderer, FrameStyle, normalise
    from camanim.report import data_uri
    from camanim.rundir import write as write_module

    model, x = _deep()
    result = camanim.animate(model, x)
    whole = result.lazy_cams.tensor()
    monkeypatch.setattr(write_module, "CHUNK_FRAMES", 4)  # 27 layers: 7 runs of frames
    monkeypatch.setattr(LazyCams, "tensor", lambda self: pytest.fail("save made the whole stack"))
    result.save(tmp_path / "run", video=False)
    assert "_whole_cams" not in result.__dict__
    renderer = FrameRenderer(result.image, result.layers, FrameStyle(), result.stripes(), result.caption_title())
    report = (tmp_path / "run" / "report.html").read_text()
    for norm in ("local", "global"):
        want = renderer.render(normalise(whole, norm), norm)  # the whole stack, as before
        pngs = sorted((tmp_path / "run" / "frames" / norm).glob("*.png"))
        assert len(pngs) == len(result.layers) == 27
        for i, png in enumerate(pngs):
            assert np.array_equal(np.asarray(Image.open(png)), want[i]), (norm, i)
        assert json.dumps(data_uri(want[5])) in report  # the report's frames: encoded while drawn
    assert torch.equal(torch.from_numpy(camanim.load_cams(tmp_path / "run")), whole)
