"""Models, images, labels and checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from camanim import InputError, load_image, load_model
from camanim.sources import Preprocess, detector_at, read_labels, resolve_target


def test_default_model_predicts_a_cat_on_the_default_image():
    m = load_model()
    img, info = load_image("sample:cat")
    x, display = m.preprocess(img)
    assert x.shape == (1, 3, 224, 224) and display.shape == (224, 224, 3)
    with torch.no_grad():
        p = m.module(x).softmax(1)[0]
    top = int(p.argmax())
    assert top in (281, 282, 285), (top, m.labels[top])
    assert float(p[[281, 282, 285]].sum()) > 0.8
    assert m.labels[285] == "Egyptian cat" and m.info["num_classes"] == 1000


@pytest.mark.parametrize("sample", ["sample:coffee", "sample:rocket", "sample:motorcycle", "sample:camera"])
def test_samples_load_as_rgb(sample):
    img, info = load_image(sample)
    assert img.mode == "RGB" and min(img.size) > 100 and info["source"] == sample


@pytest.mark.parametrize("fmt,mode", [("png", "L"), ("png", "RGBA"), ("jpeg", "RGB"), ("tiff", "RGB"),
                                      ("bmp", "RGB"), ("webp", "RGB"), ("png", "I;16")])
def test_image_files_of_every_kind(tmp_path, fmt, mode):
    arr = np.zeros((40, 60), np.uint16 if mode == "I;16" else np.uint8)
    arr[:, 30:] = 65535 if mode == "I;16" else 255
    if mode in ("L", "I;16"):
        img = Image.fromarray(arr)
    else:
        img = Image.fromarray(np.stack([arr] * 3, -1)).convert(mode)
    path = tmp_path / f"img.{fmt}"
    img.save(path)
    rgb, info = load_image(path)
    out = np.asarray(rgb)
    assert rgb.mode == "RGB" and rgb.size == (60, 40)
    assert out[:, :20].mean() < 5 and out[:, 40:].mean() > 250  # 16-bit full range kept


def _png_rgb16(path, arr: np.ndarray) -> None:
    """Write an (H, W, 3) uint16 array as a 48-bit PNG (Pillow cannot write one)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    h, w, _ = arr.shape
    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in arr)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


# Mid-range 16-bit values must scale by 255/65535 (not be clipped, truncated to the low byte, or
# stretched to the image's own min and max): the image holds neither 0 nor 65535.
GREY16 = np.array([[16384, 32768], [49152, 1000]], np.uint16)
GREY8 = np.array([[64, 128], [191, 4]])


@pytest.mark.parametrize("fmt", ["png", "tiff"])
def test_16_bit_grey_mid_values(tmp_path, fmt):
    path = tmp_path / f"grey16.{fmt}"
    Image.fromarray(np.kron(GREY16, np.ones((4, 4), np.uint16))).save(path)
    assert Image.open(path).mode.startswith("I;16")
    rgb, info = load_image(path)
    out = np.asarray(rgb).astype(int)[::4, ::4]
    assert rgb.mode == "RGB" and info["mode"].startswith("I;16")
    assert np.abs(out - GREY8[..., None]).max() <= 1, out[..., 0]


def test_16_bit_rgb_png_and_tiff_mid_values(tmp_path):
    arr = np.zeros((2, 2, 3), np.uint16)
    arr[0, 0] = (16384, 32768, 49152)
    arr[0, 1] = (32768, 16384, 1000)
    arr[1] = (65535, 0, 32768)
    want = np.array([[[64, 128, 191], [128, 64, 4]], [[255, 0, 128], [255, 0, 128]]])
    _png_rgb16(tmp_path / "rgb16.png", arr)
    paths = [tmp_path / "rgb16.png"]
    tifffile = pytest.importorskip("tifffile")
    tifffile.imwrite(tmp_path / "rgb16.tif", arr, photometric="rgb")
    paths.append(tmp_path / "rgb16.tif")
    for path in paths:
        rgb, _ = load_image(path)
        out = np.asarray(rgb).astype(int)
        assert np.abs(out - want).max() <= 1, (path.name, out)


def test_fully_transparent_rgba_is_white(tmp_path):
    arr = np.zeros((8, 10, 4), np.uint8)
    arr[..., :3] = (10, 200, 30)  # colour under alpha 0 must not show
    Image.fromarray(arr, mode="RGBA").save(tmp_path / "clear.png")
    rgb, info = load_image(tmp_path / "clear.png")
    assert info["mode"] == "RGBA" and rgb.mode == "RGB"
    assert np.asarray(rgb).min() == 255


def test_grey_webp(tmp_path):
    arr = np.tile(np.array([0, 100, 200], np.uint8), (6, 4))
    Image.fromarray(arr, mode="L").save(tmp_path / "grey.webp", lossless=True)
    rgb, _ = load_image(tmp_path / "grey.webp")
    out = np.asarray(rgb).astype(int)
    assert out.shape == (6, 12, 3)
    np.testing.assert_allclose(out, np.repeat(arr[..., None], 3, -1), atol=2)


