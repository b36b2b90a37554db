"""SS-CAM and IS-CAM over every layer equal torchcam's for that layer alone (tiny seeded nets)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import small_net
from torchcam.methods import ISCAM, SSCAM

from camanim import get_method
from camanim.compute.maps import layer_cams
from camanim.methods import MethodContext
from camanim.methods.perturbation import noise_seed
from camanim.trace import run_trace


def image(seed: int = 1, size: int = 12) -> torch.Tensor:
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


def ours(model, x, name, layers="all", seed=0, batch_size=64, **attrs):
    method = get_method(name)
    for k, v in attrs.items():
        setattr(method, k, v)
    tr = run_trace(model, x, layers, gradients=False)
    ctx = MethodContext(model=model, input_tensor=x, targets=tr.targets, batch_size=batch_size,
                        generator=torch.Generator().manual_seed(seed))
    return tr, layer_cams(tr, method, ctx), ctx


def reference(cls, model, x, module, target, seed=None, **kw):
    """torchcam's raw map for one layer alone (ReLU, not normalised)."""
    with cls(model, module, input_shape=tuple(x.shape[1:]), **kw) as extractor:
        with torch.no_grad():
            model(x)
        if seed is not None:
            torch.manual_seed(seed)
        return F.relu(extractor(class_idx=target, normalized=False)[0][0])


@pytest.mark.parametrize(("name", "cls", "kw"), [("sscam", SSCAM, {"num_samples": 3, "std": 0.5}),
                                                 ("iscam", ISCAM, {"num_samples": 4})])
def test_equal_torchcam_on_every_layer(name, cls, kw):
    model, x = small_net(), image()
    attrs = {"samples": kw["num_samples"]} | ({"std": kw["std"]} if "std" in kw else {})
    tr, cams, ctx = ours(model, x, name, seed=7, batch_size=5, **attrs)
    target = int(tr.targets[0])
    checked = 0
    for i, rec in enumerate(tr.records):
        if rec.non_spatial or rec.same_as is not None:
            continue
        seed = noise_seed(ctx) if name == "sscam" else None
        ref = reference(cls, model, x, rec.module, target, seed=seed, batch_size=5, **kw)
        torch.testing.assert_close(cams[i][0], ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max() + 1e-6),
                                   msg=f"{name} {rec.name}")
        checked += 1
    assert checked == 8
    channels = sum(tr.records[i].shape[1] for i in range(len(tr.records))
                   if not tr.records[i].non_spatial and tr.records[i].same_as is None)
    shared = ctx.extra[f"{name}_shared_masks"]
    # BN channels with a positive gamma (4 of 6, 5 of 8) take their convolution's copies
    assert 4 + 5 <= shared < channels
    zero = int(name == "iscam" and constant_channels(tr) > 0)
    assert ctx.forward_rows == (channels - shared) * kw["num_samples"] + zero
    # every other copy of every channel and layer packed into shared batches of 5
    assert ctx.forwards == math.ceil((channels - shared) * kw["num_samples"] / 5) + zero


def constant_channels(tr) -> int:
    """Channels whose map is constant (max == min), over the spatial layers computed once."""
    n = 0
    for act, rec in zip(tr.activations, tr.records):
        if not rec.non_spatial and rec.same_as is None:
            flat = act[0].flatten(1)
            n += int((flat.amax(1) == flat.amin(1)).sum())
    return n


