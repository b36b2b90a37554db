"""The user's own model: fine-tuned checkpoints, pickled models, grey-scale inputs, tuple/dict/dataclass outputs."""

from __future__ import annotations

import json
from collections import OrderedDict, namedtuple
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torchvision
from conftest import TinyNet
from PIL import Image
from torch import nn

import camanim
from camanim import InputError
from camanim.cli import main
from camanim.sources import load_model

LABELS = ["benign", "malignant"]


def _fine_tune(model: nn.Module, channels: int = 3, steps: int = 5) -> list[float]:
    """Train only the new 2-class head for a few SGD steps on synthetic data; return the losses."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, channels, 64, 64, generator=g)
    y = torch.tensor([0, 1] * 4)
    x[y == 1, :, :, 32:] += 1.0  # class 1: bright right half
    for p in model.parameters():
        p.requires_grad_(False)
    for p in model.fc.parameters():
        p.requires_grad_(True)
    opt = torch.optim.SGD(model.fc.parameters(), lr=0.01)
    model.eval()  # batch-norm statistics of the random backbone stay as they are
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    """A resnet18 (random backbone) with a 2-class head fine-tuned for 5 steps, saved five ways."""
    folder = tmp_path_factory.mktemp("ft")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    model.fc = nn.Linear(512, 2)
    losses = _fine_tune(model)
    assert losses[-1] < losses[0]
    torch.save(model.state_dict(), folder / "ft.pt")
    torch.save({"epoch": 5, "state_dict": model.state_dict(), "optimizer": {}}, folder / "ft_full.pth")
    torch.save({"epoch": 5, "model": model.state_dict(), "optimizer": {}}, folder / "ft_model.pth")
    torch.save({"epoch": 5, "model_state_dict": model.state_dict()}, folder / "ft_model_state_dict.pth")
    torch.save(model, folder / "ft_pickled.pt")
    (folder / "labels.txt").write_text("\n".join(LABELS) + "\n")
    img = np.zeros((96, 96, 3), np.uint8)
    img[:, 48:] = 220
    Image.fromarray(img).save(folder / "scan.png")
    return folder, model


def _manifest(out) -> dict:
    return json.loads((out / "manifest.json").read_text())


def _expected(folder, model: nn.Module, preprocess) -> tuple[int, float]:
    x, _ = preprocess(Image.open(folder / "scan.png").convert("RGB"))
    with torch.no_grad():
        p = model.eval()(x).softmax(1)[0]
    return int(p.argmax()), float(p.max())


@pytest.mark.parametrize("ckpt", ["ft.pt", "ft_full.pth", "ft_model.pth", "ft_model_state_dict.pth"])
def test_cli_runs_the_fine_tuned_checkpoint_with_its_labels(finetuned, tmp_path, capsys, ckpt):
    folder, model = finetuned
    out = tmp_path / "out"
    code = main(["run", str(folder / "scan.png"), "--model", "resnet18", "--weights", str(folder / ckpt),
                 "--num-classes", "2", "--labels", str(folder / "labels.txt"), "--layers", "layer4*,fc",
                 "--no-video", "--frame-width", "32", "--quiet", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    m = _manifest(out)
    index, score = _expected(folder, model, load_model("resnet18", "none").preprocess)
    assert m["model"]["num_classes"] == 2 and m["model"]["weights"] == str(folder / ckpt)
    assert m["target"]["index"] == index and m["target"]["label"] == LABELS[index]
    assert m["target"]["score"] == pytest.approx(score, abs=1e-5)
    assert f"predicted/target class: {index} ({LABELS[index]})" in capsys.readouterr().out
    # the classifier is drawn as a stripe of its 2 units, not left blank
    assert m["layers"][-1]["name"] == "fc" and m["layers"][-1]["non_spatial"]


def test_checkpoint_that_does_not_fit_names_the_keys_and_shapes(finetuned, tmp_path, capsys):
    folder, _ = finetuned
    code = main(["run", str(folder / "scan.png"), "--model", "resnet18", "--weights", str(folder / "ft.pt"),
                 "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "does not fit architecture 'resnet18'" in err
    assert "fc.weight (2, 512) vs model (1000, 512)" in err and "--num-classes" in err
    assert not (tmp_path / "o").exists()


def test_pickled_model_only_with_trust(finetuned, tmp_path, capsys):
    folder, model = finetuned
    path = str(folder / "ft_pickled.pt")
    assert main(["run", str(folder / "scan.png"), "--model", path, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "--trust-checkpoint" in err and "--weights" in err
    # a state dict is not a model, even when trusted
    assert main(["layers", "--model", str(folder / "ft.pt"), "--trust-checkpoint"]) == 2
    assert "holds a OrderedDict, not a model" in capsys.readouterr().err
    out = tmp_path / "run"
    assert main(["run", str(folder / "scan.png"), "--model", path, "--trust-checkpoint", "--labels",
                 str(folder / "labels.txt"), "--layers", "layer4", "--no-video", "--frame-width", "32",
                 "--quiet", "--out", str(out)]) == 0
    m = _manifest(out)
    index, _ = _expected(folder, model, camanim.Preprocess.imagenet())
    assert m["model"]["architecture"] == "pickled:ResNet" and m["model"]["num_classes"] == 2
    assert m["target"]["label"] == LABELS[index]


def test_grey_scale_checkpoint_is_detected_from_its_first_conv(tmp_path, capsys):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    model.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    model.fc = nn.Linear(512, 2)
    _fine_tune(model, channels=1)
    torch.save(model.state_dict(), tmp_path / "grey.pt")
    Image.fromarray(np.tile(np.linspace(0, 255, 80, dtype=np.uint8), (80, 1)), mode="L").save(tmp_path / "xray.png")
    loaded = load_model("resnet18", tmp_path / "grey.pt", num_classes=2)
    assert loaded.info["channels"] == 1 and loaded.preprocess.channels == 1
    assert loaded.preprocess.mean == (0.449,) and loaded.preprocess.std == (0.226,)
    torch.testing.assert_close(loaded.module.conv1.weight, model.conv1.weight)
    out = tmp_path / "out"
    assert main(["run", str(tmp_path / "xray.png"), "--model", "resnet18", "--weights", str(tmp_path / "grey.pt"),
                 "--num-classes", "2", "--layers", "conv1,layer1", "--no-video", "--frame-width", "32", "--quiet",
                 "--out", str(out)]) == 0
    saved = np.load(out / "cams.npz")
    assert saved["input"].shape == (1, 1, 224, 224) and camanim.load_cams(out).shape == (2, 224, 224)
    assert _manifest(out)["model"]["channels"] == 1
    # --channels 1 on a named architecture with random weights
    assert load_model("resnet18", "none", channels=1).module.conv1.in_channels == 1
    assert main(["layers", "--model", "resnet18", "--channels", "1", "--layers", "conv1"]) == 0
    assert "1x64x112x112" in capsys.readouterr().out
    with pytest.raises(InputError, match="--channels 0"):
        load_model("resnet18", "none", channels=0)


@pytest.mark.parametrize("channels", [2, 4, 5])
def test_first_conv_with_other_channel_counts_takes_tensors_and_refuses_image_files(tmp_path, capsys, channels):
    """RGB+NIR (4), two-channel stacks (2), more bands: --channels takes any count; a tensor of that
    many channels is explained; an image file (1 or 3 channels) is refused in one line naming the
    count the model wants and --channels, never the model's own conv error."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=3)
    model.conv1 = nn.Conv2d(channels, 64, 7, 2, 3, bias=False)
    torch.save(model.state_dict(), tmp_path / "bands.pt")
    loaded = load_model("resnet18", tmp_path / "bands.pt", num_classes=3)
    assert loaded.info["channels"] == channels and loaded.module.conv1.in_channels == channels
    torch.testing.assert_close(loaded.module.conv1.weight, model.conv1.weight)
    assert load_model("resnet18", "none", channels=channels).module.conv1.in_channels == channels
    x = torch.randn(1, channels, 64, 64, generator=torch.Generator().manual_seed(1))
    result = camanim.animate(loaded, x, layers="layer4")
    assert result.input_tensor.shape == (1, channels, 64, 64) and torch.isfinite(result.cams).all()
    with torch.no_grad():
        assert result.target.index == int(model.eval()(x).argmax())
    # an RGBA file (4 bands) is composited to RGB like every image: refused, not guessed as a band
    rgba = (np.random.default_rng(0).random((60, 70, 4)) * 255).astype(np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgbn.png")
    for model_arg in (loaded, loaded.module):
        with pytest.raises(InputError, match=f"takes {channels}-channel input.*--channels"):
            camanim.animate(model_arg, str(tmp_path / "rgbn.png"), layers="layer4")
    code = main(["run", str(tmp_path / "rgbn.png"), "--model", "resnet18", "--weights", str(tmp_path / "bands.pt"),
                 "--num-classes", "3", "--layers", "layer4", "--no-video", "--quiet", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and f"{channels}-channel" in err[0] and "--channels" in err[0]
    assert not (tmp_path / "o").exists()


def test_grey_module_gets_a_grey_default_preprocess():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    result = camanim.animate(model.eval(), "sample:camera")
    assert result.input_tensor.shape == (1, 1, 224, 224)
    assert [r.layout for r in result.layers] == ["NCHW", "NCHW", "non_spatial", "non_spatial", "non_spatial"]


# -- models whose forward returns a tuple, a dict or a dataclass ----------------------------------


@dataclass
class Output:
    aux: torch.Tensor
    scores: torch.Tensor


class HFOutput(OrderedDict):
    """Like transformers' ModelOutput: a dict whose keys are also attributes."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError as exc:
            raise AttributeError(key) from exc


Pair = namedtuple("Pair", ["aux", "logits"])


class Wrapped(nn.Module):
    """TinyNet whose forward packs its logits into another container."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.net = TinyNet()

    def forward(self, x):
        logits = self.net(x)
        aux = logits.detach() * 0
        return {
            "tuple": lambda: (aux, logits),
            "dict": lambda: {"aux": aux, "scores": logits},
            "dataclass": lambda: Output(aux, logits),
            "hf": lambda: HFOutput(aux=aux, logits=logits),
            "namedtuple": lambda: Pair(aux, logits),
        }[self.kind]()


@pytest.mark.parametrize("kind,key", [("tuple", "1"), ("dict", "scores"), ("dataclass", "scores"),
                                      ("hf", None), ("namedtuple", None), ("namedtuple", "logits")])
def test_output_key_picks_the_logits(tiny_input, kind, key):
    torch.manual_seed(0)
    model = Wrapped(kind).eval()
    result = camanim.animate(model, tiny_input, output_key=key, layers="net.*")
    with torch.no_grad():
        expected = model.net(tiny_input)
    assert result.target.index == int(expected.argmax())
    assert result.target.score == pytest.approx(float(expected.softmax(1).max()), abs=1e-6)
    assert result.cams.shape[0] == 8 and float(result.cams.max()) > 0


@pytest.mark.parametrize("kind,key,needle", [
    ("tuple", None, "returns a tuple of 2 items: pick the logits with --output-key N"),
    ("dict", None, "returns a dict with fields aux, scores, not logits"),
    ("dataclass", None, "returns a Output with fields aux, scores, not logits"),
    ("dict", "nope", "--output-key 'nope' is not in the model's output"),
    ("tuple", "5", "--output-key '5' is not in the model's output"),
])
def test_output_key_errors_are_clear(tiny_input, kind, key, needle):
    with pytest.raises(InputError) as info:
        camanim.animate(Wrapped(kind).eval(), tiny_input, output_key=key, layers="net.*")
    assert needle in str(info.value)


def test_cli_passes_output_key(tmp_path, capsys):
    torch.manual_seed(0)
    torch.save(Wrapped("dict").eval(), tmp_path / "wrapped.pt")
    base = ["run", "sample:cat", "--model", str(tmp_path / "wrapped.pt"), "--trust-checkpoint", "--no-video",
            "--frame-width", "32", "--quiet"]
    assert main([*base, "--out", str(tmp_path / "a")]) == 2
    assert "pick them with --output-key KEY" in capsys.readouterr().err
    assert main([*base, "--output-key", "scores", "--out", str(tmp_path / "b")]) == 0
    m = _manifest(tmp_path / "b")
    assert m["model"]["num_classes"] == 4 and len(m["layers"]) == 9


# -- checkpoints as training scripts save them --------------------------------------------------------


def _training_checkpoints(state: dict) -> dict[str, tuple[object, str]]:
    """What training scripts save, with the part camanim should say it used."""
    opt = {"state": {0: {"momentum_buffer": torch.zeros(3)}}, "param_groups": [{"lr": 0.1, "params": [0]}]}
    return {
        "lightning": ({"epoch": 7, "global_step": 70, "pytorch-lightning_version": "2.4.0",
                       "state_dict": {f"model.{k}": v for k, v in state.items()},
                       "optimizer_states": [opt], "lr_schedulers": []}, "key 'state_dict', prefix 'model.' removed"),
        # two that fit: the first in the file is used, and named
        "timm_ema": ({"epoch": 3, "arch": "resnet18", "state_dict": {f"module.{k}": v for k, v in state.items()},
                      "state_dict_ema": {k: v * 0 for k, v in state.items()}, "optimizer": opt},
                     "key 'state_dict', prefix 'module.' removed"),
        "ema_only": ({"epoch": 3, "model_ema": state, "optimizer": opt}, "key 'model_ema'"),
        "compiled_ddp": ({f"module._orig_mod.{k}": v for k, v in state.items()},
                         "prefix 'module._orig_mod.' removed"),
        "nested": ({"checkpoint": {"net": {"weights": state}}, "meta": {"note": "best"}},
                   "key 'checkpoint.net.weights'"),
        "plain": (state, ""),
    }


def test_training_script_checkpoints_find_the_state_dict_that_fits_and_say_where(tmp_path, capsys):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=2).eval()
    state = model.state_dict()
    img = np.zeros((64, 64, 3), np.uint8)
    img[:, 32:] = 200
    Image.fromarray(img).save(tmp_path / "scan.png")
    for name, (obj, where) in _training_checkpoints(state).items():
        torch.save(obj, tmp_path / f"{name}.ckpt")
        loaded = load_model("resnet18", tmp_path / f"{name}.ckpt", num_classes=2)
        for k, v in loaded.module.state_dict().items():
            assert torch.equal(v, state[k]), (name, k)
        assert loaded.info.get("weights_in_file", "") == where, name
        assert loaded.info["weights"] == str(tmp_path / f"{name}.ckpt")
    out = tmp_path / "out"
    assert main(["run", str(tmp_path / "scan.png"), "--model", "resnet18", "--weights", str(tmp_path / "lightning.ckpt"),
                 "--num-classes", "2", "--layers", "layer4", "--no-video", "--quiet", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert f"weights: {tmp_path / 'lightning.ckpt'} (key 'state_dict', prefix 'model.' removed)" in stdout
    assert _manifest(out)["model"]["weights_in_file"] == "key 'state_dict', prefix 'model.' removed"


def test_checkpoint_without_a_fitting_state_dict_lists_its_keys(tmp_path, capsys):
    torch.save({"epoch": 3, "optimizer": {"lr": 0.1}, "encoder": {"w": torch.zeros(2)}}, tmp_path / "other.ckpt")
    with pytest.raises(InputError, match="holds no state dict of 'resnet18' \\(it has keys epoch, optimizer, encoder\\)"):
        load_model("resnet18", tmp_path / "other.ckpt")
    torch.save([torch.zeros(2)], tmp_path / "list.pt")
    with pytest.raises(InputError, match="holds no state dict of 'resnet18' \\(it has a list\\)"):
        load_model("resnet18", tmp_path / "list.pt")
    # a dict of the right kind whose keys do not all fit: the mismatch is named, not "no state dict"
    torch.manual_seed(0)
    state = torchvision.models.resnet18(weights=None).state_dict()
    torch.save({"state_dict": {f"model.{k}": v for k, v in state.items() if not k.startswith("fc.")}},
               tmp_path / "headless.ckpt")
    code = main(["layers", "--model", "resnet18", "--weights", str(tmp_path / "headless.ckpt")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "does not fit architecture 'resnet18'" in err[0]
    assert "missing fc.weight, fc.bias" in err[0]
