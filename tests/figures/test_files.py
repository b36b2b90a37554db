"""Figures as files: PNG and PDF both written, the same bytes every time, a page in the PDF with its
text as text, and bad output paths refused before anything is written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pypdf import PdfReader

from camanim import InputError
from camanim.figures import FigureOptions, figure_paths, write_figure


def test_png_and_pdf_are_written_at_print_resolution(figure_runs, tmp_path):
    paths, plan = write_figure([figure_runs["gradcam"]], tmp_path / "fig.pdf", FigureOptions(depths=(0, 100)))
    assert paths == {"png": tmp_path / "fig.png", "pdf": tmp_path / "fig.pdf"}
    with Image.open(paths["png"]) as png:
        assert png.info["dpi"] == pytest.approx((300, 300), abs=0.01)
        assert png.size[0] > 1000
    reader = PdfReader(paths["pdf"])
    assert len(reader.pages) == 1
    text = reader.pages[0].extract_text()
    for words in ("conv1", "#0", "fc", "local", "global"):  # the captions are text, not pixels
        assert words in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig.pdf", "fig.png"]  # no temporary left


def test_the_same_runs_give_the_same_png_bytes(figure_runs, tmp_path):
    options = FigureOptions(depths=(0, 50, 100), with_road=True, dpi=80)
    first, _ = write_figure([figure_runs["gradcam"]], tmp_path / "a.png", options)
    second, _ = write_figure([figure_runs["gradcam"]], tmp_path / "b", options)
    png = first["png"].read_bytes()
    assert png == second["png"].read_bytes()
    assert b"Software" not in png and b"Matplotlib" not in png
    assert first["pdf"].read_bytes() == second["pdf"].read_bytes()
    assert b"CreationDate" not in first["pdf"].read_bytes()


def test_every_figure_kind_is_one_pdf_page(figure_runs, tmp_path):
    gc, hc, mb = figure_runs["gradcam"], figure_runs["hirescam"], figure_runs["mobilenet"]
    cases = {"methods": [gc, hc], "models": [gc, mb, hc], "norms": [gc]}
    for name, runs in cases.items():
        options = FigureOptions(layer="conv1", dpi=60) if name == "norms" else FigureOptions(dpi=60)
        paths, plan = write_figure(runs, tmp_path / name, options)
        assert plan.kind == name
        assert len(PdfReader(paths["pdf"]).pages) == 1
        with Image.open(paths["png"]) as png:
            assert np.asarray(png).std() > 10  # a picture, not a blank page


def test_bad_output_paths_are_refused_before_anything_is_written(figure_runs, tmp_path):
    with pytest.raises(InputError, match="give fig.pdf, fig.png or fig"):
        figure_paths(tmp_path / "fig.svg")
    with pytest.raises(InputError, match="does not exist"):
        figure_paths(tmp_path / "missing" / "fig.pdf")
    (tmp_path / "fig.png").mkdir()
    with pytest.raises(InputError, match="is a folder"):
        write_figure([figure_runs["gradcam"]], tmp_path / "fig.pdf")
    assert figure_paths(tmp_path / "v1.2") == {"png": tmp_path / "v1.2.png", "pdf": tmp_path / "v1.2.pdf"}


def test_a_failure_while_drawing_leaves_no_file(figure_runs, tmp_path):
    with pytest.raises(InputError, match="has no ybROAD"):
        write_figure([figure_runs["hirescam"]], tmp_path / "fig.pdf", FigureOptions(with_road=True))
    assert list(tmp_path.iterdir()) == []


def test_the_readme_figure_is_committed_small_and_shown():
    root = Path(__file__).resolve().parents[2]
    figure = root / "docs" / "figure-lite0.png"
    assert figure.stat().st_size < 300 * 1024
    with Image.open(figure) as png:
        assert png.format == "PNG" and png.size[0] >= 700
    readme = (root / "README.md").read_text(encoding="utf-8")
    assert "](docs/figure-lite0.png)" in readme and "make readme-figure" in readme
    assert "cp build/figure-lite0.png docs/figure-lite0.png" in (root / "Makefile").read_text(encoding="utf-8")
