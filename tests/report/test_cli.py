"""``camanim report`` and ``camanim compare`` on real (small) runs, and their errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from _runfixture import make_run_dir

from camanim.cli import main
from camanim.draw.video import count_frames, probe
from camanim.report import align_by_depth

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _run(out: Path, method: str, layers: str) -> Path:
    assert main(["sample:cat", "--model", "resnet18", "--weights", "none", "--layers", layers, "--method", method,
                 "--frame-width", "64", "--no-video", "--out", str(out), "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    """Two runs of random-weight resnet18 that differ in method and depth (all of layer4 vs its last block)."""
    root = tmp_path_factory.mktemp("runs")
    return _run(root / "gradcam", "gradcam", "layer4*"), _run(root / "hirescam", "hirescam", "layer4.1*")


def _json_script(page: str, element_id: str):
    match = re.search(rf'<script type="application/json" id="{re.escape(element_id)}">(.*?)</script>', page, re.S)
    assert match, f"no JSON script #{element_id}"
    return json.loads(match.group(1))


def _layers(run: Path) -> list[dict]:
    return json.loads((run / "manifest.json").read_text(encoding="utf-8"))["layers"]


def _err_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("camanim: error: ") and "Traceback" not in err[0]
    return err[0]


def test_report_rebuilds_report_and_plots(runs, capsys) -> None:
    run = runs[0]
    outputs = [run / "report.html", run / "layer_params.png", run / "layer_time.png"]
    for path in outputs:
        path.unlink()
    capsys.readouterr()

    assert main(["report", str(run)]) == 0

    assert capsys.readouterr().out == f"wrote {run / 'report.html'}\n"
    assert all(path.is_file() for path in outputs)
    for png in outputs[1:]:
        assert png.read_bytes()[:8] == PNG_MAGIC
    page = outputs[0].read_text(encoding="utf-8")
    assert page.lower().startswith("<!doctype html>") and "resnet18 · gradcam" in page
    layers = _layers(run)
    assert layers[0]["name"] == "layer4.0.conv1" and len(layers) > 10
    data = _json_script(page, "report-data")
    assert data["layers"] == layers and data["norms"] == ["local", "global"]
    for norm in ("local", "global"):
        assert len(_json_script(page, f"frames-data-{norm}")) == len(layers)


def test_compare_writes_page_and_grid_video(runs, tmp_path, capsys) -> None:
    out = tmp_path / "cmp"
    capsys.readouterr()

    assert main(["compare", *map(str, runs), "--out", str(out), "--fps", "4"]) == 0

    captured = capsys.readouterr()
    printed = captured.out
    assert str(out / "compare.html") in printed and str(out / "compare_grid.mp4") in printed
    counts = [len(_layers(run)) for run in runs]
    assert counts[0] > 2 * counts[1]
    # more than 2x apart: said in the terminal and on the page
    assert f"WARNING: The runs have {counts[1]} to {counts[0]} layers" in captured.err
    page = (out / "compare.html").read_text(encoding="utf-8")
    assert re.search(rf'id="depth-warning">Warning: the runs have {counts[1]} to {counts[0]} layers', page)
    # the grid video in both normalisations
    assert str(out / "compare_grid_global.mp4") in printed
    assert count_frames(out / "compare_grid_global.mp4") == counts[0]
    data = _json_script((out / "compare.html").read_text(encoding="utf-8"), "compare-data")
    assert [run["title"] for run in data["runs"]] == ["resnet18 · gradcam", "resnet18 · hirescam"]
    assert data["fps"] == 4 and data["steps"] == counts[0]
    assert data["mapping"] == align_by_depth(counts)
    video = out / "compare_grid.mp4"
    assert probe(video)["codec"] == "h264"
    assert count_frames(video) == counts[0]


def test_report_on_a_folder_that_is_not_a_run_exits_2(tmp_path, capsys) -> None:
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert "nowhere' is not a camanim run folder" in _err_line(capsys)


def test_report_on_an_incomplete_run_exits_2_and_writes_nothing(tmp_path, capsys) -> None:
    run = make_run_dir(tmp_path / "run", n_layers=3)
    (run / "frames" / "local" / "0001.png").unlink()

    assert main(["report", str(run)]) == 2

    assert "0001.png is missing" in _err_line(capsys)
    assert not (run / "report.html").exists()


def test_compare_with_a_bad_folder_exits_2_and_writes_nothing(runs, tmp_path, capsys) -> None:
    out = tmp_path / "cmp"

    assert main(["compare", str(runs[0]), str(tmp_path / "nowhere"), "--out", str(out)]) == 2

    assert "nowhere' is not a camanim run folder" in _err_line(capsys)
    assert not out.exists()


def test_depth_warning_only_beyond_twice_the_layers() -> None:
    from camanim.report.compare import depth_warning

    assert depth_warning([7, 14]) is None and depth_warning([5]) is None
    text = depth_warning([7, 67, 20])
    assert text is not None and "7 to 67 layers (9.6x)" in text
