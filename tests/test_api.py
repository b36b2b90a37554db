"""End to end: the default run, the output folder contract, the CLI and its errors."""

from __future__ import annotations

import html
import json
import re
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

import camanim
from camanim import InputError
from camanim.cli import main
from camanim.draw.video import count_frames, probe


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """`camanim --out DIR` with no other arguments: the built-in default model and image."""
    out = tmp_path_factory.mktemp("run") / "out"
    assert main(["--out", str(out), "--quiet"]) == 0
    return out


def test_default_run_writes_the_contract(default_run, capsys):
    out = default_run
    m = json.loads((out / "manifest.json").read_text())
    assert m["model"]["name"] == "efficientnet_lite0" and m["model"]["num_classes"] == 1000
    assert m["image"]["source"] == "sample:cat" and m["image"]["size"] == [224, 224]
    assert m["method"] == "gradcam" and m["normalisations"] == ["local", "global"]
    assert m["target"]["index"] in (281, 282, 285) and m["target"]["label"]
    assert m["versions"]["torch"] == torch.__version__
    n = len(m["layers"])
    assert n == m["frames"]["count"] > 200
    first = m["layers"][0]
    assert first["name"] == "conv_stem" and first["type"] == "Conv2dSame" and first["shape"] == [1, 32, 112, 112]
    assert first["params"] == 864 and first["layout"] == "NCHW" and first["non_spatial"] is False
    assert m["layers"][-1]["name"] == "classifier" and m["layers"][-1]["non_spatial"] is True
    for norm in ("local", "global"):
        assert len(list((out / "frames" / norm).glob("*.png"))) == n
    page = (out / "report.html").read_text()
    assert "efficientnet_lite0" in page and "conv_stem" in page and len(page) < 40e6
    # The region the model saw, in the original's pixels, and drawn on it in the report.
    w, h = m["image"]["original_size"]
    assert m["image"]["crop"] == camanim.load_model("efficientnet_lite0").preprocess.crop_box((w, h))
    x0, y0, x1, y1 = m["image"]["crop"]["box"]
    assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
    assert f'<rect class="cam-crop-box" x="{x0}" y="{y0}"' in page and f'viewBox="0 0 {w} {h}"' in page
    for video in ("camanim_local.mp4", "camanim_global.mp4", "camanim_side_by_side.mp4"):
        info = probe(out / video)
        assert (info["codec"], info["pix_fmt"]) == ("h264", "yuv420p")
        assert count_frames(out / video) == n
    cams = camanim.load_cams(out)
    assert cams.shape == (n, 224, 224) and cams.dtype == np.float32
    assert list(np.load(out / "cams.npz")["names"]) == [layer["name"] for layer in m["layers"]]
    maxes = cams.reshape(n, -1).max(axis=1)
    assert cams.min() >= 0
    assert maxes.max() / maxes[maxes > 0].min() > 10, "raw CAMs are kept unscaled (per-layer maxima differ)"


def test_global_frames_differ_from_local_on_a_real_model(default_run):
    cams = torch.from_numpy(camanim.load_cams(default_run))
    local, glob = camanim.normalise(cams, "local"), camanim.normalise(cams, "global")
    per_layer = (local - glob).abs().amax(dim=(1, 2))
    spatial = cams.amax(dim=(1, 2)) > 0
    assert (per_layer[spatial] > 0.2).float().mean() > 0.5, "global must not equal local"
    # the drawn frames differ too: a weak early layer is bright locally, dim globally
    i = int(torch.nonzero(spatial)[3])
    a = np.asarray(Image.open(default_run / f"frames/local/{i:04d}.png")).astype(int)
    b = np.asarray(Image.open(default_run / f"frames/global/{i:04d}.png")).astype(int)
    assert np.abs(a[:300] - b[:300]).mean() > 5


