"""Volumes as a slice montage: which slices, where each lands, the grey picture under the maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from camanim.draw import Montage, montage_for, normalise


def test_montage_for_picks_evenly_spaced_slab_centres():
    m = montage_for(32)
    assert m.slices == tuple(range(1, 32, 2)) and (m.rows, m.cols) == (4, 4)  # floor((k + 0.5) * 2)
    assert montage_for(96).slices == tuple(3 + 6 * k for k in range(16))
    small = montage_for(5)
    assert small.slices == (0, 1, 2, 3, 4) and (small.rows, small.cols) == (2, 3)
    assert montage_for(1).slices == (0,) and (montage_for(1).rows, montage_for(1).cols) == (1, 1)
    assert montage_for(10, max_slices=3).slices == (1, 5, 8)
    with pytest.raises(ValueError):
        montage_for(0)


def test_planes_tile_slices_row_by_row_and_leave_empty_cells_zero():
    m = Montage(depth=5, slices=(0, 2, 4), rows=2, cols=2)
    vol = torch.arange(5 * 2 * 3, dtype=torch.float32).reshape(5, 2, 3) + 1  # voxel (d, h, w) = 6d + 3h + w + 1
    plane = m.planes(vol)
    assert plane.shape == (4, 6)
    torch.testing.assert_close(plane[0:2, 0:3], vol[0])
    torch.testing.assert_close(plane[0:2, 3:6], vol[2])
    torch.testing.assert_close(plane[2:4, 0:3], vol[4])
    assert float(plane[2:4, 3:6].abs().sum()) == 0.0
    # a stack of layers (L, D, H, W) tiles each layer alike
    stack = torch.stack([vol, 2 * vol])
    torch.testing.assert_close(m.planes(stack)[1], 2 * plane)
    with pytest.raises(ValueError, match="depth"):
        m.planes(torch.zeros(4, 2, 3))


def test_image_is_the_grey_montage_in_three_channels():
    m = montage_for(4)
    vol = np.arange(4 * 2 * 2, dtype=np.uint8).reshape(4, 2, 2) * 10
    img = m.image(vol)
    assert img.shape == (4, 4, 3) and img.dtype == np.uint8
    np.testing.assert_array_equal(img[..., 0], img[..., 2])
    np.testing.assert_array_equal(img[2:4, 0:2, 1], vol[2])


def test_volumes_normalise_locally_per_layer_and_globally_over_all():
    g = torch.Generator().manual_seed(0)
    cams = torch.rand(3, 4, 5, 6, generator=g) * torch.tensor([1.0, 10.0, 0.0]).view(3, 1, 1, 1)
    local, glob = normalise(cams, "local"), normalise(cams, "global")
    for i in (0, 1):
        c = cams[i]
        torch.testing.assert_close(local[i], (c - c.min()) / (c.max() - c.min()))
    assert float(local[2].abs().sum()) == 0.0  # a constant volume is zero, not NaN
    torch.testing.assert_close(glob, (cams - cams.min()) / (cams.max() - cams.min()))
    assert float(glob[0].max()) < 0.11  # the weak layer stays dim on the global scale
