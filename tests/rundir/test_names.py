"""Run-folder names: one place, the very names the contract states."""

from __future__ import annotations

from camanim.rundir import names


def test_names_of_the_run_folder_contract(tmp_path):
    assert (names.MANIFEST, names.CAMS, names.REPORT) == ("manifest.json", "cams.npz", "report.html")
    assert names.YBROAD_FILES == ("ybroad.csv", "ybroad.json", "ybroad.png")
    assert names.frames_dir("global") == "frames/global"
    assert [names.frame_name(i) for i in (0, 7, 1234)] == ["0000.png", "0007.png", "1234.png"]
    assert names.frame_paths(tmp_path, 2) == [tmp_path / "0000.png", tmp_path / "0001.png"]
    assert names.video_stem(names.SIDE_BY_SIDE) == "camanim_side_by_side"
    assert names.GRID_VIDEO == "camanim_methods_grid.mp4"
