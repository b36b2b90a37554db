"""Smooth Grad-CAM++ over every layer: n noisy passes in all; equal to torchcam where both follow the paper."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from conftest import small_net
from torchcam.methods import SmoothGradCAMpp

from camanim import get_method
from camanim.compute.maps import layer_cams
from camanim.methods import MethodContext
from camanim.trace import run_trace


def image(seed: int = 1, size: int = 12) -> torch.Tensor:
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


def ours(model, x, samples, seed=5, layers="all"):
    method = get_method("smoothgradcam++")
    method.samples = samples
    tr = run_trace(model, x, layers, gradients=False)
    ctx = MethodContext(model=model, input_tensor=x, targets=tr.targets,
                        generator=torch.Generator().manual_seed(seed))
    return tr, layer_cams(tr, method, ctx), ctx


def torchcam_raw(model, x, layer, target, samples, seed=5):
    with SmoothGradCAMpp(model, layer, num_samples=samples, input_shape=tuple(x.shape[1:])) as extractor:
        model(x)
        torch.manual_seed(seed)
        return F.relu(extractor(class_idx=target, normalized=False)[0][0])


def by_hand(model, x, layer, target, samples, torchcam, seed=5):
    """The formula from autograd on the same noisy copies: the paper's (mean gradient, clean activations),
    or torchcam's (ReLU of the last copy's gradient, times the last noisy copy's activations)."""
    module = dict(model.named_modules())[layer]
    grads, acts, noisy_acts = [], [], []
    handle = module.register_forward_hook(lambda m, i, o: acts.append(o))
    model(x)
    clean = acts[0].detach()
    gen = torch.Generator().manual_seed(seed)
    for _ in range(samples):
        acts.clear()
        noisy = x + torch.normal(0.0, 0.3, x.shape, generator=gen)
        out = model(noisy)
        grads.append(torch.autograd.grad(out[0, target], acts[0])[0])
        noisy_acts.append(acts[0].detach())
    handle.remove()
    g = torch.stack(grads)
    d1, d2, d3 = g.mean(0), g.pow(2).mean(0), g.pow(3).mean(0)
    alpha = d2 / (2 * d2 + (d3 * clean).sum(dim=(2, 3), keepdim=True) + 1e-8)
    first, maps = (g[-1], noisy_acts[-1]) if torchcam else (d1, clean)
    w = (alpha * first.clamp(min=0)).sum(dim=(2, 3))
    return F.relu((w[:, :, None, None] * maps).sum(1))[0]


def test_every_layer_follows_the_paper_in_n_noisy_passes_and_torchcam_differs_as_documented():
    model, x = small_net(), image()
    tr, cams, ctx = ours(model, x, samples=3)
    assert ctx.forwards == 3  # n noisy passes for all the layers together, not n per layer
    target = int(tr.targets[0])
    checked = 0
    for i, rec in enumerate(tr.records):
        if rec.non_spatial or rec.same_as is not None:
            continue
        mine = cams[i][0]
        torch.testing.assert_close(mine, by_hand(model, x, rec.module, target, 3, torchcam=False),
                                   rtol=1e-4, atol=1e-6, msg=rec.name)
        ref = torchcam_raw(model, x, rec.module, target, samples=3)
        # torchcam: the same weights' alpha, ReLU of the last copy's gradient, last noisy copy's activations
        torch.testing.assert_close(ref, by_hand(model, x, rec.module, target, 3, torchcam=True),
                                   rtol=1e-4, atol=1e-6, msg=rec.name)
        assert not torch.allclose(mine, ref, rtol=1e-3, atol=1e-6), rec.name
        checked += 1
    assert checked == 8