def test_api_animate_with_own_module_and_transform(tmp_path):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=3).eval()
    tf = torchvision.transforms.Compose([torchvision.transforms.Resize((64, 64)),
                                         torchvision.transforms.ToTensor()])
    result = camanim.animate(model, "sample:coffee", preprocess=tf, layers="layer*", labels=["a", "b", "c"],
                             target="b", method="hirescam")
    assert result.target.index == 1 and result.target.label == "b"
    assert result.cams.shape[1:] == (64, 64) and result.layers[0].name == "layer1.0.conv1"
    assert result.image.shape == (64, 64, 3)
    paths = result.save(tmp_path / "o", normalisations=["local"], video=False)
    assert set(paths) == {"cams", "frames_local", "manifest", "report"}
    html = result._repr_html_()
    assert "<html" not in html and "layer1.0.conv1" in html and "hirescam" in html
    assert not (tmp_path / "o" / "frames" / "global").exists()


def _err_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    return err[0]


@pytest.mark.parametrize("args,needle", [
    (["missing.png"], "image 'missing.png' not found"),
    (["--model", "resnet5O"], "unknown model 'resnet5O'"),
    (["--method", "nocam"], "unknown method 'nocam'"),
    (["--model", "resnet18", "--weights", "none", "--layers", "zzz*"], "matches no layer"),
    (["--model", "resnet18", "--weights", "none", "--target", "5000"], "out of range"),
    (["--model", "resnet18", "--weights", "none", "--target", "unicorn"], "not a class label"),
    (["--norm", "loud"], "--norm 'loud'"),
    (["--format", "avi"], "--format 'avi'"),
    (["--weights", "nope.pt"], "weights file 'nope.pt' not found"),
    (["--norm", ","], "no normalisation given"),
    (["--norm", "local,local"], "names a normalisation twice"),
    (["--fps", "1e400"], "--fps inf must be a positive number"),
    (["--road-trials", "3"], "--road-trials sets up ybROAD, which this run does not compute: add --road"),
    (["--road", "--road-percentiles", "20,20"], "repeats a percentage"),
])
def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys, monkeypatch, args, needle):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    assert main([*args, "--out", str(out), "--quiet"]) == 2
    assert needle in _err_line(capsys)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [], "nothing half-written"


def test_cli_refuses_unwritable_or_foreign_output(tmp_path, capsys):
    foreign = tmp_path / "docs"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("x")
    assert main(["--out", str(foreign), "--quiet"]) == 2
    assert "is not empty (thesis.tex) and not a camanim run" in _err_line(capsys)
    afile = tmp_path / "f"
    afile.write_text("x")
    assert main(["--out", str(afile / "sub"), "--quiet"]) == 2
    assert "--out" in _err_line(capsys)
    assert (foreign / "thesis.tex").read_text() == "x"


def test_cli_checkpoint_mismatch_and_offline_download(tmp_path, capsys, monkeypatch):
    torch.save(torchvision.models.resnet18(weights=None, num_classes=2).state_dict(), tmp_path / "ft.pt")
    assert main(["--model", "resnet18", "--weights", str(tmp_path / "ft.pt"), "--out", str(tmp_path / "o")]) == 2
    assert "does not fit architecture 'resnet18'" in _err_line(capsys)

    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    assert main(["--model", "resnet18", "--out", str(tmp_path / "o")]) == 2
    line = _err_line(capsys)
    assert "need a download" in line and "--weights PATH" in line
    assert not (tmp_path / "o").exists()


