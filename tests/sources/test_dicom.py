"""DICOM through pydicom: Hounsfield units, windows, MONOCHROME1, frames, compressed files, series,
and the model input and display image made from them."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import torch
from conftest import write_dicom
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut, apply_windowing, get_decoder
from torch import nn

import camanim
from camanim import InputError
from camanim.sources import Preprocess
from camanim.sources.dicom import apply_window, parse_window, read_dicom, read_dicom_series

CT = get_testdata_file("CT_small.dcm")


def _linear(x, c, w):
    """DICOM's LINEAR window (PS3.3 C.11.2.1.2.1) into [0, 1], written out for the test."""
    x = np.asarray(x, dtype=np.float64)
    lo, hi = c - 0.5 - (w - 1) / 2, c - 0.5 + (w - 1) / 2
    return np.where(x <= lo, 0.0, np.where(x > hi, 1.0, (x - (c - 0.5)) / (w - 1) + 0.5))


# -- sample:ct: Hounsfield units and window ---------------------------------------------------------


def test_sample_ct_is_pydicoms_ct_small_in_hounsfield_units():
    ds = pydicom.dcmread(CT)
    img = read_dicom("sample:ct")
    hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert float(ds.RescaleIntercept) == -1024.0 and float(ds.RescaleSlope) == 1.0
    np.testing.assert_array_equal(img.values, hu.astype(np.float32))
    np.testing.assert_array_equal(img.values, apply_modality_lut(ds.pixel_array, ds).astype(np.float32))
    assert img.values.shape == (128, 128)
    assert (img.values.min(), img.values.max()) == (-896.0, 1167.0)
    info = img.info
    assert info["source"] == "sample:ct" and info["modality"] == "CT" and info["format"] == "DICOM"
    assert info["rescale"] == {"slope": 1.0, "intercept": -1024.0, "unit": "HU", "lut": False}
    assert info["pixel_spacing_mm"] == [0.661468, 0.661468]
    assert info["value_range"] == [-896.0, 1167.0] and info["original_size"] == [128, 128]


def test_sample_ct_without_a_window_is_shown_over_its_value_range():
    img = read_dicom("sample:ct")  # CT_small.dcm carries no WindowCenter/WindowWidth
    assert img.info["window"] == {"centre": 135.5, "width": 2063.0, "function": "LINEAR_EXACT",
                                  "source": "value range"}
    np.testing.assert_allclose(img.grey, (img.values + 896.0) / 2063.0, atol=1e-6)
    assert img.grey.min() == 0.0 and img.grey.max() == 1.0


def test_window_override_matches_pydicoms_windowing():
    ds = pydicom.dcmread(CT)
    img = read_dicom("sample:ct", window="40,400")
    assert img.info["window"] == {"centre": 40.0, "width": 400.0, "function": "LINEAR", "source": "--window"}
    ds.WindowCenter, ds.WindowWidth = 40, 400
    ref = apply_windowing(apply_modality_lut(ds.pixel_array, ds), ds)
    # pydicom maps into the stored range of a signed 16-bit image through the rescale
    y_min, y_max = -(2 ** 15) - 1024.0, 2 ** 15 - 1 - 1024.0
    np.testing.assert_allclose(img.grey, (ref - y_min) / (y_max - y_min), atol=1e-6)
    np.testing.assert_allclose(img.grey, _linear(img.values, 40, 400), atol=1e-6)
    assert 0.0 < img.grey.mean() < 1.0 and (img.grey == 0).any() and (img.grey == 1).any()


def test_the_files_own_window_and_its_sigmoid_function(tmp_path):
    px = np.arange(-100, 100, dtype=np.int16).reshape(10, 20) * 10
    path = write_dicom(tmp_path / "w.dcm", px, RescaleSlope=1, RescaleIntercept=0, WindowCenter=[50, 300],
                       WindowWidth=[200, 1500])
    img = read_dicom(path)
    assert img.info["window"] == {"centre": 50.0, "width": 200.0, "function": "LINEAR", "source": "file"}
    np.testing.assert_allclose(img.grey, _linear(px, 50, 200), atol=1e-6)
    path = write_dicom(tmp_path / "s.dcm", px, WindowCenter=0, WindowWidth=500, VOILUTFunction="SIGMOID")
    img = read_dicom(path)
    np.testing.assert_allclose(img.grey, 1 / (1 + np.exp(-4 * px / 500.0)), atol=1e-6)


