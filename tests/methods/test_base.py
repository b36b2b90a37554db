"""The eigen projection's sign: one rule, whatever LAPACK returns."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import oriented_2d_projection
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

import camanim.methods.base as base
from camanim.methods.base import first_component


def _acts(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 6, 5, 4, generator=g) + torch.linspace(0, 2, 20).reshape(1, 1, 5, 4)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_projection_agrees_with_the_channel_sum_whatever_sign_lapack_picks(seed, monkeypatch):
    acts = _acts(seed)
    plain = first_component(acts)
    svd = np.linalg.svd

    def flipped(a, **kw):
        u, s, vt = svd(a, **kw)
        return -u, s, -vt

    monkeypatch.setattr(base.np.linalg, "svd", flipped)
    flipped_result = first_component(acts)
    monkeypatch.undo()
    torch.testing.assert_close(flipped_result, plain)
    for i in range(acts.shape[0]):
        x = acts[i].reshape(6, -1)
        channel_sum = (x - x.mean(dim=1, keepdim=True)).sum(dim=0)
        assert float(plain[i].reshape(-1) @ channel_sum) > 0
    # the same quantity as pytorch-grad-cam's projection, up to the sign it leaves to LAPACK
    ref = get_2d_projection(acts.numpy())
    np.testing.assert_allclose(np.abs(plain.numpy()), np.abs(ref), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(plain.numpy(), oriented_2d_projection(acts.numpy()), rtol=1e-4, atol=1e-5)
