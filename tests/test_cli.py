"""The CLI contract: one stderr line and exit 2 for bad input, nothing left behind, help, targets, outputs."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image, ImageSequence

from camanim import InputError, load_cams
from camanim.cli import main

# resnet18 with random weights on its last block: a few layers, fast on a CPU
SMALL = ["--model", "resnet18", "--weights", "none", "--layers", "layer4.1*", "--quiet"]


def _one_err_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("camanim") and "Traceback" not in err[0]
    return err[0]


# -- offline downloads ------------------------------------------------------------


@pytest.fixture
def empty_hf_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache, so no earlier download can satisfy the request."""
    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    return tmp_path


def _assert_offline_failure(capsys, out) -> None:
    line = _one_err_line(capsys)
    assert "model 'resnet10t'" in line and "Hugging Face hub, which cannot be reached" in line
    assert "--weights PATH" in line and "--weights none" in line
    assert "Retry" not in line and not out.parent.exists()


def test_timm_weights_offline_fail_fast_with_one_line(empty_hf_cache, capsys):
    from camanim.sources.models import hub_reachable

    if hub_reachable():
        pytest.skip("the Hugging Face hub is reachable: this test needs the network to be unavailable")
    out = empty_hf_cache / "a" / "out"
    assert main(["sample:cat", "--model", "timm:resnet10t", "--out", str(out), "--quiet"]) == 2
    _assert_offline_failure(capsys, out)


def test_timm_weights_unreachable_hub_uses_offline_mode(empty_hf_cache, capsys, monkeypatch):
    """Whatever this machine's network, an unreachable hub means no retries, and the mode is restored."""
    import huggingface_hub.constants as constants

    import camanim.sources.models as models

    monkeypatch.setattr(models, "hub_reachable", lambda *a, **k: False)
    before = constants.HF_HUB_OFFLINE
    out = empty_hf_cache / "b" / "out"
    assert main(["sample:cat", "--model", "timm:resnet10t", "--out", str(out), "--quiet"]) == 2
    _assert_offline_failure(capsys, out)
    assert constants.HF_HUB_OFFLINE == before