def test_monochrome1_is_inverted(tmp_path):
    px = np.arange(0, 400, dtype=np.uint16).reshape(20, 20)
    path = write_dicom(tmp_path / "m1.dcm", px, PhotometricInterpretation="MONOCHROME1", Modality="CR",
                       WindowCenter=200, WindowWidth=300)
    img = read_dicom(path)
    np.testing.assert_allclose(img.grey, 1.0 - _linear(px, 200, 300), atol=1e-6)
    assert img.grey[0, 0] == 1.0 and img.grey[-1, -1] == 0.0  # the lowest value is white
    np.testing.assert_array_equal(img.values, px.astype(np.float32))  # values are not inverted
    assert img.info["inverted"] is True and img.info["photometric"] == "MONOCHROME1"
    # the display image and the model input are the inverted picture too
    prep = Preprocess(resize=20, crop=(20, 20), mean=(0.5,), std=(0.25,), channels=1)
    x, disp, _ = camanim.sources.prepare_input(str(path), prep, None)
    np.testing.assert_array_equal(disp[..., 0], np.round(img.grey * 255).astype(np.uint8))
    torch.testing.assert_close(x[0, 0], torch.from_numpy((img.grey - 0.5) / 0.25), atol=1e-5, rtol=0)


def test_multi_frame_file_gives_the_asked_frame(tmp_path):
    px = (np.arange(3)[:, None, None] * 100 + np.arange(64).reshape(8, 8)).astype(np.int16)
    path = write_dicom(tmp_path / "mf.dcm", px, RescaleSlope=2, RescaleIntercept=-50)
    for k in range(3):
        img = read_dicom(path, frame=k)
        np.testing.assert_array_equal(img.values, px[k] * 2.0 - 50)
        assert (img.info["frame"], img.info["frames"]) == (k, 3)
    assert read_dicom(path).info["frame"] == 0
    with pytest.raises(InputError, match=r"--frame 3 is out of range: .* has 3 frame\(s\), 0\.\.2"):
        read_dicom(path, frame=3)


# -- 1 channel, 16 bit: windowing before the model's normalisation -----------------------------------


class _GreyNet(nn.Module):
    def __init__(self, classes: int = 3):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, classes)

    def forward(self, x):
        return self.fc(self.pool(self.act(self.conv(x))).flatten(1))


@pytest.mark.parametrize("channels", [1, 3])
def test_windowed_ct_is_the_model_input_and_the_display_image(channels):
    """16-bit HU -> window -> float resize/crop -> (x - mean) / std; the frames show the windowed grey."""
    grey = read_dicom("sample:ct", window=(40, 400)).grey
    prep = Preprocess(resize=128, crop=(128, 128), mean=(0.5, 0.4, 0.3)[:channels], std=(0.25, 0.2, 0.1)[:channels],
                      channels=channels)
    model = _GreyNet()
    if channels == 3:
        model.conv = nn.Conv2d(3, 4, 3, padding=1)
    res = camanim.animate(model, "sample:ct", preprocess=prep, window=(40, 400), layers="conv")
    x = res.input_tensor[0]
    for c in range(channels):
        torch.testing.assert_close(x[c], torch.from_numpy((grey - prep.mean[c]) / prep.std[c]), atol=1e-5, rtol=0)
    np.testing.assert_array_equal(res.image, np.repeat(np.round(grey * 255).astype(np.uint8)[..., None], 3, 2))
    assert res.image_info["window"]["centre"] == 40.0
    assert res.image_info["input_pixel_spacing_mm"] == [0.661468, 0.661468]  # 128 px kept at 128 px
    # more levels than 8 bits inside the window: the model sees the 16-bit values, not a 256-level copy
    assert len(np.unique(x[0].numpy())) > 256


def test_resizing_keeps_values_in_the_window():
    """Resize and crop are done on floats and clipped to the window (bicubic overshoot)."""
    prep = Preprocess(resize=200, crop=(180, 180), mean=(0.0,), std=(1.0,), channels=1, interpolation="bicubic")
    x, disp = prep.of_values(read_dicom("sample:ct", window=(40, 400)).grey)
    assert x.shape == (1, 1, 180, 180) and disp.shape == (180, 180, 3)
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    np.testing.assert_array_equal(disp[..., 0], np.round(x[0, 0].numpy() * 255).astype(np.uint8))


# -- bad input: one line ----------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["abc", "40", "40,0", "40,-5", "1,2,3", "nan,4"])
def test_bad_window_is_one_line(text):
    with pytest.raises(InputError, match="--window") as err:
        parse_window(text)
    assert "\n" not in str(err.value)


