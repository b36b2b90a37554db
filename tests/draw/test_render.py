"""Normalisation values, NaN safety, frames and videos."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from camanim.draw import FrameStyle, colormap_lut, panel_size, render_frames
from camanim.draw.normalise import normalise
from camanim.draw.video import count_frames, probe, write_gif, write_mp4
from camanim.trace import LayerRecord


def _cams():
    c = torch.zeros(3, 4, 4)
    c[0, 0, 0] = 2.0
    c[0, 1, 1] = 1.0
    c[1] = 10.0
    c[1, 2, 2] = 20.0
    return c  # layer 2 is constant zero


def test_local_normalisation_scales_each_layer():
    n = normalise(_cams(), "local")
    assert n[0, 0, 0] == 1 and n[0, 1, 1] == 0.5 and n[0, 3, 3] == 0
    assert n[1, 2, 2] == 1 and n[1, 0, 0] == 0
    assert torch.equal(n[2], torch.zeros(4, 4))


def test_global_normalisation_uses_one_scale():
    n = normalise(_cams(), "global")
    assert n[1, 2, 2] == 1
    assert n[0, 0, 0] == pytest.approx(0.1) and n[1, 0, 0] == pytest.approx(0.5)
    assert torch.isfinite(n).all()


def test_constant_maps_never_give_nan():
    for kind in ("local", "global"):
        assert torch.equal(normalise(torch.zeros(2, 3, 3), kind), torch.zeros(2, 3, 3))
        assert torch.equal(normalise(torch.full((1, 3, 3), 5.0), kind), torch.zeros(1, 3, 3))
    with pytest.raises(ValueError, match="normalisation"):
        normalise(torch.zeros(1, 2, 2), "loud")


def _records(n):
    return [LayerRecord(i, f"layer{i}", f"layer{i}", "Conv2d", (1, 2, 4, 4),
                        "NCHW" if i < n - 1 else "non_spatial", 10, 0.0) for i in range(n)]


def test_frames_overlay_colormap_where_the_map_is():
    image = np.full((32, 32, 3), 100, np.uint8)
    normed = torch.zeros(3, 32, 32)
    normed[0, :16, :16] = 1.0  # hot top-left in layer 0
    frames = render_frames(image, normed, _records(3), "local", FrameStyle(width=64, alpha=0.5))
    ph, pw = panel_size((32, 32), 64)
    assert frames.shape == (3, ph + 48 + 16, pw, 3)
    lut = colormap_lut("jet").astype(float)
    hot = 0.5 * 100 + 0.5 * lut[255]
    cold = 0.5 * 100 + 0.5 * lut[0]
    np.testing.assert_allclose(frames[0, 5, 5], hot.round(), atol=1)
    np.testing.assert_allclose(frames[0, 60, 60], cold.round(), atol=1)
    # the non-spatial layer shows the dimmed image, no colour map
    np.testing.assert_allclose(frames[2, 5, 5], [55, 55, 55], atol=1)
    assert not np.array_equal(frames[0, ph:], frames[1, ph:]), "captions/strips differ per layer"


def test_mp4_is_h264_yuv420p_with_one_frame_per_layer(tmp_path):
    frames = np.random.default_rng(0).integers(0, 255, (7, 48, 64, 3), dtype=np.uint8)
    path = write_mp4(tmp_path / "v.mp4", frames, fps=5)
    info = probe(path)
    assert info["codec"] == "h264" and info["pix_fmt"] == "yuv420p"
    assert count_frames(path) == 7
    gif = write_gif(tmp_path / "v.gif", frames, fps=5)
    from PIL import Image

    with Image.open(gif) as im:
        assert im.n_frames == 7
