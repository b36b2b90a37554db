"""CAMs computed during the backward (the engine's default for gradient methods) equal CAMs computed
after it from the kept activations and gradients, on every kind of layer and graph."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from camanim.compute import CamOptions
from camanim.compute.engine import compute_cams
from camanim.compute.maps import layer_cams, upsample
from camanim.methods import MethodContext, get_method
from camanim.trace import run_trace

IN_BACKWARD = ["gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "gradcamelementwise", "eigengradcam"]


def _after_backward(model: nn.Module, x: torch.Tensor, name: str, target: int) -> torch.Tensor:
    tr = run_trace(model, x, "all", targets=[target])
    assert all(g is None or isinstance(g, torch.Tensor) for g in tr.gradients)
    return upsample(layer_cams(tr, get_method(name), MethodContext()), tuple(x.shape[-2:]))


@pytest.mark.parametrize("arch", ["resnet18", "densenet121", "mobilenet_v3_small"])
def test_in_backward_equals_after_backward(arch):
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(weights=None).eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    methods = [get_method(n) for n in IN_BACKWARD]
    comp = compute_cams(model, x, methods, CamOptions(layers="all"), targets=[7])
    for name in IN_BACKWARD:
        ref = _after_backward(model, x, name, 7)
        assert comp.cams[name].shape == ref.shape
        assert comp.cams[name].abs().sum() > 0
        torch.testing.assert_close(comp.cams[name], ref, rtol=1e-4, atol=1e-5, msg=f"{arch} {name}")


class _OffThePath(nn.Module):
    """A layer fed by a parameter only (its node leads to no other layer), and one the logits never use."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.act = nn.ReLU(inplace=True)
        self.source = nn.Parameter(torch.randn(1, 2, 8, 8))
        self.from_param = nn.Conv2d(2, 4, 1)
        self.unused = nn.Conv2d(4, 4, 1)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        t = self.act(self.bn(self.conv(x))) + self.from_param(self.source)
        self.unused(t)
        return self.head(t.mean(dim=(2, 3)))


def test_in_backward_takes_layers_off_the_path_and_unused_ones():
    torch.manual_seed(0)
    model = _OffThePath().eval()
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    comp = compute_cams(model, x, [get_method("gradcam")], CamOptions(layers="all"), targets=[1])
    names = [r.name for r in comp.records]
    ref = _after_backward(model, x, "gradcam", 1)
    torch.testing.assert_close(comp.cams["gradcam"], ref)
    assert comp.cams["gradcam"][names.index("from_param")].abs().sum() > 0
    assert comp.cams["gradcam"][names.index("unused")].abs().sum() == 0  # no gradient reaches it


def test_in_backward_trace_keeps_only_what_the_sink_declines(tiny, tiny_input):
    got: dict[int, tuple] = {}

    class Sink:
        def start(self, logits, targets, total):
            got["start"] = (logits.shape, targets.tolist(), total)

        def layer(self, index, record, activation, gradient):
            got[index] = (record.name, activation.shape, gradient.shape)
            return record.name != "fc"

    tr = run_trace(tiny, tiny_input, "all", sink=Sink())
    names = [r.name for r in tr.records]
    own = [r.name for r in tr.records if r.same_as is None]  # "block" is "block.1"'s very output
    assert got["start"][2] == len(own) == len(names) - 1
    assert sorted(v[0] for k, v in got.items() if k != "start") == sorted(own)
    assert all(a is None for n, a in zip(names, tr.activations) if n != "fc")
    fc = names.index("fc")
    assert tr.activations[fc] is not None and tr.gradients[fc] is not None


def test_gradient_checks_read_the_accelerators_flags_per_device_in_layer_order():
    """The flags an accelerator's gradients leave (``pending``) are read per device, each layer its own."""
    from camanim.trace.backward import GradientChecks

    checks = GradientChecks({})
    checks.pending = {7: torch.tensor(False), 2: torch.tensor(True), 4: torch.tensor(False)}
    missing = checks.settle()
    assert sorted(missing) == [4, 7] and all("zero everywhere" in why for why in missing.values())
    assert checks.pending == {}
