"""The CLI on what the trace cannot record or differentiate: one line on stderr, exit 2, nothing written.

TorchScript files (scripted, traced, frozen, without submodules; with and without
--trust-checkpoint) are refused as TorchScript, with no torch warning before the line and no advice
that leads back to the same file; a model whose forward autograd cannot differentiate is refused
with what to do, not a traceback.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

from camanim.cli import main


class Pooled(nn.Module):
    """No submodules: the whole forward is one function."""

    def forward(self, x):
        return x.mean((2, 3))


class OutWrite(nn.Module):
    """Writes a layer's output with ``out=``, which autograd refuses while it records."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        y = self.conv(x)
        torch.add(y, 1.0, out=y)
        return self.fc(y.mean((2, 3)))


def _small() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 4)).eval()


def _image(tmp_path: Path) -> Path:
    path = tmp_path / "x.png"
    Image.fromarray((np.random.default_rng(0).random((40, 40, 3)) * 255).astype(np.uint8)).save(path)
    return path


def _torchscript_file(kind: str, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's own deprecation notices
        if kind == "script":
            made = torch.jit.script(_small())
        elif kind == "trace":
            made = torch.jit.trace(_small(), torch.rand(1, 3, 32, 32))
        elif kind == "frozen":
            made = torch.jit.freeze(torch.jit.script(_small()))
        else:
            made = torch.jit.script(Pooled())
        made.save(str(path))
    return path


@pytest.mark.parametrize(("kind", "trust"), [("script", True), ("script", False), ("frozen", True),
                                             ("no_submodules", True), ("trace", False)])
def test_a_torchscript_file_is_refused_as_torchscript_in_one_line(kind, trust, tmp_path, capsys):
    # (case_torchscript_model.py) `--model scripted.pt --trust-checkpoint` ended in a 35-line traceback;
    # a frozen one said "matches no layer ... named like :", and without --trust-checkpoint the advice
    # was "--weights scripted.pt", which is refused again. torch's warnings came before the line.
    model = _torchscript_file(kind, tmp_path / "scripted.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning of torch's before the line fails the test
        code = main(["run", str(_image(tmp_path)), "--model", str(model), *(["--trust-checkpoint"] if trust else []),
                     "--no-video", "--out", str(tmp_path / "out")])
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 2
    assert len(lines) == 1, lines
    assert "TorchScript" in lines[0] and "state dict" in lines[0], lines[0]
    if kind in ("frozen", "no_submodules"):  # no parameters to read from it: the advice must not loop
        assert "--weights " + str(model) not in lines[0] and "--weights STATE_DICT.pt" in lines[0]
    else:
        assert "--weights " + str(model) in lines[0]
    assert not (tmp_path / "out").exists()


def test_the_weights_of_a_torchscript_file_load_into_its_architecture(tmp_path):
    # the refusal above says `--model ARCH --weights scripted.pt`: that must work, with its values
    from camanim.sources import load_model

    torch.manual_seed(1)
    made = torchvision.models.resnet18(weights=None, num_classes=7).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(made).save(str(tmp_path / "scripted.pt"))
    loaded = load_model("resnet18", weights=str(tmp_path / "scripted.pt"), num_classes=7)
    want = made.state_dict()
    got = loaded.module.state_dict()
    assert set(got) == set(want)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=0)


def test_a_trusted_pickled_model_loads_without_torch_warnings(tmp_path, capsys):
    torch.save(_small(), tmp_path / "whole.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        code = main(["layers", "--model", str(tmp_path / "whole.pt"), "--trust-checkpoint"])
    assert code == 0
    assert "Conv2d" in capsys.readouterr().out


def test_a_forward_autograd_cannot_differentiate_is_one_line_exit_2(tmp_path, capsys):
    torch.manual_seed(0)
    torch.save(OutWrite().eval(), tmp_path / "outwrite.pt")
    code = main(["run", str(_image(tmp_path)), "--model", str(tmp_path / "outwrite.pt"), "--trust-checkpoint",
                 "--no-video", "--out", str(tmp_path / "out")])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 2
    assert len(err) == 1 and "autograd" in err[0] and "scorecam" in err[0], err
    assert "--input-size" not in err[0]  # not a size problem
    assert not (tmp_path / "out").exists()
