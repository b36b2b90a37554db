"""16-bit and float grey image files end to end: windowed and resized as floats (no 8-bit step),
the window before the model's normalisation, the display image the windowed grey picture."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from camanim import InputError
from camanim.sources import Preprocess, prepare_input

PREP = Preprocess(resize=20, crop=(20, 20), mean=(0.5,), std=(0.25,), channels=1)


@pytest.fixture
def png16(tmp_path):
    values = (np.arange(400).reshape(20, 20) * 7 + 1000).astype(np.uint16)  # 1000..3793: 12-bit data
    Image.fromarray(values).save(tmp_path / "x16.png")
    return tmp_path / "x16.png", values.astype(np.float64)


def test_16bit_png_keeps_its_levels_over_the_full_range(png16):
    path, values = png16
    x, disp, info = prepare_input(str(path), PREP, None)
    grey = values / 65535.0
    # the model sees value / 65535 exactly, not a 256-level copy (that would be off by up to 1/510)
    torch.testing.assert_close(x[0, 0], torch.from_numpy((grey - 0.5) / 0.25).float(), atol=1e-5, rtol=0)
    assert len(np.unique(x.numpy())) == 400
    np.testing.assert_array_equal(disp[..., 1], np.round(grey * 255).astype(np.uint8))
    assert info["mode"] == "I;16" and info["window"]["source"] == "16-bit range"


def test_16bit_png_with_a_window(png16):
    path, values = png16
    x, disp, info = prepare_input(str(path), PREP, None, window="2000,1000")
    lo, hi = 2000 - 0.5 - 999 / 2, 2000 - 0.5 + 999 / 2
    want = np.where(values <= lo, 0, np.where(values > hi, 1, (values - 1999.5) / 999 + 0.5))
    torch.testing.assert_close(x[0, 0], torch.from_numpy((want - 0.5) / 0.25).float(), atol=1e-5, rtol=0)
    np.testing.assert_array_equal(disp[..., 0], np.round(want * 255).astype(np.uint8))
    assert info["window"] == {"centre": 2000.0, "width": 1000.0, "function": "LINEAR", "source": "--window"}


def test_float_tiff_is_shown_over_its_range(tmp_path):
    values = np.linspace(-3.0, 5.0, 400, dtype=np.float32).reshape(20, 20)
    Image.fromarray(values).save(tmp_path / "f.tif")
    x, _, info = prepare_input(str(tmp_path / "f.tif"), PREP, None)
    torch.testing.assert_close(x[0, 0], torch.from_numpy(((values + 3) / 8 - 0.5) / 0.25), atol=1e-5, rtol=0)
    assert info["window"]["source"] == "value range"


def test_window_on_an_8bit_file_is_refused(tmp_path):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "g.png")
    with pytest.raises(InputError, match="--window applies to DICOM images .* not to '.*g.png'"):
        prepare_input(str(tmp_path / "g.png"), PREP, None, window=(1, 2))
