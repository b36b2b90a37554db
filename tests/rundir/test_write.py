"""Writing a run: SaveOptions checked once; one path per job (the methods grid straight from memory,
``--road`` scored in memory and written once with the run)."""

from __future__ import annotations

import json

import pytest
import torch

import camanim
from camanim import InputError, SaveOptions
from camanim.draw import count_frames
from camanim.rundir import names


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"normalisations": ("locall",)}, "normalisation 'locall' is unknown"),
    ({"formats": ("avi",)}, "video format 'avi' is unknown"),
    ({"fps": 0}, "--fps 0 must be a positive number"),
    ({"fps": float("inf")}, "--fps inf must be a positive number"),
    ({"normalisations": ()}, "no normalisation given"),
    ({"normalisations": ("local", "local")}, "names a normalisation twice"),
    ({"formats": ("mp4", "mp4")}, "names a format twice"),
    ({"formats": ()}, "no video format given"),
])
def test_bad_save_options_are_refused(kwargs, message):
    with pytest.raises(InputError, match=message):
        SaveOptions(**kwargs)


def test_methods_grid_is_written_from_memory_without_reading_runs_back(tiny, tiny_input, tmp_path, monkeypatch):
    import importlib

    compare = importlib.import_module("camanim.report.compare")  # the module, not report's compare()
    monkeypatch.setattr(compare, "load_run", lambda *a, **k: pytest.fail("the grid read a run folder back"))
    out = camanim.animate(tiny, tiny_input, method="gradcam,hirescam")
    written = out.save(tmp_path / "out", normalisations=["local"])
    grid = tmp_path / "out" / names.GRID_VIDEO
    assert written[names.GRID_VIDEO] == grid and count_frames(grid) == len(out[0].layers)
    page = (tmp_path / "out" / names.COMPARE_HTML).read_text()
    assert str(tmp_path / "out" / "gradcam") in page and ".tmp-" not in page  # the runs' own folders
    assert not (tmp_path / "out" / names.COMPARE_VIDEO).exists()


def test_road_in_memory_is_saved_once_with_the_run(tiny, tiny_input, tmp_path, monkeypatch):
    import camanim.results as results

    reports = []
    real = results.write_report
    monkeypatch.setattr(results, "write_report", lambda view: reports.append(view.path) or real(view))
    result = camanim.animate(tiny, tiny_input, layers="conv1,block")
    yb = camanim.ybroad(result, percentiles=(50,), noise=0.0)
    assert result.road is yb
    written = result.save(tmp_path / "out", video=False)
    assert len(reports) == 1
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["ybroad"]["max"]["index"] == yb.ybroad_max.index
    saved = json.loads((tmp_path / "out" / "ybroad.json").read_text())
    assert saved["layers"][0]["ybroad"] == pytest.approx(float(yb.curve_mean[0]))
    assert {"ybroad_csv", "ybroad_json", "ybroad_png"} <= set(written)
    assert 'id="report-data"' in (tmp_path / "out" / "report.html").read_text() and torch.isfinite(yb.curve_mean[0])
