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


def _check_classify(out: Path, printed: str) -> None:
    classify = json.loads((out / "manifest.json").read_text())
    assert "kind" not in classify["target"] and isinstance(classify["target"]["index"], int)
    assert "predicted/target class" in printed


def _check_segment(out: Path, printed: str) -> None:
    segment = json.loads((out / "manifest.json").read_text())
    assert segment["target"]["kind"] == "value" and segment["target"]["label"] == "seg:10"
    road = json.loads((out / "ybroad.json").read_text())
    assert road["score"] == "value" and road["score_label"] == "Δ target value" and np.isfinite(road["ybroad_mean"])
    frame = np.asarray(Image.open(sorted((out / "frames/local").glob("*.png"))[-1]))
    assert (frame == OUTLINE_COLOUR).all(axis=-1).sum() > 100  # the region's outline
    assert "target: seg:10, value" in printed


def _check_detect(out: Path, printed: str) -> None:
    detect = json.loads((out / "manifest.json").read_text())
    assert detect["target"]["label"].startswith("box:0 (label ") and detect["target"]["score"] > 1  # IoU 1 + score
    assert [entry["layout"] for entry in detect["layers"]] == ["NCHW"] * 4
    frame = np.asarray(Image.open(sorted((out / "frames/local").glob("*.png"))[-1]))
    assert (frame == OUTLINE_COLOUR).all(axis=-1).sum() > 20  # the box


def _check_embed(out: Path, printed: str) -> None:
    embed = json.loads((out / "manifest.json").read_text())
    assert embed["target"]["label"] == "similar:sample:coffee" and -1 <= embed["target"]["score"] <= 1


CHECKS = {"classify": _check_classify, "segment": _check_segment, "detect": _check_detect, "embed": _check_embed}


def test_the_readme_has_one_command_per_task():
    lines = _task_commands()
    assert len(lines) == 4 and all(ln.startswith("camanim run ") for ln in lines), lines
    assert sorted(ln.split("--out out/")[1].split()[0] for ln in lines) == sorted(CHECKS)


@pytest.mark.slow
@pytest.mark.parametrize("task", sorted(CHECKS))
def test_each_task_command_of_the_readme_runs(task, tmp_path, monkeypatch, capsys):
    """The task's command runs as written (in a fresh folder, quiet, no video) and writes a run whose
    manifest names the target; segmentation and detection outline the region or box on the frames."""
    line = next(ln for ln in _task_commands() if f"--out out/{task}" in ln)
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main([*shlex.split(line)[1:], "--quiet", "--no-video"]) == 0, (line, capsys.readouterr().err)
    CHECKS[task](tmp_path / "out" / task, capsys.readouterr().out)


def test_seg_target_errors_exit_2_in_one_line(tmp_path, capsys):
    """A class out of range and an empty mask file: exit 2, one line, nothing written."""
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "blank.png")
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
