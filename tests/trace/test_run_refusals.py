"""What a pass cannot record or differentiate is refused in one line, in Python as in the CLI;
a forward that writes into its own input is traced, with the caller's tensor left as it was."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import camanim
from camanim.errors import InputError


class Pooled(nn.Module):
    """No submodules: nothing to record."""

    def forward(self, x):
        return x.mean((2, 3))


class Written(nn.Module):
    """conv -> ``write`` -> conv2 -> pool -> fc."""

    def __init__(self, write) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)
        self.write = write

    def forward(self, x):
        y = self.conv(x)
        y = self.write(y) if self.write is not None else y
        return self.fc(F.silu(self.conv2(y)).mean((2, 3)))


def _out_write(y):
    torch.add(y, 1.0, out=y)  # autograd refuses out= on a tensor that needs a gradient
    return y


def _square_in_place(y):
    return y.mul_(y)  # its backward needs the y this overwrites


class WritesInput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x.mul_(2.0)  # normalisation done in place on the input (as some preprocessing wrappers do)
        return self.fc(F.relu(self.conv(x)).mean((2, 3)))


def _script(model: nn.Module, freeze: bool = False) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        made = torch.jit.script(model.eval())
        return torch.jit.freeze(made) if freeze else made


@pytest.mark.parametrize("kind", ["script", "trace", "frozen"])
def test_a_torchscript_model_is_refused_as_torchscript(kind):
    # a frozen script module has no submodules: it said "matches no layer ... named like :"
    torch.manual_seed(0)
    model = Written(None).eval()
    x = torch.rand(1, 3, 12, 12)
    made = torch.jit.trace(model, x) if kind == "trace" else _script(model, freeze=kind == "frozen")
    with pytest.raises(InputError, match="TorchScript.*pass the nn.Module it was made from"):
        camanim.animate(made, x)


def test_a_model_without_submodules_is_refused_with_why():
    with pytest.raises(InputError, match="no submodules") as info:
        camanim.animate(Pooled(), torch.rand(1, 3, 8, 8))
    assert "named like :" not in str(info.value)


@pytest.mark.parametrize(("write", "method_works"), [(_out_write, True), (_square_in_place, False)])
def test_a_forward_autograd_cannot_differentiate_is_refused_in_one_line(write, method_works):
    torch.manual_seed(0)
    model = Written(write).eval()
    x = torch.rand(1, 3, 12, 12)
    with pytest.raises(InputError, match="cannot be differentiated by autograd.*--method scorecam") as info:
        camanim.animate(model, x, layers="conv,conv2")
    assert "\n" not in str(info.value) and "--input-size" not in str(info.value)
    if method_works:  # the advice holds: without gradients the forward runs
        result = camanim.animate(model, x, layers="conv,conv2", method="scorecam")
        assert [r.name for r in result.layers] == ["conv", "conv2"]
        assert float(result.cams[0].max()) > 0


def test_a_forward_that_writes_into_its_input_is_traced_and_the_callers_tensor_is_kept():
    # the pass made the input a leaf that requires grad: x.mul_ in the forward raised
    # "a leaf Variable that requires grad is being used in an in-place operation"
    torch.manual_seed(0)
    model = WritesInput().eval()
    x = torch.rand(1, 3, 10, 10, generator=torch.Generator().manual_seed(2))
    kept = x.clone()
    result = camanim.animate(model, x, layers="conv")
    torch.testing.assert_close(x, kept, rtol=0, atol=0)
    # by hand: conv's output on 2x, and d logit / d output
    out = {}
    h = model.conv.register_forward_hook(lambda m, i, o: out.__setitem__("a", o))
    try:
        logits = model(kept.clone())
    finally:
        h.remove()
    target = int(logits.argmax())
    (grad,) = torch.autograd.grad(logits[0, target], out["a"])
    cam = F.relu((grad.mean((2, 3), keepdim=True) * out["a"]).sum(1, keepdim=True)).detach()
    assert result.target.index == target
    torch.testing.assert_close(result.cams[0], cam[0, 0], rtol=1e-4, atol=1e-6)
