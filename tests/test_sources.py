"""Models, images, labels and checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from camanim import InputError, load_image, load_model
from camanim.sources import Preprocess, read_labels, resolve_target


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