def test_bad_images_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(InputError, match="not an image"):
        load_image(tmp_path / "notes.png")
    with pytest.raises(InputError, match="unknown sample"):
        load_image("sample:unicorn")
    with pytest.raises(InputError, match="folder"):
        load_image(tmp_path)


def test_preprocess_resize_crop_normalise():
    img = Image.fromarray(np.full((100, 200, 3), 255, np.uint8))
    x, disp = Preprocess(resize=50, crop=(40, 40), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))(img)
    assert x.shape == (1, 3, 40, 40) and disp.shape == (40, 40, 3)
    torch.testing.assert_close(x, torch.ones(1, 3, 40, 40))
    x1, _ = Preprocess(crop=(32, 32), resize=32, mean=(0.5,), std=(0.5,), channels=1)(img)
    assert x1.shape == (1, 1, 32, 32)


def test_crop_box_is_the_hand_computed_region_in_original_pixels():
    # sample:rocket is 640x427: shorter side 427 -> 256 gives 384x256; a 224 centre crop starts at
    # (384-224)/2 = 80, (256-224)/2 = 16; back in original pixels x *640/384, y *427/256.
    crop = Preprocess.imagenet().crop_box((640, 427))
    assert crop["resized"] == [384, 256] and crop["crop"] == [224, 224] and crop["resize"] == 256
    assert crop["box"] == [round(80 * 640 / 384, 2), round(16 * 427 / 256, 2), round(304 * 640 / 384, 2),
                           round(240 * 427 / 256, 2)] == [133.33, 26.69, 506.67, 400.31]
    assert crop["lost"] == [round(80 / 384, 4), 0.0625, round(80 / 384, 4), 0.0625]
    # A crop larger than the resized image pads: negative losses, a box past the edge.
    padded = Preprocess(resize=100, crop=(120, 120)).crop_box((100, 100))
    assert padded["box"] == [-10.0, -10.0, 110.0, 110.0] and padded["lost"] == [-0.1] * 4


def test_crop_box_is_where_the_model_input_comes_from():
    # A horizontal ramp: the model's input, resized back, must equal the original cut at the box.
    ramp = np.tile(np.linspace(0, 255, 300).astype(np.uint8)[None, :, None], (200, 1, 3))
    img = Image.fromarray(ramp)
    prep = Preprocess(resize=100, crop=(80, 80))
    x0, y0, x1, y1 = prep.crop_box(img.size)["box"]
    # 300x200 -> 150x100; the 80 crop starts at (35, 10) there, so at (70, 20) in the original
    assert [x0, y0, x1, y1] == [70.0, 20.0, 230.0, 180.0]
    _, disp = prep(img)
    inside = ramp[int(y0):int(y1), int(x0):int(x1), 0].astype(float)
    assert abs(disp[..., 0].mean() - inside.mean()) < 1.0
    assert abs(disp[:, 0, 0].mean() - ramp[0, int(x0):int(x0) + 2, 0].mean()) < 2.0
    assert abs(disp[:, -1, 0].mean() - ramp[0, int(x1) - 2:int(x1), 0].mean()) < 2.0


def test_unknown_model_suggests_names():
    with pytest.raises(InputError, match="did you mean: .*resnet50"):
        load_model("resnet5O")


def test_torchvision_and_timm_random_weights():
    m = load_model("resnet18", "none")
    assert m.preprocess.crop == (224, 224) and m.labels[0] == "tench" and m.info["weights"] == "none (random)"
    t = load_model("resnet10t", "none", num_classes=3)
    assert t.num_classes == 3 and t.labels is None


def test_checkpoint_round_trip_and_mismatch(tmp_path):
    torch.manual_seed(0)
    src = torchvision.models.resnet18(weights=None, num_classes=2)
    path = tmp_path / "ft.pt"
    torch.save({"state_dict": src.state_dict(), "epoch": 3}, path)
    labels = tmp_path / "labels.txt"
    labels.write_text("benign\nmalignant\n")
    m = load_model("resnet18", path, num_classes=2, labels=labels)
    torch.testing.assert_close(m.module.fc.weight, src.fc.weight)
    assert m.labels == ["benign", "malignant"]
    with pytest.raises(InputError, match=r"does not fit architecture 'resnet18': shape fc.weight \(2, 512\)"):
        load_model("resnet18", path, num_classes=3)
    with pytest.raises(InputError, match="not found"):
        load_model("resnet18", tmp_path / "nope.pt")


def test_labels_and_targets(tmp_path):
    f = tmp_path / "l.txt"
    f.write_text("a\nb\n")
    with pytest.raises(InputError, match="has 2 labels but the model has 3"):
        read_labels(f, 3)
    assert resolve_target("B", ["a", "b"], 2) == 1
    assert resolve_target("1", None, 2) == 1
    with pytest.raises(InputError, match="out of range"):
        resolve_target(5, None, 2)
    with pytest.raises(InputError, match="not a class label"):
        resolve_target("zebra", ["a", "b"], 2)


