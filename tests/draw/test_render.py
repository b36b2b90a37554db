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
    # frames handed over one at a time (a save streams them) make the very same file
    streamed = write_gif(tmp_path / "s.gif", (f for f in frames), fps=5)
    images = [Image.fromarray(f) for f in frames]  # how the frames were written when all were in memory
    images[0].save(tmp_path / "list.gif", save_all=True, append_images=images[1:], duration=200, loop=0,
                   optimize=False)
    assert streamed.read_bytes() == gif.read_bytes() == (tmp_path / "list.gif").read_bytes()
    with pytest.raises(StopIteration):
        write_gif(tmp_path / "e.gif", iter(()), fps=5)


@pytest.mark.parametrize("hw,width,panel,box", [
    ((32, 32), 64, (64, 64), (0, 0, 64, 64)),            # ordinary pictures fill the panel, as before
    ((300, 451), 320, (208, 320), (0, 0, 208, 320)),
    ((60, 1), 320, (1280, 320), (0, 149, 1280, 21)),     # a 60 x 1 signal: 4x as tall as wide at most, padded
    ((1, 60), 320, (16, 320), (5, 0, 5, 320)),          # a 1 x 60 one: 16 px tall at least, padded
    ((50000, 3), 4000, (4096, 4000), (0, 1999, 4096, 1)),  # at least 1 px wide
    ((10, 10), 9000, (4096, 4096), (0, 0, 4096, 4096)),  # the width is capped too
])
def test_panel_of_any_aspect_ratio_fits_every_encoder(hw, width, panel, box):
    from camanim.draw import panel_box

    assert panel_size(hw, width) == panel and panel_box(hw, width) == box
    ph, pw = panel
    assert ph % 16 == 0 and pw % 16 == 0 and ph <= 4096 and pw <= 4096 and ph <= 4 * pw


def test_thin_picture_is_drawn_at_its_aspect_with_the_padding_as_background():
    image = np.full((60, 1, 3), 100, np.uint8)
    normed = torch.zeros(2, 60, 1)
    normed[0, :30] = 1.0  # the top half hot in layer 0
    frames = render_frames(image, normed, _records(2), "local", FrameStyle(width=320, alpha=0.5))
    assert frames.shape == (2, 1280 + 48 + 16, 320, 3)
    lut = colormap_lut("jet").astype(float)
    left, w = 149, 21
    np.testing.assert_allclose(frames[0, 100, left + 10], (0.5 * 100 + 0.5 * lut[255]).round(), atol=1)
    np.testing.assert_allclose(frames[0, 1200, left + 10], (0.5 * 100 + 0.5 * lut[0]).round(), atol=1)
    for f in frames:  # both sides of the picture are background, on map and non-spatial frames alike
        assert (f[:1280, :left] == (24, 24, 28)).all() and (f[:1280, left + w:] == (24, 24, 28)).all()
    np.testing.assert_allclose(frames[1, 600, left + 10], [55, 55, 55], atol=1)  # the dimmed picture


@pytest.mark.parametrize("alpha", [0.5, 0.25, 0.4])
@pytest.mark.parametrize("hw,width", [((40, 56), 64), ((90, 7), 48)])  # a full panel, and a padded thin one
def test_opencv_blend_draws_the_tables_every_pixel(alpha, hw, width):
    """The panels drawn through OpenCV (where it reproduces the table) are the table's, pixel for pixel."""
    from camanim.draw import FrameRenderer

    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (*hw, 3), dtype=np.uint8)
    normed = torch.nn.functional.interpolate(torch.rand(4, 1, 5, 3, generator=torch.Generator().manual_seed(2)),
                                             size=hw, mode="bilinear", align_corners=False)[:, 0]
    normed[1] = 0.0
    normed[2] = 1.0
    fast = FrameRenderer(image, _records(4), FrameStyle(width=width, alpha=alpha))
    table = FrameRenderer(image, _records(4), FrameStyle(width=width, alpha=alpha))
    table.blend = False
    if not fast.blend:
        pytest.skip(f"OpenCV's addWeighted differs from the table at alpha {alpha} here: the table is used")
    a, b = fast.render(normed, "local"), table.render(normed, "local")
    assert np.array_equal(a, b)


@pytest.mark.parametrize("blend", [True, False])
@pytest.mark.parametrize("hw,width,n", [((40, 56), 64, 11), ((90, 7), 48, 3)])  # runs of 8 and a rest; padded
def test_panels_are_the_table_of_the_bilinear_maps(blend, hw, width, n):
    """Each panel is ``table[c, rint(255 * clamp(bilinear(map))) * 256 + image]``, the maps resized
    together, whether drawn through OpenCV or the look-up, a few maps at a time."""
    from camanim.draw import FrameRenderer

    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (*hw, 3), dtype=np.uint8)
    normed = torch.rand(n, 6, 4, generator=torch.Generator().manual_seed(4)) * 1.2 - 0.1  # clamped too
    r = FrameRenderer(image, _records(n + 1)[:n], FrameStyle(width=width, alpha=0.5))
    if blend and not r.blend:
        pytest.skip("OpenCV's addWeighted differs from the table here: the table is used")
    r.blend = blend
    top, left, bh, bw = r.box
    x = torch.nn.functional.interpolate(normed.unsqueeze(1), size=(bh, bw), mode="bilinear",
                                        align_corners=False)[:, 0].clamp(0, 1).numpy()
    level = np.rint(x * np.float32(255.0)).astype(np.int64)
    want = np.stack([r.table[c][level * 256 + r.base[c]] for c in range(3)], axis=-1)
    got = r.render(normed, "local")[:, top:top + bh, left:left + bw]
    assert np.array_equal(got, want)