def test_only_camanims_own_log_records_reach_stderr(tmp_path, capsys, monkeypatch):
    import camanim.sources

    def noisy_load(*a, **k):
        logging.getLogger("thirdparty.hub").warning("Retrying in 8s [Retry 5/5].")
        logging.getLogger("camanim.sources").warning("own warning")
        raise InputError("model 'x' is broken: pass another")

    monkeypatch.setattr(camanim.sources, "load_model", noisy_load)
    assert main(["--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["camanim: own warning", "camanim: error: model 'x' is broken: pass another"]


# -- nothing half-written -----------------------------------------------------------


def test_unknown_model_leaves_no_new_parent_folders(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["--model", "resnet5O", "--out", "a/b/out", "--quiet"]) == 2
    assert "unknown model 'resnet5O'" in _one_err_line(capsys)
    assert not (tmp_path / "a").exists() and list(tmp_path.iterdir()) == []


def test_bad_image_under_new_parents_leaves_them_out_but_keeps_existing_ones(tmp_path, capsys):
    (tmp_path / "keep").mkdir()
    notes = tmp_path / "notes.png"
    notes.write_text("not an image")
    assert main([str(notes), *SMALL, "--out", str(tmp_path / "keep" / "x" / "y" / "out")]) == 2
    assert f"'{notes}' is not an image" in _one_err_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep", "notes.png"]
    assert list((tmp_path / "keep").iterdir()) == []


# -- argparse errors and help ---------------------------------------------------------


@pytest.mark.parametrize("args,needle", [
    (["--score", "foo"], "argument --score: invalid choice: 'foo'"),
    (["run", "--fps", "fast"], "argument --fps: invalid float value: 'fast'"),
    (["layers", "--bogus"], "unrecognized arguments: --bogus"),
    (["road"], "the following arguments are required: out_dir"),
])
def test_parse_errors_are_one_line(capsys, args, needle):
    assert main(args) == 2
    line = _one_err_line(capsys)
    assert needle in line and "--help" in line
    assert capsys.readouterr().out == ""


def test_top_level_help_documents_runs_options(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for sub in ("run", "layers", "methods", "models", "road", "report", "compare"):
        assert re.search(rf"^\s+{sub}\s", out, re.M), sub
    for opt in ("--method", "--road", "--fps", "--target", "--layers", "--out", "--colormap", "--no-video"):
        assert opt in out, opt


# -- targets per image ---------------------------------------------------------------


def test_one_target_per_image_from_the_cli(tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["run", "sample:cat", "sample:coffee", "--target", "281,eel", *SMALL, "--no-video",
                 "--out", str(out)]) == 0
    cat = json.loads((out / "cat" / "manifest.json").read_text())
    coffee = json.loads((out / "coffee" / "manifest.json").read_text())
    assert (cat["target"]["index"], cat["target"]["label"]) == (281, "tabby")
    assert (coffee["target"]["index"], coffee["target"]["label"]) == (390, "eel")
    assert cat["image"]["source"] == "sample:cat" and coffee["image"]["source"] == "sample:coffee"


def test_single_and_topk_targets_still_apply_to_every_image(tmp_path):
    out = tmp_path / "o"
    assert main(["run", "sample:cat", "sample:coffee", "--target", "eel", *SMALL, "--no-video",
                 "--out", str(out)]) == 0
    for name in ("cat", "coffee"):
        assert json.loads((out / name / "manifest.json").read_text())["target"]["index"] == 390
    top = tmp_path / "top"
    assert main(["run", "sample:cat", "--target", "topk:2", *SMALL, "--no-video", "--out", str(top)]) == 0
    classes = sorted(p.name for p in top.iterdir() if p.is_dir())
    assert len(classes) == 2 and all(c.startswith("class_") for c in classes)


@pytest.mark.parametrize("images", [["sample:cat"], ["sample:cat", "sample:coffee", "sample:rocket"]])
def test_target_count_must_match_the_images(tmp_path, capsys, images):
    out = tmp_path / "o"
    assert main(["run", *images, "--target", "281,eel", *SMALL, "--out", str(out)]) == 2
    line = _one_err_line(capsys)
    assert f"--target '281,eel' gives 2 targets for {len(images)} image" in line
    assert list(tmp_path.iterdir()) == []


# -- what comes out ----------------------------------------------------------------


def test_layers_prints_parameter_counts(capsys):
    assert main(["layers", "--model", "resnet18", "--layers", r"re:^(conv1|bn1|layer1\.0\.conv1|fc)$"]) == 0
    rows = {}
    for line in capsys.readouterr().out.splitlines()[1:-1]:
        cols = line.split()
        rows[cols[1]] = int(cols[4].replace(",", ""))
    assert rows == {"conv1": 3 * 64 * 7 * 7, "bn1": 2 * 64, "layer1.0.conv1": 64 * 64 * 3 * 3,
                    "fc": 512 * 1000 + 1000}
    assert rows["conv1"] == 9408


@pytest.fixture(scope="module")
def viridis_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("viridis") / "o"
    assert main(["sample:coffee", *SMALL, "--fps", "5", "--colormap", "viridis", "--format", "mp4,gif",
                 "--out", str(out)]) == 0
    return out


def test_gif_has_one_frame_per_layer(viridis_run):
    n = len(json.loads((viridis_run / "manifest.json").read_text())["layers"])
    assert n > 3
    with Image.open(viridis_run / "camanim_local.gif") as gif:
        assert sum(1 for _ in ImageSequence.Iterator(gif)) == n
        assert gif.info["duration"] == 200  # 5 fps


def test_fps_reaches_the_mp4(viridis_run):
    for video in ("camanim_local.mp4", "camanim_side_by_side.mp4"):
        reader = imageio_ffmpeg.read_frames(str(viridis_run / video))
        meta = next(reader)
        reader.close()
        assert meta["fps"] == pytest.approx(5.0)


def test_colormap_changes_the_frames(viridis_run, tmp_path):
    jet = tmp_path / "jet"
    assert main(["sample:coffee", *SMALL, "--no-video", "--out", str(jet)]) == 0
    assert json.loads((viridis_run / "manifest.json").read_text())["render"]["colormap"] == "viridis"
    a = np.asarray(Image.open(viridis_run / "frames" / "local" / "0000.png")).astype(int)
    b = np.asarray(Image.open(jet / "frames" / "local" / "0000.png")).astype(int)
    assert a.shape == b.shape
    assert np.abs(a - b).mean() > 5


def test_progress_bars_when_forced(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CAMANIM_PROGRESS", "1")
    args = ["sample:coffee", *[a for a in SMALL if a != "--quiet"], "--no-video", "--out", str(tmp_path / "o")]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "cams gradcam" in err and "frames local" in err and "frames global" in err
    assert re.search(r"frames local: 100%\|.*\| (\d+)/\1", err)


# -- the README's command lines work as written ------------------------------------------------------


def _readme_commands() -> tuple[list[str], str]:
    """Every command line of the README's "Command line" section and of its plugin example, and the
    plugin module the README shows (``my_cams.py``)."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    cli = text[text.index("## Command line"):text.index("## Python")]
    plugin = text[text.index("**Your own method.**"):]
    blocks = re.findall(r"```bash\n(.*?)```", cli, re.S) + re.findall(r"```bash\n(.*?)```", plugin, re.S)[:1]
    lines = [ln.strip() for b in blocks for ln in b.splitlines() if ln.strip()]
    module = re.search(r"```python\n# my_cams.py\n(.*?)```", plugin, re.S)
    assert module is not None
    return lines, module.group(1)


def _files_the_readme_names(folder: Path) -> None:
    """photo.jpg, a.png, b.png, scan.png, x.png, scan.dcm, my_finetuned.pt, labels.txt and cifar_net.pt, made here."""
    import shutil

    import skimage.data
    import torch
    import torchvision
    from pydicom.data import get_testdata_file
    from torch import nn

    cat, coffee = Image.fromarray(skimage.data.chelsea()), Image.fromarray(skimage.data.coffee())
    for name in ("photo.jpg", "a.png", "scan.png"):
        cat.resize((160, 120)).save(folder / name)
    coffee.resize((120, 90)).save(folder / "b.png")
    cat.resize((40, 40)).save(folder / "x.png")
    shutil.copyfile(get_testdata_file("CT_small.dcm"), folder / "scan.dcm")
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet50(weights=None, num_classes=2).state_dict(), folder / "my_finetuned.pt")
    (folder / "labels.txt").write_text("benign\nmalignant\n")
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2048, 10))
    torch.save(net.eval(), folder / "cifar_net.pt")


@pytest.mark.slow
def test_every_readme_command_line_runs(tmp_path, monkeypatch, capsys):
    """Each command of the README's CLI section (and its plugin example) runs as written: the files it
    names are made here, and ``--weights none`` is added where the library's weights would be
    downloaded (``--quiet`` to runs, for a quiet log; ``--no-video`` to whole-network runs)."""
    import shlex
    import sys

    from camanim.sources import list_models

    lines, plugin = _readme_commands()
    assert len(lines) >= 12 and all(ln.split()[0] in ("camanim", "PYTHONPATH=.") for ln in lines), lines
    assert "my_cams:PositiveGradCAM" in " ".join(lines) and "class PositiveGradCAM" in plugin
    _files_the_readme_names(tmp_path)
    (tmp_path / "my_cams.py").write_text(plugin)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # PYTHONPATH=.
    monkeypatch.delitem(sys.modules, "my_cams", raising=False)
    builtin = set(list_models()["builtin"])
    printed = {}
    for line in lines:
        args = shlex.split(line, comments=True)
        args = args[2:] if args[0] == "PYTHONPATH=." else args[1:]
        command = args[0] if args and not args[0].startswith("-") else "run"
        model = args[args.index("--model") + 1] if "--model" in args else None
        if command == "run" and model and model not in builtin and not model.endswith(".pt") \
                and "--weights" not in args:
            args += ["--weights", "none"]
        if command == "run":
            args += ["--quiet"]
            if "--layers" not in args:
                # the whole network's videos are encoded as in test_default_run_writes_the_contract; here the
                # suite's time goes to checking the commands themselves (runs of a few layers still encode)
                args += ["--no-video"]
        capsys.readouterr()
        assert main(args) == 0, (line, capsys.readouterr().err)
        printed[line] = capsys.readouterr().out
    assert all(printed.values())
    by_start = {line.split("#")[0].strip(): out for line, out in printed.items()}
    assert "layers: 5" in by_start["camanim run x.png --model cifar_net.pt --trust-checkpoint --input-size 32"]
    assert "(benign)" in printed[next(ln for ln in lines if "my_finetuned.pt" in ln)] or \
        "(malignant)" in printed[next(ln for ln in lines if "my_finetuned.pt" in ln)]
    assert "posgradcam" in printed[next(ln for ln in lines if "my_cams:PositiveGradCAM" in ln)]
    top = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert top["kind"] == "set" and len(top["runs"]) == 2 * 2 * 2 and len(top["grids"]) == 2 * 2  # images x classes
    assert (tmp_path / "camanim-out" / "camanim_methods_grid.mp4").is_file()  # the last: a plugin and gradcam


def test_run_a_nifti_volume_with_a_pickled_3d_model(tmp_path, capsys):
    """`camanim run scan.nii.gz --model model.pt --trust-checkpoint`: a run of volume CAMs; --road is refused in
    one line (exit 2) and leaves nothing behind."""
    import nibabel as nib
    import torch
    from conftest import tiny_net3d

    model_path = tmp_path / "net3d.pt"
    torch.save(tiny_net3d(), model_path)
    vol = np.random.default_rng(0).normal(size=(8, 12, 16)).astype(np.float32)
    scan = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(scan))
    out = tmp_path / "out"
    args = ["run", str(scan), "--model", str(model_path), "--trust-checkpoint", "--layers", "conv*,fc", "--quiet",
            "--out"]
    assert main([*args, str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["image"]["size"] == [8, 12, 16] and manifest["image"]["format"] == "nifti"
    assert [entry["layout"] for entry in manifest["layers"]] == ["NCDHW", "NCDHW", "NCDHW", "non_spatial"]
    with np.load(out / "cams.npz") as saved:
        assert load_cams(out).shape == (4, 8, 12, 16)
        np.testing.assert_allclose(saved["input"][0, 0], vol)  # the stored intensities, as they are
    capsys.readouterr()
    assert main([*args, str(tmp_path / "scored"), "--road"]) == 2
    said = capsys.readouterr()
    assert "class:" not in said.out  # (review) refused before the CAM pass, not after it
    err = said.err.strip().splitlines()
    assert len(err) == 1 and "works on 2-D images only" in err[0]
    assert not (tmp_path / "scored").exists()


def test_metrics_on_a_volume_are_refused_before_the_cam_pass(tmp_path, capsys, monkeypatch):
    """(review) `--metric` on a volume: one line, exit 2, before the CAM pass and with nothing written (it
    crashed with a traceback after the whole pass)."""
    import nibabel as nib
    import torch
    from conftest import tiny_net3d

    import camanim.api

    model_path = tmp_path / "net3d.pt"
    torch.save(tiny_net3d(), model_path)
    scan = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).normal(size=(8, 12, 16)).astype(np.float32), np.eye(4)),
             str(scan))

    def no_pass(*args, **kwargs):
        raise AssertionError("the CAM pass ran")

    monkeypatch.setattr(camanim.api, "animate", no_pass)
    for metric in ("deletion", "avgdrop", "all", "insertion,cammult"):
        capsys.readouterr()
        out = tmp_path / "new" / "out"
        assert main(["run", str(scan), "--model", str(model_path), "--trust-checkpoint", "--metric", metric,
                     "--no-video", "--quiet", "--out", str(out)]) == 2, metric
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "score 2-D images only" in err[0] and "leave out --metric" in err[0], (metric, err)
        assert not (tmp_path / "new").exists()


# -- what the terminal shows ---------------------------------------------------------------------


def test_plain_progress_lines_when_stderr_is_not_a_terminal(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CAMANIM_PROGRESS", raising=False)
    args = ["sample:coffee", *[a for a in SMALL if a != "--quiet"], "--no-video", "--out", str(tmp_path / "o")]
    assert main(args) == 0
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("camanim: ")]
    n = len(json.loads((tmp_path / "o" / "manifest.json").read_text())["layers"])
    # one line when a stage starts and one when it ends (the run is shorter than the line interval)
    assert f"camanim: frames local {n}/{n} frames (100%)" in lines
    assert sum(ln.startswith("camanim: frames local ") for ln in lines) <= 2
    assert "camanim: report 1/1 file" in lines
    assert "\r" not in err and "|" not in err  # no bars in a log


def test_a_given_target_prints_the_prediction_too(tmp_path, capsys):
    assert main(["sample:cat", *SMALL, "--no-video", "--target", "eel", "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    top = manifest["top"][0]
    assert top["index"] != 390
    assert f"predicted class: {top['index']} ({top['label']}), p={top['score']:.3g}" in out
    assert "target class: 390 (eel), p=" in out and "predicted/target" not in out
    assert len(manifest["top"]) == 5 and manifest["top"][0]["score"] >= manifest["top"][-1]["score"]


def test_the_wrote_list_is_one_column_however_long_its_keys(tmp_path, capsys):
    """(review) A set's keys (``cat/camanim_methods_grid_global.mp4``) are longer than a run's: the paths
    still start in one column."""
    args = ["sample:cat", "--model", "resnet18", "--weights", "none", "--layers", "layer4.1.conv2", "--quiet",
            "--method", "gradcam,hirescam", "--fps", "2", "--out", str(tmp_path / "o")]
    assert main(args) == 0
    out = capsys.readouterr().out
    listed = out[out.index("wrote "):].splitlines()[1:]
    assert len(listed) >= 5 and any("camanim_methods_grid_global.mp4: " in ln for ln in listed), listed
    assert len({ln.index(": ") for ln in listed}) == 1, listed


def test_camanims_warnings_are_one_line_each(tmp_path, capsys):
    """(review) A warning of camanim's own (here: CAM does not apply to a layer) is one
    ``camanim: warning:`` line, not Python's file:line plus source line."""
    args = ["sample:cat", "--model", "resnet18", "--weights", "none", "--layers", "layer4.1.conv2,layer4.1",
            "--method", "cam", "--no-video", "--quiet", "--out", str(tmp_path / "o")]
    assert main(args) == 0
    err = capsys.readouterr().err
    warned = [ln for ln in err.splitlines() if "warning" in ln.lower()]
    assert warned and all(ln.startswith("camanim: warning: ") for ln in warned), err
    assert ".py:" not in err and "RuntimeWarning" not in err, err


def test_signed_numbers_never_show_minus_zero():
    """(review) A ROAD mean of -0.00001 printed as "-0.0000"."""
    from camanim.cli import signed

    assert [signed(v) for v in (-0.00001, -0.0, 0.0, 0.12345, -0.00006, 1e-9)] == [
        "-1e-05", "+0", "+0", "+0.1235", "-6e-05", "+1e-09"]


@pytest.mark.parametrize("command", [
    ["sweep", "sample:cat", "--model", "resnet18", "--weights", "none", "--quiet"],
    ["run", "sample:cat", "--model", "resnet18", "--weights", "none", "--no-video"],
    ["compare", "run-a", "run-b"],
])
def test_an_out_that_is_a_file_is_one_line_and_nothing_written(command, tmp_path, capsys, monkeypatch):
    """(review) ``camanim sweep ... --out FILE`` ended in a FileExistsError traceback (exit 1): every subcommand
    whose --out is a folder refuses an existing file in one line, exit 2, before anything is loaded or written."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "f").write_text("mine")
    assert main([*command, "--out", "f"]) == 2
    assert capsys.readouterr().err == "camanim: error: --out 'f' is a file, not a folder: give a folder path\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"] and (tmp_path / "f").read_text() == "mine"
