"""What ``animate`` is given, checked and converted before the pass: inference mode, the model's dtype,
tensor and array ranks, dtypes and values, decompression bombs."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import camanim
from camanim import InputError
from camanim.cli import main
from camanim.sources import for_model, load_image, model_dtype


def _net(dtype: torch.dtype = torch.float32, classes: int = 4) -> nn.Module:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                      nn.Conv2d(8, 8, 3, padding=1, stride=2), nn.ReLU(),
                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, classes)).eval()
    m[1].running_mean.uniform_(-0.2, 0.2)
    return m.to(dtype)


# -- inference mode -------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["gradcam", "eigencam", "scorecam", "shapleycam"])
def test_animate_inside_inference_mode_gives_the_plain_cams(method):
    model = _net()
    x = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    want = camanim.animate(model, x, method=method)
    with torch.inference_mode():
        got = camanim.animate(model, x, method=method)
        made_inside = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(0))  # an inference tensor
        from_inside = camanim.animate(model, made_inside, method=method)
        assert torch.is_inference_mode_enabled()  # the caller's mode is left as it was
    assert float(want.cams.amax()) > 0
    torch.testing.assert_close(got.cams, want.cams, rtol=0, atol=0)
    torch.testing.assert_close(from_inside.cams, want.cams, rtol=0, atol=0)
    assert got.target.index == want.target.index and got.target.score == want.target.score
    with torch.no_grad():  # no_grad as well
        torch.testing.assert_close(camanim.animate(model, x, method=method).cams, want.cams, rtol=0, atol=0)


def test_a_model_built_under_inference_mode_is_refused_in_one_line():
    with torch.inference_mode():
        model = _net()
    with pytest.raises(InputError, match="created under torch.inference_mode"):
        camanim.animate(model, torch.rand(1, 3, 16, 16))


# -- half precision -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_models_take_image_files_and_pil_images(tmp_path, dtype):
    rng = np.random.default_rng(0)
    arr = (rng.random((48, 48, 3)) * 255).astype(np.uint8)
    arr[10:24, 10:24] = 255
    Image.fromarray(arr).save(tmp_path / "x.png")
    prep = camanim.Preprocess(resize=48, crop=(48, 48))
    ref = camanim.animate(_net(), Image.fromarray(arr), preprocess=prep)
    for image in (Image.fromarray(arr), str(tmp_path / "x.png"), arr):
        got = camanim.animate(_net(dtype), image, preprocess=prep)
        assert got.input_tensor.dtype == dtype and got.cams.dtype == torch.float32
        assert torch.isfinite(got.cams).all() and got.target.index == ref.target.index
        scale = ref.cams.flatten(1).amax(1).clamp(min=1e-12)[:, None, None]
        assert float(((got.cams - ref.cams).abs() / scale).max()) < 0.05
        assert abs(got.target.score - ref.target.score) < 0.02


def test_for_model_casts_to_the_models_dtype_and_device():
    x = torch.rand(1, 3, 8, 8)
    assert for_model(x, _net(torch.float16), torch.device("cpu")).dtype == torch.float16
    assert for_model(x.double(), _net(), torch.device("cpu")).dtype == torch.float32
    assert model_dtype(nn.ReLU()) is None and for_model(x, nn.ReLU(), torch.device("cpu")).dtype == torch.float32
    with torch.inference_mode():
        inside = torch.rand(1, 3, 8, 8)
    assert not for_model(inside, _net(), torch.device("cpu")).is_inference()


# -- ranks, dtypes, values ------------------------------------------------------------------------


@pytest.mark.parametrize("tensor,words", [
    (torch.rand(8, 8), "shape (8, 8)"),
    (torch.rand(1, 1, 3, 8, 8), "shape (1, 1, 3, 8, 8)"),
    (torch.rand(3), "shape (3,)"),
    (torch.rand(1, 3, 0, 8), "shape (1, 3, 0, 8)"),
    (torch.randint(0, 255, (3, 8, 8), dtype=torch.uint8), "is uint8"),
    (torch.full((3, 8, 8), float("nan")), "NaN or infinite"),
])
def test_input_tensors_that_are_not_images_are_refused_in_one_line(tensor, words):
    with pytest.raises(InputError, match=words.replace("(", "\\(").replace(")", "\\)")) as err:
        camanim.animate(_net(), tensor)
    assert "\n" not in str(err.value)


def test_a_batch_tensor_is_split_into_images():
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    results = camanim.animate(_net(), x)
    assert len(results) == 2
    torch.testing.assert_close(results[1].cams, camanim.animate(_net(), x[1]).cams)


@pytest.mark.parametrize("array,words", [
    (np.zeros((3, 16, 16), np.uint8), "shape (3, 16, 16)"),
    (np.zeros((16, 16, 2), np.uint8), "shape (16, 16, 2)"),
    (np.zeros((2, 16, 16, 3), np.uint8), "shape (2, 16, 16, 3)"),
    (np.full((16, 16), np.nan), "finite"),
    (np.array([["a", "b"], ["c", "d"]]), "dtype <U1"),
])
def test_arrays_that_are_not_images_are_refused_in_one_line(array, words):
    with pytest.raises(InputError, match=words.replace("(", "\\(").replace(")", "\\)")):
        load_image(array)
    with pytest.raises(InputError):
        camanim.animate(_net(), array)


def test_grey_and_single_channel_arrays_load():
    assert load_image(np.zeros((10, 12), np.uint8))[0].size == (12, 10)
    assert load_image(np.zeros((10, 12, 1), np.float32))[0].mode == "RGB"


# -- decompression bombs --------------------------------------------------------------------------


def _png_claiming(path, width: int, height: int) -> None:
    """A small PNG file whose header claims ``width`` x ``height`` pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = zlib.compress(b"\x00" * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b""))


@pytest.mark.parametrize("side", [30000, 10000])  # 900 Mpx: Pillow's error; 100 Mpx: only its warning
def test_decompression_bombs_exit_2_with_one_line(tmp_path, capsys, side):
    _png_claiming(tmp_path / "bomb.png", side, side)
    with pytest.raises(InputError, match=f"claims {side * side:,} pixels"):
        load_image(tmp_path / "bomb.png")
    code = main(["run", str(tmp_path / "bomb.png"), "--model", "resnet18", "--weights", "none",
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "decompression bomb" in err[0], err
    assert not (tmp_path / "out").exists()


def test_prepared_image_provenance_carries_the_crop_box():
    from camanim.sources import Preprocess, prepare_input

    x, _, info = prepare_input("sample:rocket", Preprocess.imagenet(), None)
    assert x.shape == (1, 3, 224, 224)
    assert info["source"] == "sample:rocket" and info["original_size"] == [640, 427]
    assert info["crop"]["box"] == [133.33, 26.69, 506.67, 400.31]  # see test_sources: by hand from 256 / 224
    # A ready tensor has no crop to report.
    assert "crop" not in prepare_input(torch.zeros(3, 8, 8), None, None)[2]
