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
from camanim.methods.perturbation import layer_seed
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
        seed = layer_seed(ctx, rec.name) if name == "sscam" else None
        ref = reference(cls, model, x, rec.module, target, seed=seed, batch_size=5, **kw)
        torch.testing.assert_close(cams[i][0], ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max() + 1e-6),
                                   msg=f"{name} {rec.name}")
        checked += 1
    assert checked == 8
    channels = sum(tr.records[i].shape[1] for i in range(len(tr.records))
                   if not tr.records[i].non_spatial and tr.records[i].same_as is None)
    # every copy of every channel and layer packed into shared batches of 5
    assert ctx.forwards == math.ceil(channels * kw["num_samples"] / 5)


def test_sscam_noise_is_per_layer_and_seeded():
    model, x = small_net(), image()
    _, a, _ = ours(model, x, "sscam", layers="features.3,features.6", samples=2)
    _, b, _ = ours(model, x, "sscam", layers="features.6", samples=2)
    _, c, _ = ours(model, x, "sscam", layers="features.6", samples=2, seed=1)
    torch.testing.assert_close(a[1], b[0])  # a layer's map does not depend on the other layers chosen
    assert not torch.allclose(b[0], c[0])  # the run's seed changes the noise


def test_iscam_coefficients_integrate_to_the_mean_of_partial_sums():
    method = get_method("iscam")
    method.samples = 4
    up = torch.ones(1, 2, 2)
    coeffs = [float(method.sample_masks(up, s, torch.Generator())[0, 0, 0]) for s in range(4)]
    assert coeffs == pytest.approx([0.25, 0.75, 1.5, 2.5])
