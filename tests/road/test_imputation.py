"""ROAD's imputation: the block-diagonal systems built on the padded grid give, mask by mask, the values of
ROAD's linear system written out pixel by pixel and solved densely."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch

from camanim.road import imputation as imp
from camanim.road.imputation import NEIGHBOUR_WEIGHTS, linear_imputation


def _case(seed: int = 0, shape: tuple[int, int] = (13, 17), masks: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    img = torch.randn(3, *shape, generator=gen, dtype=torch.float64)
    # blobs and salt-and-pepper, from 10% to 90% removed, touching the borders
    smooth = torch.nn.functional.interpolate(torch.rand(1, masks, 3, 4, generator=gen), size=shape,
                                             mode="bilinear")[0]
    noisy = torch.rand(masks, *shape, generator=gen)
    fractions = torch.linspace(0.1, 0.9, masks)[:, None, None]
    levels = torch.stack([smooth[m].quantile(float(fractions[m])) for m in range(masks)])[:, None, None]
    return img, torch.cat([smooth < levels, noisy < fractions])


def _dense_reference(img: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """ROAD's system for one mask, one equation per removed pixel, written out with loops; solved densely."""
    c, h, w = img.shape
    unknown = {p: k for k, p in enumerate(zip(*np.nonzero(removed)))}
    a = np.zeros((len(unknown), len(unknown)))
    b = np.zeros((len(unknown), c))
    for (y, x), k in unknown.items():
        for dy, dx, weight in NEIGHBOUR_WEIGHTS:
            ny, nx = y + dy, x + dx
            if not (0 <= ny < h and 0 <= nx < w):
                continue
            a[k, k] += weight
            if (ny, nx) in unknown:
                a[k, unknown[(ny, nx)]] -= weight
            else:
                b[k] += weight * img[:, ny, nx]
    out = img.copy()
    solution = np.linalg.solve(a, b)
    for (y, x), k in unknown.items():
        out[:, y, x] = solution[k]
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_every_mask_is_its_own_dense_system_solved(seed: int) -> None:
    img, removed = _case(seed)
    got = linear_imputation(img, removed)
    assert got.shape == (len(removed), *img.shape)
    for m in range(len(removed)):
        want = _dense_reference(img.numpy(), removed[m].numpy())
        np.testing.assert_allclose(got[m].numpy(), want, rtol=0, atol=1e-10)
        kept = ~removed[m]
        assert torch.equal(got[m][:, kept], img[:, kept])  # kept pixels untouched


def test_building_a_group_of_small_masks_stays_near_the_size_of_its_unknowns():
    h = w = 224
    rng = np.random.default_rng(0)
    image = rng.standard_normal((3, h * w))
    k = int(h * w * 0.01)  # 1% of the pixels a mask
    m = 60_000 // k  # as many masks as ImputationStream puts in one group (group_unknowns=60,000)
    removed = np.zeros((m, h * w), bool)
    for j in range(m):
        removed[j, rng.choice(h * w, k, replace=False)] = True
    tracemalloc.start()
    try:
        imp._solve_group(image, removed, h, w)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # a group of many small masks (a low percentage) is built a few masks at a time: before, 504 MB
    # here (a review of issue 15), the tree before the padded-grid building 57 MB
    assert peak < 128 * 2**20, f"peak {peak / 2**20:.0f} MB"