def test_failure_mid_save_leaves_nothing(tmp_path, monkeypatch, tiny):
    import camanim.rundir.write as write

    result = camanim.animate(tiny, torch.randn(1, 3, 16, 16))

    def broken(*a, **k):
        raise RuntimeError("encoder died")

    monkeypatch.setattr(write, "write_mp4", broken)
    with pytest.raises(RuntimeError, match="encoder died"):
        result.save(tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_rerun_replaces_an_earlier_run(tmp_path, tiny):
    # what the earlier run wrote and this one does not (its GIFs, its ybROAD tables) goes with it
    result = camanim.animate(tiny, torch.randn(1, 3, 16, 16))
    result.save(tmp_path / "out", formats=("mp4", "gif"))
    (tmp_path / "out" / "ybroad.csv").write_text("old scores")
    result.save(tmp_path / "out", video=False)
    assert not (tmp_path / "out" / "ybroad.csv").exists() and not list((tmp_path / "out").glob("*.gif"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_cli_layers_methods_models(capsys):
    assert main(["layers", "--model", "resnet18", "--layers", "layer4*"]) == 0
    out = capsys.readouterr().out
    assert "layer4.0.conv1" in out and "layer4.1.relu#2" in out and "Conv2d" in out
    assert "1x512x7x7" in out
    assert main(["methods"]) == 0
    assert "gradcam++" in capsys.readouterr().out
    assert main(["models", "convnext_t*"]) == 0
    out = capsys.readouterr().out
    assert "convnext_tiny" in out and "resnet" not in out


def test_cli_prints_prediction_and_paths(tmp_path, capsys):
    assert main(["sample:coffee", "--model", "resnet18", "--weights", "none", "--layers", "layer4*",
                 "--out", str(tmp_path / "o"), "--format", "mp4,gif", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "predicted/target class:" in out and str(tmp_path / "o") in out
    assert (tmp_path / "o" / "camanim_local.gif").is_file()
    assert Path(tmp_path / "o" / "camanim_side_by_side.mp4").is_file()


def test_manifest_names_the_mp4_when_gifs_are_written_too(tmp_path, tiny, tiny_input):
    result = camanim.animate(tiny, tiny_input)
    written = result.save(tmp_path / "out", formats=("gif", "mp4"), report=False)
    videos = json.loads((tmp_path / "out" / "manifest.json").read_text())["videos"]
    assert videos == {"local": "camanim_local.mp4", "global": "camanim_global.mp4",
                      "side_by_side": "camanim_side_by_side.mp4"}
    assert written["local_gif"].is_file() and written["local_mp4"].is_file()


def test_ybroad_and_road_for_run_name_a_set_of_runs_instead_of_crashing(tmp_path, tiny, tiny_input):
    results = camanim.animate(tiny, tiny_input, method="gradcam,hirescam")
    # a set of several methods is not one experiment across images: refused, in words
    with pytest.raises(camanim.InputError, match="compares one method; score each method's results separately"):
        camanim.ybroad(results)
    results.save(tmp_path / "set", video=False, report=False)
    with pytest.raises(camanim.InputError, match="holds several runs .*: give one of its run folders, e.g. "):
        camanim.road_for_run(tmp_path / "set", model=tiny)


def test_road_for_run_on_a_run_missing_a_frame_changes_nothing(tmp_path, tiny, tiny_input):
    result = camanim.animate(tiny, tiny_input)
    result.save(tmp_path / "out", video=False)
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir() if p.is_file()}
    (tmp_path / "out" / "frames" / "local" / "0001.png").unlink()
    with pytest.raises(camanim.InputError, match="0001.png is missing"):
        camanim.road_for_run(tmp_path / "out", model=tiny, percentiles=(50,))
    after = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir() if p.is_file()}
    assert after == before  # no ybroad files, manifest and report untouched


def test_road_for_run_refuses_a_cams_file_of_another_run_in_one_line_and_changes_nothing(tmp_path, tiny, tiny_input):
    # A cams.npz copied in from a run of other layers crashed the scoring with a ValueError (a traceback).
    camanim.animate(tiny, tiny_input).save(tmp_path / "out", video=False)
    camanim.animate(tiny, tiny_input, layers="conv1").save(tmp_path / "other", video=False, report=False)
    (tmp_path / "out" / "cams.npz").write_bytes((tmp_path / "other" / "cams.npz").read_bytes())
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    del manifest["cams_sha256"]  # a run saved before the checksum was kept: the layers are compared
    (tmp_path / "out" / "manifest.json").write_text(json.dumps(manifest))
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir() if p.is_file()}
    n = len(json.loads((tmp_path / "out" / "manifest.json").read_text())["layers"])
    with pytest.raises(camanim.InputError, match=rf"cams.npz holds the CAMs of 1 layer but .*manifest.json lists {n}: "
                                                 r"they come from different runs; re-run `camanim run`"):
        camanim.road_for_run(tmp_path / "out", model=tiny, percentiles=(50,))
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir() if p.is_file()} == before


def test_road_for_run_refuses_a_cams_file_of_another_image_with_the_same_layers(tmp_path, tiny, tiny_input):
    # The same layers, another image and class: the names matched, and ybROAD scored the other run's
    # input and target as this run's, silently. The manifest now holds cams.npz's SHA-256.
    camanim.animate(tiny, tiny_input).save(tmp_path / "out", video=False)
    other = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(9))
    camanim.animate(tiny, other, target=3).save(tmp_path / "other", video=False, report=False)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    import hashlib
    assert manifest["cams_sha256"] == hashlib.sha256((tmp_path / "out" / "cams.npz").read_bytes()).hexdigest()
    (tmp_path / "out" / "cams.npz").write_bytes((tmp_path / "other" / "cams.npz").read_bytes())
    with pytest.raises(camanim.InputError, match=r"cams.npz is not the file this run wrote \(its SHA-256 differs from "
                                                 r"manifest.json's cams_sha256: changed since, or written by another run\)"):
        camanim.road_for_run(tmp_path / "out", model=tiny, percentiles=(50,))
    # a run saved before the checksum: the target is compared
    del manifest["cams_sha256"]
    (tmp_path / "out" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(camanim.InputError, match=r"explains class 3 where .*manifest.json's target is class "):
        camanim.road_for_run(tmp_path / "out", model=tiny, percentiles=(50,))


# -- errors in the model's own forward: one line; camanim's own bugs keep their traceback ------------


class FixedSize(nn.Module):
    """A CIFAR-style net: Flatten + Linear, so only its training size (32 x 32) goes through."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(8 * 16 * 16, 10))

    def forward(self, x):
        return self.head(self.features(x))


class Picky(nn.Module):
    """A model that checks its input itself and raises its own error."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        if x.shape[-1] != 64:
            raise ValueError(f"Picky takes 64 px images,\n got {x.shape[-1]}")
        return self.fc(self.conv(x).mean((2, 3)))


def test_fixed_size_model_fails_in_one_line_and_runs_at_input_size(tmp_path, capsys):
    torch.manual_seed(0)
    torch.save(FixedSize().eval(), tmp_path / "cifar_net.pt")
    Image.fromarray((np.random.default_rng(0).random((40, 40, 3)) * 255).astype(np.uint8)).save(tmp_path / "x.png")
    base = ["run", str(tmp_path / "x.png"), "--model", str(tmp_path / "cifar_net.pt"), "--trust-checkpoint",
            "--no-video", "--quiet"]
    assert main([*base, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("camanim: error: model 'cifar_net.pt' failed on the input 1x3x224x224")
    assert "mat1 and mat2 shapes cannot be multiplied" in err[0] and "--input-size H,W" in err[0]
    assert not (tmp_path / "o").exists()
    assert main([*base, "--input-size", "32", "--out", str(tmp_path / "o")]) == 0
    saved = np.load(tmp_path / "o" / "cams.npz")
    assert saved["input"].shape == (1, 3, 32, 32) and camanim.load_cams(tmp_path / "o").shape[-2:] == (32, 32)
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["model"]["input_size"] == [32, 32] and manifest["model"]["spec"]["input_size"] == [32, 32]
    # in Python: input_size= on a module, or the loaded model
    model = torch.load(tmp_path / "cifar_net.pt", weights_only=False)
    r = camanim.animate(model, str(tmp_path / "x.png"), input_size=32)
    np.testing.assert_allclose(r.cams.numpy(), camanim.load_cams(tmp_path / "o"), rtol=1e-5, atol=1e-7)
    assert camanim.animate(model, str(tmp_path / "x.png"), input_size=(32, 32)).input_tensor.shape == (1, 3, 32, 32)
    with pytest.raises(InputError, match="failed on the input 1x3x224x224"):
        camanim.animate(model, str(tmp_path / "x.png"))
    with pytest.raises(InputError, match="own preprocess"):
        camanim.animate(model, str(tmp_path / "x.png"), input_size=32, preprocess=lambda im: torch.zeros(3, 32, 32))


@pytest.mark.parametrize("text", ["abc", "0", "32,0,4", "-5"])
def test_bad_input_size_is_one_line(tmp_path, capsys, text):
    assert main(["run", "--model", "resnet18", "--weights", "none", "--input-size", text,
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--input-size '{text}'" in err[0]


def test_models_own_error_is_one_line_naming_model_shape_and_message(tmp_path, capsys):
    torch.manual_seed(0)
    for layers in ("all", "conv"):  # the error raised with and without camanim's recording wrapper around it
        with pytest.raises(InputError, match=r"model 'Picky' failed on the input 1x3x40x40 \(ValueError: Picky "
                                             r"takes 64 px images, got 40\)") as err:
            camanim.animate(Picky().eval(), torch.rand(1, 3, 40, 40), layers=layers)
        assert "\n" not in str(err.value)
    ok = camanim.animate(Picky().eval(), torch.rand(1, 3, 64, 64))
    assert torch.isfinite(ok.cams).all()
    # in the CLI: exit 2, one line, and `camanim layers` says the same
    torch.save(Picky().eval(), tmp_path / "picky.pt")
    assert main(["layers", "--model", str(tmp_path / "picky.pt"), "--trust-checkpoint"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "failed on the input 1x3x224x224 (ValueError: Picky takes 64 px" in err[0]


def test_camanims_own_bugs_keep_their_traceback(monkeypatch):
    """A fault in camanim's code (here: the recorder handed something that is not a tensor) is not
    blamed on the user's model: it propagates as itself."""
    import camanim.trace.run as run

    class NotATensor:
        pass

    monkeypatch.setattr(run, "first_tensor", lambda output: NotATensor())
    with pytest.raises(AttributeError, match="shape"):
        camanim.animate(Picky().eval(), torch.rand(1, 3, 64, 64))


def test_layer_pattern_matching_nothing_names_the_library_and_real_names(capsys):
    assert main(["run", "sample:coffee", "--model", "convnext_tiny", "--weights", "none",
                 "--layers", "stages.2*", "--out", "never-written"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "matches no layer of torchvision's convnext_tiny" in err[0]
    assert "features, features.0, features.1" in err[0] and "camanim layers --model convnext_tiny" in err[0]
    assert not Path("never-written").exists()
    with pytest.raises(InputError, match="matches no layer of timm's resnet18, whose layers are named like conv1, bn1"):
        camanim.animate("timm:resnet18", "sample:cat", weights="none", layers="layer9*")
    with pytest.raises(InputError, match="matches no layer of Picky, whose layers are named like conv, fc:"):
        camanim.trace_layers(Picky(), "layer4*")


class _ViewNet(torch.nn.Module):
    """A forward that reshapes to a fixed size: torch's own error, raised under camanim's layout mode."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.fc = torch.nn.Linear(3600, 2)

    def forward(self, x):
        return self.fc(self.conv(x).view(-1, 3600))


@pytest.mark.parametrize(("model", "shape", "message"), [
    (torch.nn.Sequential(torch.nn.Conv2d(4, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                         torch.nn.Linear(4, 2)), (3, 32, 32), "to have 4 channels"),
    (_ViewNet(), (3, 32, 32), "invalid for input of size"),
])
def test_torch_op_errors_in_the_models_forward_are_one_line(model, shape, message):
    with pytest.raises(InputError, match=message) as info:
        camanim.animate(model.eval(), torch.rand(*shape), layers="all")
    text = str(info.value)
    assert "\n" not in text and "failed on the input 1x3x32x32" in text


# -- 3-D networks: volumes end to end -------------------------------------------------------------


def _gradcam_reference_3d(model, x, module, target):
    """pytorch-grad-cam's 3-D Grad-CAM of one layer, before its min-max scaling, after its ReLU."""
    from conftest import spy_raw_maps
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cam = GradCAM(model=model, target_layers=[module])
    captured = spy_raw_maps(cam)
    with cam:
        cam(input_tensor=x, targets=[ClassifierOutputTarget(target)])
    return captured[0][0]


def test_score_metrics_refuses_a_volume_in_one_line():
    """(review) The metrics' perturbations are 2-D: a volume's result is refused in one InputError line (it
    raised a RuntimeError from inside the scoring)."""
    from conftest import tiny_net3d, tiny_volume

    result = camanim.animate(tiny_net3d(), tiny_volume(), layers="conv*")
    for metrics in ("all", "deletion", "avgdrop"):
        with pytest.raises(InputError, match=r"^the faithfulness metrics .* score 2-D images only") as err:
            camanim.score_metrics(result, metrics=metrics)
        assert "\n" not in str(err.value) and result.metrics is None


def _check_volume_run(result, out, x, layouts):
    """The saved run of a volume: manifest, cams.npz volumes, frames of the montage, H.264 videos."""
    d, h, w = x.shape[2:]
    assert result.cams.shape == (len(result.layers), d, h, w)
    assert [r.layout for r in result.layers] == layouts
    written = result.save(out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["image"]["size"] == [d, h, w]
    montage = manifest["image"]["montage"]
    assert montage["slices"] == list(result.montage.slices) and montage["depth"] == d
    with np.load(out / "cams.npz") as saved:
        np.testing.assert_allclose(camanim.load_cams(out), result.cams.numpy(), rtol=1e-6, atol=0)
        assert saved["input"].shape == tuple(x.shape)
    for kind in ("local", "global", "side_by_side"):
        info = probe(written[f"{kind}_mp4"])
        assert (info["codec"], info["pix_fmt"]) == ("h264", "yuv420p")
        assert count_frames(written[f"{kind}_mp4"]) == len(result.layers)
    assert len(list((out / "frames" / "local").glob("*.png"))) == len(result.layers)
    assert (out / "report.html").is_file()
    return manifest


@pytest.mark.slow
def test_monai_densenet121_3d_runs_end_to_end(tmp_path):
    """MONAI's 3-D DenseNet121 (random weights) on a 32^3 volume: a CAM per selected layer from one pass,
    the last spatial layer's equal to pytorch-grad-cam's 3-D Grad-CAM, saved as a run with videos."""
    from monai.networks.nets import DenseNet121

    torch.manual_seed(0)
    model = DenseNet121(spatial_dims=3, in_channels=1, out_channels=2).eval()
    x = torch.randn(1, 1, 32, 32, 32, generator=torch.Generator().manual_seed(0))
    layers = "features.conv0,features.denseblock1.denselayer1.layers.conv1,features.transition3.conv,class_layers.out"
    result = camanim.animate(model, x, layers=layers)
    assert result.options["traced_passes"] == 1
    _check_volume_run(result, tmp_path / "dn", x, ["NCDHW", "NCDHW", "NCDHW", "non_spatial"])
    i = [r.name for r in result.layers].index("features.transition3.conv")
    ref = _gradcam_reference_3d(model, x, model.features.transition3.conv, result.target.index)
    raw = camanim.animate(model, x, layers="features.transition3.conv")
    assert ref.shape == (2, 2, 2)
    scale = float(np.abs(ref).max())
    assert scale > 0
    # the layer's map at its resolution is the reference; at input size it is that map resized trilinearly
    up = torch.nn.functional.interpolate(torch.from_numpy(ref)[None, None], size=(32, 32, 32), mode="trilinear",
                                         align_corners=False)[0, 0].numpy()
    np.testing.assert_allclose(result.cams[i].numpy(), up, rtol=1e-4, atol=1e-4 * scale)
    np.testing.assert_allclose(raw.cams[0].numpy(), up, rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.slow
def test_torchvision_r3d_18_runs_end_to_end(tmp_path):
    """torchvision's 3-D ResNet r3d_18 (weights=None) on a 3 x 8 x 32 x 32 clip, as a (C, D, H, W) tensor: a
    4-D tensor is one volume for a model whose convolutions are all 3-D; layer4's map equals the reference's."""
    torch.manual_seed(0)
    model = torchvision.models.video.r3d_18(weights=None, num_classes=5).eval()
    x = torch.randn(3, 8, 32, 32, generator=torch.Generator().manual_seed(1))
    result = camanim.animate(model, x, layers="stem.0,layer1.0.conv1.0,layer4,avgpool,fc", method="gradcam")
    manifest = _check_volume_run(result, tmp_path / "r3d", x[None],
                                 ["NCDHW", "NCDHW", "NCDHW", "non_spatial", "non_spatial"])
    assert [entry["shape"] for entry in manifest["layers"]][2] == [1, 512, 1, 2, 2]
    ref = _gradcam_reference_3d(model, x[None], model.layer4, result.target.index)
    up = torch.nn.functional.interpolate(torch.from_numpy(ref)[None, None], size=(8, 32, 32), mode="trilinear",
                                         align_corners=False)[0, 0].numpy()
    scale = float(np.abs(ref).max())
    assert scale > 0
    np.testing.assert_allclose(result.cams[2].numpy(), up, rtol=1e-4, atol=1e-4 * scale)


def test_road_refuses_volumes_in_one_line(tmp_path):
    """ybROAD's imputation is 2-D: a volume result, and a saved volume run, get one line saying so."""
    from conftest import tiny_net3d, tiny_volume

    model = tiny_net3d()
    result = camanim.animate(model, tiny_volume(), layers="conv*")
    with pytest.raises(InputError, match="works on 2-D images only.*for a volume leave out --road"):
        camanim.ybroad(result)
    result.save(tmp_path / "run", video=False, report=False)
    before = sorted(p.name for p in (tmp_path / "run").iterdir())
    with pytest.raises(InputError, match="works on 2-D images only"):
        camanim.road_for_run(tmp_path / "run", model=model)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == before
    with pytest.raises(InputError, match="figures are drawn for 2-D images only"):
        result.figure(tmp_path / "fig.png")


def test_guided_is_refused_for_a_volume_in_one_line():
    from conftest import tiny_net3d, tiny_volume

    with pytest.raises(InputError, match=r"^guided=True \(--guided\) draws Guided Grad-CAM frames of 2-D images"):
        camanim.animate(tiny_net3d(), tiny_volume(), layers="conv*", guided=True)


def test_trace_layers_of_a_3d_model_takes_a_volume():
    from conftest import tiny_net3d, tiny_volume

    records = camanim.trace_layers(tiny_net3d(), "conv*", image=tiny_volume())
    assert [(r.name, r.layout, r.shape) for r in records] == [
        ("conv1", "NCDHW", (1, 4, 8, 12, 16)), ("conv2", "NCDHW", (1, 8, 4, 6, 8)), ("conv3", "NCDHW", (1, 8, 2, 3, 4))]
    with pytest.raises(InputError, match="is no volume"):
        camanim.trace_layers(tiny_net3d(), "conv*")  # the default image is a photo


def test_a_batch_of_volumes_gives_one_result_each_as_alone():
    from conftest import tiny_net3d, tiny_volume

    model = tiny_net3d()
    a, b = tiny_volume(1), tiny_volume(2)
    both = camanim.animate(model, torch.cat([a, b]), layers="conv*", method="gradcam")
    assert len(both.results) == 2
    for res, x in zip(both.results, (a, b)):
        alone = camanim.animate(model, x, layers="conv*", method="gradcam")
        assert res.target.index == alone.target.index
        torch.testing.assert_close(res.cams, alone.cams, rtol=1e-5, atol=1e-6)
        assert res.montage == alone.montage and res.image.shape == alone.image.shape == (36, 48, 3)  # 8 slices of 12 x 16, 3 x 3


def test_progress_true_shows_tqdm_auto_bars_per_stage(tiny, tiny_input, capsys):
    result = camanim.animate(tiny, tiny_input, progress=True)
    err = capsys.readouterr().err
    n = len(result.layers)
    assert re.search(r"cams gradcam: +\d+%\|.*\| \d+/\d+ \[.*step/s", err), err  # bars close (leave=False)
    yb = camanim.ybroad(result, progress=True, trials=1, percentiles=(50,))
    err = capsys.readouterr().err
    assert re.search(r"ybROAD: +\d+%\|.*\| \d+/\d+ \[.*image", err), err
    assert result.road is yb and len(yb.layer_names) == n  # the score stays with the result
    camanim.animate(tiny, tiny_input, progress=False)
    assert capsys.readouterr().err == ""


def test_trace_layers_lists_what_a_distinct_run_animates():
    """(review) ``distinct`` selects after the pass: ``trace_layers`` (``camanim layers``) gives the same
    layers, numbered as the run numbers them, as ``animate`` keeps."""
    model = torchvision.models.resnet18(weights=None).eval()
    for spec in ("distinct,layer4*", "distinct"):
        listed = camanim.trace_layers(model, spec)
        run = camanim.animate(model, torch.rand(3, 64, 64), layers=spec, method="gradcam")
        assert [(r.index, r.name) for r in listed] == [(r.index, r.name) for r in run.layers]
        everything = camanim.trace_layers(model, spec.replace("distinct", "all").replace("all,", ""))
        assert len(listed) < len(everything)  # layers sharing a CAM were left out
        assert all(r.same_as is None for r in listed)


def test_the_layer_selection_is_kept_in_the_manifest_and_said_in_the_report(tmp_path):
    """(review) What --layers selected, how many layers the pass recorded and how many were left out (sharing
    another's CAM, or non-spatial) is in manifest.json's options and one line of the report."""
    model = torchvision.models.resnet18(weights=None).eval()
    result = camanim.animate(model, torch.rand(3, 64, 64), layers="distinct,layer4*", method="gradcam")
    recorded = len(camanim.trace_layers(model, "layer4*"))
    result.save(tmp_path / "run", video=False)
    options = json.loads((tmp_path / "run" / "manifest.json").read_text())["options"]
    assert options["layers"] == "distinct,layer4*"
    assert options["layers_recorded"] == recorded
    assert options["layers_left_out"] == {"same_cam": recorded - len(result.layers), "non_spatial": 0}
    page = html.unescape((tmp_path / "run" / "report.html").read_text())
    assert (f"{len(result.layers)} of {recorded} recorded; {recorded - len(result.layers)} sharing another "
            "layer's CAM left out") in page
    assert "layer4*" in page
    plain = camanim.animate(model, torch.rand(3, 64, 64), layers=["layer4.1.conv1", "fc"], method="gradcam",
                            skip_non_spatial=True)
    assert plain.options["layers"] == ["layer4.1.conv1", "fc"]
    assert plain.options["layers_left_out"] == {"same_cam": 0, "non_spatial": 1}


def test_score_metrics_with_road_alone_is_refused_in_one_line():
    """(review) ``score_metrics(r, metrics="road")`` scored nothing without a word: road is ybroad's."""
    from conftest import small_net

    result = camanim.animate(small_net(), torch.rand(1, 3, 24, 24), layers="all")
    with pytest.raises(InputError, match=r"names no metric beside ybROAD: road is scored by camanim\.ybroad"):
        camanim.score_metrics(result, metrics="road")
    assert result.metrics is None