def test_not_dicom_and_no_pixel_data(tmp_path):
    fake = tmp_path / "fake.dcm"
    fake.write_text("not a dicom file\n")
    with pytest.raises(InputError, match="is not a DICOM file pydicom can read"):
        read_dicom(fake)
    with pytest.raises(InputError, match=r"has no pixel data .*: give a DICOM image"):
        read_dicom(get_testdata_file("rtplan.dcm"))
    with pytest.raises(InputError, match="not found"):
        read_dicom(tmp_path / "missing.dcm")


def test_window_or_frame_for_a_png_is_refused(tmp_path):
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    with pytest.raises(InputError, match="--window applies to DICOM images"):
        camanim.sources.prepare_input(str(tmp_path / "a.png"), None, None, window=(1, 2))
    with pytest.raises(InputError, match="--frame applies to multi-frame DICOM files"):
        camanim.sources.prepare_input("sample:cat", None, None, frame=1)


def test_compressed_file_without_its_decoder_names_the_package(monkeypatch):
    """JPEG 2000 decodes here through Pillow; without any decoder the line names pylibjpeg's packages."""
    path = get_testdata_file("JPEG2000.dcm")
    decoder = get_decoder(pydicom.dcmread(path).file_meta.TransferSyntaxUID)
    monkeypatch.setattr(type(decoder), "is_available", property(lambda self: False))
    with pytest.raises(InputError) as err:
        read_dicom(path)
    msg = str(err.value)
    assert "\n" not in msg and "compressed as JPEG 2000 Image Compression" in msg
    assert "pip install 'pylibjpeg>=2.0' 'pylibjpeg-openjpeg>=2.0'" in msg


def test_jpeg_ls_file_names_its_decoder_when_none_is_installed():
    path = get_testdata_file("MR_small_jpeg_ls_lossless.dcm")
    if get_decoder(pydicom.dcmread(path).file_meta.TransferSyntaxUID).is_available:
        pytest.skip("a JPEG-LS decoder is installed here")
    with pytest.raises(InputError, match=r"compressed as JPEG-LS Lossless .*pip install 'pylibjpeg>=2\.0' "
                                         r"'pylibjpeg-libjpeg>=2\.1' \(or: .*pyjpegls"):
        read_dicom(path)


def test_a_decoder_that_cannot_read_the_file_names_the_packages_that_can():
    # (review) 12-bit JPEG Extended: Pillow is installed (so a decoder "is available") but cannot read
    # 12-bit samples; the line was "pixel data pydicom cannot decode (RuntimeError)"
    path = get_testdata_file("JPEG-lossy.dcm")
    decoder = get_decoder(pydicom.dcmread(path).file_meta.TransferSyntaxUID)
    if not decoder.missing_dependencies:
        pytest.skip("every decoder of JPEG Extended is installed here")
    try:
        read_dicom(path)
    except InputError as exc:
        msg = str(exc)
        assert "\n" not in msg and "compressed as JPEG Extended" in msg and "installed decoder cannot read it" in msg
        assert "pip install" in msg and "pylibjpeg-libjpeg" in msg
    else:  # a decoder that reads it is here: then it must be right
        assert decoder.is_available


def test_jpeg2000_file_reads_when_its_decoder_is_there():
    path = get_testdata_file("MR_small_jp2klossless.dcm")
    if not get_decoder(pydicom.dcmread(path).file_meta.TransferSyntaxUID).is_available:
        pytest.skip("no JPEG 2000 decoder here")
    plain = read_dicom(get_testdata_file("MR_small.dcm"))
    np.testing.assert_array_equal(read_dicom(path).values, plain.values)  # lossless: the same values


# -- a series folder as one volume -----------------------------------------------------------------


def _series(folder, n=5, shuffle=True, positions=True, **extra):
    rng = np.random.default_rng(0)
    order = rng.permutation(n) if shuffle else np.arange(n)
    uid = pydicom.uid.generate_uid()
    folder.mkdir(exist_ok=True)
    for rank, k in enumerate(order):
        px = (np.arange(12).reshape(3, 4) + 100 * k).astype(np.int16)
        tags = dict(SeriesInstanceUID=uid, RescaleSlope=2, RescaleIntercept=-1000, PixelSpacing=[0.7, 0.8],
                    InstanceNumber=int(n - k), SliceThickness=3.0, PatientName="Doe^Jane")
        if positions:
            # axial slices, z rising with k; instance numbers run the other way, so only positions sort right
            tags.update(ImageOrientationPatient=[1, 0, 0, 0, 1, 0], ImagePositionPatient=[-5.0, 7.0, -10 + 2.5 * k])
        tags.update(extra)
        write_dicom(folder / f"img_{rank:03d}_{rng.integers(1e6)}.dcm", px, **tags)
    return uid