class PairNet(torch.nn.Module):
    """Two conv+BN pairs (BN gamma negative on channels 0 and 3) and a ReLU; conv1's channel 1 is zero
    everywhere, so it is constant in conv1, bn1 and relu1."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.BatchNorm2d(6)
        self.relu1 = torch.nn.ReLU()
        self.conv2, self.bn2 = torch.nn.Conv2d(6, 6, 3, padding=1), torch.nn.BatchNorm2d(6)
        self.fc = torch.nn.Linear(6, 4)
        with torch.no_grad():
            for bn in (self.bn1, self.bn2):
                bn.running_mean.uniform_(-0.5, 0.5)
                bn.running_var.uniform_(0.5, 2.0)
                bn.weight.uniform_(0.5, 1.5)
                bn.weight[::3] *= -1  # a negative gamma: its mask is 1 - the conv's, never shared
                bn.bias.uniform_(-0.3, 0.3)
            self.conv1.weight[1] = 0.0
            self.conv1.bias[1] = 0.0

    def forward(self, x):
        y = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.fc(y.mean(dim=(2, 3)))


@pytest.mark.parametrize(("name", "samples"), [("sscam", 3), ("iscam", 4)])
def test_shared_copies_give_the_maps_of_every_channel_run(name, samples):
    """Channels with an earlier channel's copies (BN after its conv; IS-CAM: constant channels) take its
    scores: fewer forwards, the maps of the run without sharing (``share_tolerance = None``), and each
    layer's map still equals torchcam's for that layer alone."""
    torch.manual_seed(0)
    model, x = PairNet().eval(), image(seed=2, size=10)
    tr, shared, ctx = ours(model, x, name, seed=3, batch_size=7, samples=samples)
    _, every, ctx_every = ours(model, x, name, seed=3, batch_size=7, samples=samples, share_tolerance=None)
    assert [r.name for r in tr.records if not r.non_spatial] == ["conv1", "bn1", "relu1", "conv2", "bn2"]
    assert constant_channels(tr) == 3
    channels = 5 * 6
    assert ctx_every.forward_rows == channels * samples and ctx_every.extra[f"{name}_shared_masks"] == 0
    n = ctx.extra[f"{name}_shared_masks"]
    if name == "sscam":
        # bn1, bn2: channels 1, 2, 4, 5 (positive gamma) have the conv's masks and, with as many channels,
        # its noise; relu1's constant channel 1 has the zero mask plus that same noise
        assert n == 4 + 4 + 1
        assert ctx.forward_rows == (channels - n) * samples
    else:
        # bn1: 2, 4, 5; bn2: 1, 2, 4, 5 take the conv's scores; the 3 constant channels share one zero image
        assert n == 3 + 4 + 3
        assert ctx.forward_rows == (channels - n) * samples + 1
    assert sum(m is not None for m in shared) == 5
    for a, b in zip(shared, every):
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6 * float(b.abs().max() + 1e-6))
    target = int(tr.targets[0])
    cls, kw = (SSCAM, {"std": 2.0}) if name == "sscam" else (ISCAM, {})
    for i, rec in enumerate(tr.records):
        if rec.non_spatial or rec.same_as is not None:
            continue
        ref = reference(cls, model, x, rec.module, target, seed=noise_seed(ctx) if name == "sscam" else None,
                        batch_size=7, num_samples=samples, **kw)
        torch.testing.assert_close(shared[i][0], ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max() + 1e-6),
                                   msg=f"{name} {rec.name}")


def test_sscam_noise_is_seeded_by_the_run_alone():
    model, x = small_net(), image()
    _, a, _ = ours(model, x, "sscam", layers="features.3,features.6", samples=2)
    _, b, _ = ours(model, x, "sscam", layers="features.6", samples=2)
    _, c, _ = ours(model, x, "sscam", layers="features.6", samples=2, seed=1)
    torch.testing.assert_close(a[1], b[0])  # a layer's map does not depend on the other layers chosen
    assert not torch.allclose(b[0], c[0])  # the run's seed changes the noise
    # a BN after its conv (features.3 -> features.4, as many channels) draws the same noise: its
    # positive-gamma channels take the conv's copies
    _, _, both = ours(model, x, "sscam", layers="features.3,features.4", samples=2)
    assert both.extra["sscam_shared_masks"] == 5 and both.forward_rows == (16 - 5) * 2


def test_iscam_coefficients_integrate_to_the_mean_of_partial_sums():
    method = get_method("iscam")
    method.samples = 4
    up = torch.ones(1, 2, 2)
    coeffs = [float(method.sample_masks(up, s, torch.Generator())[0, 0, 0]) for s in range(4)]
    assert coeffs == pytest.approx([0.25, 0.75, 1.5, 2.5])


@pytest.mark.parametrize("name", ["sscam", "iscam"])
def test_each_image_of_a_batch_has_the_maps_of_its_solo_run(name):
    """Every image draws its noise from the run's seed, as it would alone."""
    import camanim

    model = small_net()
    xs = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    both = camanim.animate(model, xs, method=name, layers="features.3,features.4")
    for k in range(2):
        alone = camanim.animate(model, xs[k:k + 1], method=name, layers="features.3,features.4")
        torch.testing.assert_close(both[k].cams, alone.cams, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(both[0].cams, both[1].cams)