def test_a_label_name_that_names_several_classes_is_refused():
    """(review) A name matched the first label of its spelling in any case silently: torchvision's ImageNet
    labels have 'Cardigan' (264, the corgi) and 'cardigan' (474, the jacket). The exact spelling picks one;
    a spelling that matches both only case-insensitively, or a name twice in a list, is refused."""
    from camanim.sources import imagenet_labels

    labels = imagenet_labels()
    assert resolve_target("TABBY", labels, 1000) == resolve_target("tabby", labels, 1000) == 281
    assert (resolve_target("Cardigan", labels, 1000), resolve_target("cardigan", labels, 1000)) == (264, 474)
    with pytest.raises(InputError) as err:
        resolve_target("CARDIGAN", labels, 1000, what="label")
    assert str(err.value) == ("label 'CARDIGAN' names 2 classes of this model: 264 (Cardigan), 474 (cardigan): "
                              "give the class index")
    with pytest.raises(InputError, match="'crane' names 2 classes of this model: 0 \\(crane\\), 2 \\(crane\\)"):
        resolve_target("crane", ["crane", "heron", "crane"], 3)
    assert resolve_target("Cat", ["cat", "Cat"], 2) == 1
    with pytest.raises(InputError, match="'CAT' names 2 classes of this model: 0 \\(cat\\), 1 \\(Cat\\)"):
        resolve_target("CAT", ["cat", "Cat"], 2)


def test_developers_md_documents_the_lite0_renaming():
    """DEVELOPERS.md's tables are the renaming the code does."""
    import re
    from pathlib import Path

    from camanim.sources.models import lite0_key

    text = (Path(__file__).parents[2] / "DEVELOPERS.md").read_text()
    rows = [[c.strip(" `") for c in line.strip("|").split("|")] for line in text.splitlines()
            if re.match(r"\| `_\w+` \|", line)]
    top = {r[0]: r[1] for r in rows if len(r) == 2}
    blocks = {r[0]: (r[1], r[2]) for r in rows if len(r) == 3}
    assert len(top) == 5 and len(blocks) == 6
    stages = [(s, i) for s, n in enumerate((1, 2, 2, 3, 3, 4, 1)) for i in range(n)]
    expand = [n > 0 for n in range(len(stages))]
    for old, new in top.items():
        assert lite0_key(f"{old}.weight", stages, expand) == f"{new}.weight"
    for old, (with_expand, block0) in blocks.items():
        if with_expand != "—":
            assert lite0_key(f"_blocks.3.{old}.weight", stages, expand) == f"blocks.2.0.{with_expand}.weight"
        if block0 != "—":
            assert lite0_key(f"_blocks.0.{old}.weight", stages, expand) == f"blocks.0.0.{block0}.weight"
    assert "mean = std = 0.5" in text and "256" in text and "224" in text and "bicubic" in text
    assert "DEVELOPERS.md" in (Path(__file__).parents[2] / "README.md").read_text()


def test_torchvision_segmentation_and_detection_models_load_offline_with_random_weights(monkeypatch):
    """--weights none builds a segmentation or detection model with a random backbone too (nothing is
    downloaded: torchvision would fetch the ImageNet backbone by default); a detector gets [0, 1] RGB (it
    normalises its input itself)."""
    import torch.hub

    from camanim.sources import load_model

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", lambda *a, **k: pytest.fail("a download"))
    seg = load_model("lraspp_mobilenet_v3_large", "none")
    assert seg.info["weights"] == "none (random)" and seg.info["num_classes"] == 21
    assert tuple(seg.preprocess.mean) == (0.485, 0.456, 0.406)
    det = load_model("fasterrcnn_mobilenet_v3_large_320_fpn", "none")
    assert tuple(det.preprocess.mean) == (0.0, 0.0, 0.0) and tuple(det.preprocess.std) == (1.0, 1.0, 1.0)


def test_input_size_sets_a_torchvision_detectors_own_resize():
    """(#18 review) A detector resizes every image to its ``min_size`` (320 px here, 800 for most): an image
    given at --input-size 64 would be upscaled inside the model. --input-size is the size it takes."""
    plain = load_model("fasterrcnn_mobilenet_v3_large_320_fpn", "none")
    assert plain.module.transform.min_size == (320,)
    loaded = load_model("fasterrcnn_mobilenet_v3_large_320_fpn", "none", input_size=(64, 64))
    assert (loaded.module.transform.min_size, loaded.module.transform.max_size) == ((64,), 64)
    batch, _ = loaded.module.transform([torch.rand(3, 64, 64)])
    assert tuple(batch.image_sizes[0]) == (64, 64)
    assert not detector_at(torchvision.models.resnet18(), (64, 64))