def test_series_sorted_by_position_in_hounsfield_units(tmp_path):
    _series(tmp_path / "s")
    vol, info = read_dicom_series(tmp_path / "s")
    want = np.stack([(np.arange(12).reshape(3, 4) + 100 * k) * 2.0 - 1000 for k in range(5)]).astype(np.float32)
    assert vol.dtype == np.float32 and vol.shape == (5, 3, 4)
    np.testing.assert_array_equal(vol, want)
    assert info["spacing_mm"] == [2.5, 0.7, 0.8] and info["slice_spacing_from"] == "ImagePositionPatient"
    assert info["sorted_by"] == "ImagePositionPatient" and info["slice_spacing_uniform"] is True
    assert info["modality"] == "CT" and info["rescale"]["unit"] == "HU" and info["slices"] == 5
    assert info["window"]["source"] == "value range"
    assert "Doe" not in repr(info) and "Jane" not in repr(info)


def test_series_along_a_tilted_normal(tmp_path):
    """The sort key is the position along the cross product of the orientation's directions."""
    folder = tmp_path / "t"
    folder.mkdir()
    row, col = np.array([1.0, 0, 0]), np.array([0, np.cos(0.3), np.sin(0.3)])
    normal = np.cross(row, col)
    uid = pydicom.uid.generate_uid()
    for rank, k in enumerate([3, 0, 2, 1]):
        write_dicom(folder / f"{rank}.dcm", np.full((2, 2), k, dtype=np.int16), SeriesInstanceUID=uid,
                    ImageOrientationPatient=[*row, *col], ImagePositionPatient=list(np.array([1.0, 2, 3]) + 1.5 * k * normal),
                    InstanceNumber=rank + 1)
    vol, info = read_dicom_series(folder)
    assert vol[:, 0, 0].tolist() == [0, 1, 2, 3]
    assert info["spacing_mm"][0] == pytest.approx(1.5)


def test_series_without_positions_sorts_by_instance_number(tmp_path):
    _series(tmp_path / "s", positions=False)
    vol, info = read_dicom_series(tmp_path / "s")
    # InstanceNumber = n - k: slice k = 4 comes first
    assert vol[:, 0, 0].tolist() == [(100 * k) * 2.0 - 1000 for k in (4, 3, 2, 1, 0)]
    assert info["sorted_by"] == "InstanceNumber"
    assert info["spacing_mm"][0] == 3.0 and info["slice_spacing_from"] == "SliceThickness"


def test_series_errors_are_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="is empty"):
        read_dicom_series(tmp_path / "empty")
    with pytest.raises(InputError, match="not found"):
        read_dicom_series(tmp_path / "nope")
    _series(tmp_path / "mixed", n=3)
    _series(tmp_path / "mixed_b", n=2)
    for p in (tmp_path / "mixed_b").iterdir():
        p.rename(tmp_path / "mixed" / ("b_" + p.name))
    with pytest.raises(InputError, match="holds 2 series: give a folder of one series"):
        read_dicom_series(tmp_path / "mixed")
    uid = _series(tmp_path / "sizes", n=2)
    write_dicom(tmp_path / "sizes" / "odd.dcm", np.zeros((5, 5), np.int16), SeriesInstanceUID=uid,
                ImageOrientationPatient=[1, 0, 0, 0, 1, 0], ImagePositionPatient=[0, 0, 40.0])
    with pytest.raises(InputError, match="differ in size") as err:
        read_dicom_series(tmp_path / "sizes")
    assert "\n" not in str(err.value)
    _series(tmp_path / "junk", n=2)
    (tmp_path / "junk" / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="notes.txt' is not a DICOM file"):
        read_dicom_series(tmp_path / "junk")
    _series(tmp_path / "dup", n=2, shuffle=False)
    for p in (tmp_path / "dup").iterdir():
        ds = pydicom.dcmread(p)
        ds.ImagePositionPatient = [0, 0, 0]
        ds.save_as(p)
    with pytest.raises(InputError, match="lie at one position"):
        read_dicom_series(tmp_path / "dup")


def test_apply_window_refuses_what_dicom_does_not_define():
    with pytest.raises(InputError, match="VOI LUT function 'GAMMA'"):
        apply_window(np.zeros(3), {"centre": 0, "width": 10, "function": "GAMMA"})
    np.testing.assert_array_equal(apply_window(np.array([-1.0, 0.0, 0.4, 5.0]), {"centre": 0.5, "width": 1}),
                                  [0, 0, 1, 1])  # width 1: a threshold at centre - 0.5 (0 here)