def test_blend_is_refused_where_one_case_differs():
    from camanim.draw.render import blend_reproduces

    image = np.full((32, 32, 3), 100, np.uint8)
    from camanim.draw import FrameRenderer

    r = FrameRenderer(image, _records(2), FrameStyle(width=32, alpha=0.5))
    if not r.blend:
        pytest.skip("OpenCV's addWeighted differs from the table here")
    table = r.table.copy()
    table[2, 200 * 256 + 17] ^= 1  # one channel, one level, one image value
    assert not blend_reproduces(table, r.colours, 0.5, (r.box[2], r.box[3]))
    assert blend_reproduces(r.table, r.colours, 0.5, (16, 16))  # small pictures: the cases over several


def test_captions_count_from_one_name_method_and_class_and_keep_the_type_whole(drawn_text):
    drawn = drawn_text
    long_type = "DepthwiseSeparableConv"
    records = [LayerRecord(i, f"blocks.{i}.0.very_long_module_name.conv_dw", "m", long_type, (1, 16, 112, 112),
                           "NCHW", 10, 0.0) for i in range(2)]
    render_frames(np.zeros((32, 32, 3), np.uint8), torch.zeros(2, 8, 8), records, "global",
                  FrameStyle(width=320), title="gradcam · tabby")
    assert "1/2" in drawn and "2/2" in drawn
    assert drawn.count("gradcam · tabby") == 2  # the method and the class on every frame
    details = [t for t in drawn if t.startswith(long_type)]
    assert details and all(t.startswith(long_type) and "global" in t for t in details), drawn  # never "…Conv"
    names = [t for t in drawn if "conv_dw" in t]
    assert names and all(t.endswith("conv_dw") for t in names)  # a long name loses its start, not its end


def test_a_layer_the_method_does_not_apply_to_says_so_on_its_frame(drawn_text):
    """(review) ``--method cam`` on a layer that does not feed the classifier drew a uniform overlay captioned like
    any other frame: it read as "no evidence here". Its caption now says the method does not apply."""
    drawn = drawn_text
    records = [LayerRecord(i, f"layer{i}", "m", "Conv2d", (1, 8, 8, 8), "NCHW", 10, 0.0) for i in range(2)]
    records[0].flags["cam"] = "not applicable: CAM (Zhou et al. 2016) needs a layer whose channels feed the classifier"
    render_frames(np.zeros((32, 32, 3), np.uint8), torch.zeros(2, 8, 8), records, "local", FrameStyle(width=480),
                  title="cam · tabby")
    said = [t for t in drawn if "not applicable" in t]
    assert len(said) == 1 and "method not applicable here: no map" in said[0], drawn
    # (second review) at the default width the note went first to make room: it outlives the shape now
    for width in (320, 160):
        drawn.clear()
        records[0].shape = (1, 512, 2, 2)
        render_frames(np.zeros((32, 32, 3), np.uint8), torch.zeros(2, 8, 8), records, "global", FrameStyle(width=width),
                      title="cam · tabby")
        assert sum("not applicable" in t for t in drawn) == 1, (width, drawn)


def test_only_the_flagging_methods_frames_say_not_applicable(drawn_text):
    """The records are shared by the methods of one pass: CAM's flag must not caption Grad-CAM's frames."""
    drawn = drawn_text
    records = [LayerRecord(0, "layer0", "m", "Conv2d", (1, 8, 8, 8), "NCHW", 10, 0.0)]
    records[0].flags["cam"] = "not applicable: CAM needs a layer whose channels feed the classifier"
    render_frames(np.zeros((32, 32, 3), np.uint8), torch.zeros(1, 8, 8), records, "local", FrameStyle(width=480),
                  method="gradcam")
    assert not any("not applicable" in t for t in drawn), drawn
    render_frames(np.zeros((32, 32, 3), np.uint8), torch.zeros(1, 8, 8), records, "local", FrameStyle(width=480),
                  method="cam")
    assert any("method not applicable here: no map" in t for t in drawn), drawn




def test_a_very_large_panel_keeps_the_table_without_checking_opencv(monkeypatch: pytest.MonkeyPatch):
    import cv2

    from camanim.draw.render import blend_reproduces

    calls = []
    monkeypatch.setattr(cv2, "addWeighted", lambda *a, **k: calls.append(a[0].shape) or a[0])
    table = np.zeros((3, 65536), np.uint8)
    colours = np.zeros((256, 1, 3), np.uint8)
    blend_reproduces(table, colours, 0.5, (32, 48))
    assert calls == [(32, 48, 3)]  # a small panel is checked through OpenCV
    calls.clear()
    # checking 4096 x 4096 panels case by case took seconds and most of a GB: the table draws them
    assert blend_reproduces(table, colours, 0.5, (4096, 4096)) is False and calls == []
