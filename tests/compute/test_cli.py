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
    printed = capsys.readouterr()
    CHECKS[task](tmp_path / "out" / task, printed.out)
    assert "camanim: warning" not in printed.err, printed.err  # e.g. similar: on a classifier's logits


def test_seg_target_errors_exit_2_in_one_line(tmp_path, capsys):
    """A class out of range and an empty mask file: exit 2, one line, nothing written."""
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "blank.png")
    base = ["run", "sample:cat", "--model", "lraspp_mobilenet_v3_large", "--weights", "none", "--input-size", "64",
            "--layers", "classifier.*", "--quiet", "--no-video"]
    for target, words in (("seg:21", "--target seg:21: class 21 is out of range: the model's output (1, 21, 64, 64) "
                                     "has 21 classes"),
                          (f"seg:10,mask={tmp_path / 'blank.png'}", "the mask is empty"),
                          ("seg:3", "no pixel of image 0 is predicted as class 3 (the model's output (1, 21, 64, 64) "
                                    "predicts classes 10)"),
                          ("seg:x", "write seg:CLASS with a class index")):
        capsys.readouterr()
        assert main([*base, "--target", target, "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip()
        assert words in err and len(err.splitlines()) == 1, err
        assert not (tmp_path / "o").exists()


SEG = ["--model", "lraspp_mobilenet_v3_large", "--weights", "none", "--input-size", "64", "--layers", "classifier.*",
       "--quiet", "--no-video"]


def test_metrics_with_a_target_on_the_output_are_refused_before_the_cam_pass(tmp_path, capsys, monkeypatch):
    """(review) `--metric` with `--target seg:10`: the metrics' one line, exit 2, nothing written, before the CAM
    pass and ybROAD (it came after both)."""
    import camanim.api

    def no_pass(*args, **kwargs):
        raise AssertionError("the CAM pass ran")

    monkeypatch.setattr(camanim.api, "animate", no_pass)
    for metric in ("all", "deletion"):
        capsys.readouterr()
        assert main(["run", "sample:cat", *SEG, "--target", "seg:10", "--metric", metric,
                     "--out", str(tmp_path / "new" / "o")]) == 2
        said = capsys.readouterr()
        err = said.err.strip().splitlines()
        assert err == ["camanim: error: metrics score a class's probability or logit, and this result explains a "
                       "target on the model's output ('seg:10'): score it with ybROAD (--road, camanim.ybroad)"], err
        assert "target:" not in said.out and "ybROAD" not in said.out
        assert not (tmp_path / "new").exists()


def _lines(frame: np.ndarray) -> list[int]:
    """The rows of a frame's image panel (its top 320 rows) that hold a horizontal outline."""
    return [y for y in range(320) if (frame[y] == OUTLINE_COLOUR).all(axis=-1).sum() > 250]


def test_one_seg_target_per_image_with_a_mask_of_its_own(tmp_path, capsys):
    """(#18 review) ``--target`` once per image: two images, seg:10 over the top half (a mask, whose option has a
    comma of its own) and seg:10 over the predicted region (the random model predicts 10 everywhere)."""
    mask = np.zeros((64, 64), np.uint8)
    mask[:32] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    out = tmp_path / "o"
    assert main(["run", "sample:cat", "sample:coffee", *SEG, "--target", f"seg:10,mask={tmp_path / 'm.png'}",
                 "--target", "seg:10", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    cat = json.loads((out / "cat" / "manifest.json").read_text())["target"]
    coffee = json.loads((out / "coffee" / "manifest.json").read_text())["target"]
    assert cat["label"] == f"seg:10,mask={tmp_path / 'm.png'}" and coffee["label"] == "seg:10"
    assert f"cat: target: seg:10,mask={tmp_path / 'm.png'}, value" in printed and "coffee: target: seg:10, value" in printed
    cat_lines = _lines(np.asarray(Image.open(sorted((out / "cat/frames/local").glob("*.png"))[-1]).convert("RGB")))
    coffee_lines = _lines(np.asarray(Image.open(sorted((out / "coffee/frames/local").glob("*.png"))[-1]).convert("RGB")))
    assert cat_lines and all(150 <= y <= 170 for y in cat_lines if y > 10), cat_lines  # the mask's lower edge, mid-way
    assert max(coffee_lines) > 300 and not any(150 <= y <= 170 for y in coffee_lines), coffee_lines  # the border


@pytest.mark.parametrize(("targets", "words"), [
    (["seg:10,mask=m.png,seg:10"], "--target 'seg:10,mask=m.png,seg:10' is ambiguous with 2 images (a comma in a "
                                   "seg: target): give --target once per image, e.g. --target seg:15,mask=m.png "
                                   "--target seg:7"),
    (["seg:10", "seg:10", "seg:10"], "--target is given 3 times for 2 image(s): give it once per image, or once for all"),
    (["3,seg:10"], "--target '3,seg:10': seg:, box: and similar: targets are given one per --target: give "
                   "--target once per image, e.g. --target seg:15,mask=m.png --target seg:7"),
])
def test_an_ambiguous_per_image_target_is_refused_in_one_line(tmp_path, capsys, targets, words):
    out = tmp_path / "o"
    args = [a for t in targets for a in ("--target", t)]
    assert main(["run", "sample:cat", "sample:coffee", *SEG, *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"camanim: error: {words}", err
    assert not out.exists()


def test_cli_errors_name_the_target_option_one_per_kind(tmp_path, capsys):
    """(#18 review) The command line's messages say ``--target ...`` as written (the Python API names its
    objects: tests/compute/test_targets_output.py)."""
    for target, words in (("seg:21", "--target seg:21: class 21 is out of range"),
                          ("box:0", "--target box:0 needs a detector's output"),
                          (f"similar:{tmp_path / 'nope.png'}", f"--target similar:{tmp_path / 'nope.png'}: the "
                                                              "reference: image")):
        assert main(["run", "sample:cat", *SEG, "--target", target, "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"camanim: error: {words}") and len(err.splitlines()) == 1, err


def test_similar_on_a_classifier_warns_in_one_line(tmp_path, capsys):
    """(#18 review) similar: on resnet18 (a classifier) reads its 1000 logits: one warning line says so and how
    to give the backbone; the run still completes."""
    assert main(["run", "sample:cat", "--model", "resnet18", "--weights", "none", "--input-size", "64", "--layers",
                 "layer4", "--target", "similar:sample:coffee", "--quiet", "--no-video",
                 "--out", str(tmp_path / "o")]) == 0
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("camanim: warning")]
    assert err == ["camanim: warning: --target similar:sample:coffee: the similarity is computed on the classifier's "
                   "logits (fc, Linear(512 -> 1000), 1000 values), not on an embedding: give the model without its "
                   "head (a timm model with num_classes=0, --num-classes 0; or the head replaced by "
                   "torch.nn.Identity()), or pick an embedding output with output_key (--output-key); see the "
                   "README's Tasks, Embeddings"]
