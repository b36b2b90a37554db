"""`camanim run --target` for each task, as the README's "Tasks" section writes it (random weights, offline)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from camanim.cli import main
from camanim.draw import OUTLINE_COLOUR


def _task_commands() -> list[str]:
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = text[text.index("## Tasks"):text.index("## What comes out")]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    return [ln.strip() for b in blocks for ln in b.splitlines() if ln.strip()]


@pytest.mark.slow
def test_every_task_command_of_the_readme_runs(tmp_path, monkeypatch, capsys):
    """Each task's command runs as written (in a fresh folder, quiet) and writes a run whose manifest names
    the target; the segmentation run outlines its region on the frames and scores ybROAD on the value."""
    lines = _task_commands()
    assert len(lines) >= 3 and all(ln.startswith("camanim run ") for ln in lines), lines
    monkeypatch.chdir(tmp_path)
    printed = {}
    for line in lines:
        capsys.readouterr()
        assert main([*shlex.split(line)[1:], "--quiet", "--no-video"]) == 0, (line, capsys.readouterr().err)
        printed[line] = capsys.readouterr().out
    segment = json.loads((tmp_path / "out/segment/manifest.json").read_text())
    assert segment["target"]["kind"] == "value" and segment["target"]["label"] == "seg:10"
    road = json.loads((tmp_path / "out/segment/ybroad.json").read_text())
    assert road["score"] == "value" and road["score_label"] == "Δ target value" and np.isfinite(road["ybroad_mean"])
    frame = np.asarray(Image.open(sorted((tmp_path / "out/segment/frames/local").glob("*.png"))[-1]))
    assert (frame == OUTLINE_COLOUR).all(axis=-1).sum() > 100  # the region's outline
    embed = json.loads((tmp_path / "out/embed/manifest.json").read_text())
    assert embed["target"]["label"] == "similar:sample:coffee" and -1 <= embed["target"]["score"] <= 1
    classify = json.loads((tmp_path / "out/classify/manifest.json").read_text())
    assert "kind" not in classify["target"] and isinstance(classify["target"]["index"], int)
    assert any("target: seg:10, value" in out for out in printed.values())


def test_seg_target_errors_exit_2_in_one_line(tmp_path, capsys):
    """A class out of range and an empty mask file: exit 2, one line, nothing written."""
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "blank.png")
    base = ["run", "sample:cat", "--model", "lraspp_mobilenet_v3_large", "--weights", "none", "--input-size", "64",
            "--layers", "classifier.*", "--quiet", "--no-video"]
    for target, words in (("seg:21", "class 21 is out of range: the model's output (1, 21, 64, 64) has 21 classes"),
                          (f"seg:10,mask={tmp_path / 'blank.png'}", "the mask is empty"),
                          ("seg:3", "no pixel of image 0 is predicted as class 3 (the model's output (1, 21, 64, 64) "
                                    "predicts classes 10)"),
                          ("seg:x", "write seg:CLASS with a class index")):
        capsys.readouterr()
        assert main([*base, "--target", target, "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip()
        assert words in err and len(err.splitlines()) == 1, err
        assert not (tmp_path / "o").exists()
