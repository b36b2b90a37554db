"""Volume inputs for 3-D networks: which models take volumes, tensors and files -> (1, C, D, H, W)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
import torchvision
from conftest import TinyNet, tiny_net3d

from camanim import InputError
from camanim.sources import as_volumes, is_volume_model, is_volume_source, prepare_volume


def test_volume_models_have_3d_convolutions_only():
    assert is_volume_model(tiny_net3d())
    assert is_volume_model(torchvision.models.video.r3d_18(weights=None))  # Conv3DSimple subclasses Conv3d
    assert not is_volume_model(TinyNet())
    assert not is_volume_model(torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3), torch.nn.Conv2d(2, 2, 3)))


def test_volume_sources(tmp_path):
    (tmp_path / "series").mkdir()
    assert is_volume_source(torch.zeros(1, 1, 2, 3, 4)) and not is_volume_source(torch.zeros(1, 3, 4, 4))
    assert is_volume_source(str(tmp_path / "a.nii.gz")) and is_volume_source(tmp_path / "series")
    assert not is_volume_source("sample:cat") and not is_volume_source(tmp_path / "a.png")
    batch = torch.zeros(3, 1, 2, 3, 4)
    items, several = as_volumes(batch)
    assert several and len(items) == 3 and items[0].shape == (1, 1, 2, 3, 4)
    assert as_volumes(torch.zeros(1, 2, 3, 4))[1] is False


def test_tensors_become_one_volume_with_a_grey_display():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)  # (C, D, H, W)
    inp, disp, info = prepare_volume(x)
    assert inp.shape == (1, 2, 3, 4, 5) and torch.equal(inp[0], x)
    assert disp.shape == (3, 4, 5) and disp.dtype == np.uint8
    assert (disp.min(), disp.max()) == (0, 255) and info == {"source": "tensor", "shape": [3, 4, 5]}
    mean = x.mean(0)
    expected = ((mean - mean.min()) / (mean.max() - mean.min()) * 255).round().numpy()
    np.testing.assert_array_equal(disp, expected)


@pytest.mark.parametrize("bad,match", [
    (torch.zeros(2, 1, 3, 4, 5), r"\(C, D, H, W\) or \(B, C, D, H, W\)"),
    (torch.zeros(3, 4, 5), r"\(C, D, H, W\)"),
    (torch.zeros(1, 3, 4, 5, dtype=torch.int64), "floating-point"),
    (torch.full((1, 3, 4, 5), float("nan")), "NaN"),
])
def test_bad_volume_tensors_are_one_line(bad, match):
    with pytest.raises(InputError, match=match):
        prepare_volume(bad)


def test_a_nifti_file_keeps_its_intensities_unless_a_transform_is_given(tmp_path):
    raw = np.linspace(-1000, 1000, 2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(raw, np.eye(4)), str(path))
    x, disp, info = prepare_volume(str(path))
    assert x.shape == (1, 1, 2, 3, 4) and torch.allclose(x[0, 0], torch.from_numpy(raw))
    assert info["source"] == str(path) and info["spacing"] == [1.0, 1.0, 1.0]
    scaled, _, _ = prepare_volume(str(path), preprocess=lambda v: (v + 1000) / 2000)
    assert float(scaled.min()) == 0.0 and float(scaled.max()) == 1.0
    with pytest.raises(InputError, match="must return a tensor"):
        prepare_volume(str(path), preprocess=lambda v: v.numpy())
    with pytest.raises(InputError, match="no volume"):
        prepare_volume(str(tmp_path / "scan.png"))


def test_a_dicom_series_folder_runs_through_a_3d_model_in_hounsfield_units(tmp_path):
    """A folder of DICOM slices (written with pydicom, file names shuffled, PHI tags on every slice)
    is read by ``camanim.sources.dicom.read_dicom_series``: the model input is the (D, H, W) volume
    in Hounsfield units, in slice-position order; the run's provenance names no patient."""
    import pydicom
    from conftest import write_dicom

    import camanim

    series = tmp_path / "series"
    series.mkdir()
    uid = pydicom.uid.generate_uid()
    stored = [np.arange(8 * 10, dtype=np.int16).reshape(8, 10) * (k + 1) for k in range(6)]
    for rank, k in enumerate([4, 1, 5, 0, 3, 2]):
        write_dicom(series / f"x{rank}_{k * 7 % 5}.dcm", stored[k], SeriesInstanceUID=uid, RescaleSlope=2.0,
                    RescaleIntercept=-1024.0, ImageOrientationPatient=[1, 0, 0, 0, 1, 0],
                    ImagePositionPatient=[0.0, 0.0, 3.0 * k], InstanceNumber=rank + 1, PixelSpacing=[0.5, 0.5],
                    PatientName="Doe^Jane", PatientID="ID-424242", PatientBirthDate="19700101")
    want = np.stack(stored).astype(np.float32) * 2.0 - 1024.0
    x, disp, info = prepare_volume(series)
    assert x.shape == (1, 1, 6, 8, 10)
    np.testing.assert_array_equal(x[0, 0].numpy(), want)
    assert info["format"] == "DICOM series" and info["spacing_mm"] == [3.0, 0.5, 0.5]
    assert disp.shape == (6, 8, 10) and disp.dtype == np.uint8
    result = camanim.animate(tiny_net3d(), str(series), layers="conv1,conv2")
    assert [r.name for r in result.layers] == ["conv1", "conv2"] and result.cams.shape == (2, 6, 8, 10)
    result.save(tmp_path / "run", video=False)
    written = b"".join(p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file())
    for phi in (b"Doe", b"ID-424242", b"19700101"):
        assert phi not in written


def test_a_folder_for_a_2d_model_says_it_is_read_as_a_dicom_series_and_how_to_give_images(tmp_path):
    # A folder of PNGs was called "a volume" with no word of why (a folder is one DICOM series) or of
    # how to explain the images in it.
    from camanim.sources import takes_volumes

    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a.png", "b.png"):
        (photos / name).write_bytes(b"png")
    with pytest.raises(InputError, match=r"the input .*photos is a folder, which camanim reads as one DICOM series "
                                         r"\(a volume\), and TinyNet has no 3-D convolutions \(Conv3d\): to explain "
                                         r"the images in it give them as files \(.*photos/\*\.png\) or sweep the "
                                         r"folder \(camanim sweep .*photos\)"):
        takes_volumes(TinyNet(), str(photos))


def test_a_volume_for_a_model_without_3d_convolutions_is_one_line(tmp_path, monkeypatch):
    import sys

    from camanim.sources import takes_volumes

    scan = tmp_path / "ct.nii.gz"
    assert takes_volumes(tiny_net3d(), torch.zeros(1, 2, 3, 4)) and not takes_volumes(TinyNet(), torch.zeros(3, 4, 4))
    with pytest.raises(InputError, match=r"ct.nii.gz\) is a volume, and TinyNet has no 3-D convolutions"):
        takes_volumes(TinyNet(), [str(scan)])
    with pytest.raises(InputError, match=r"shape \(1, 1, 2, 3, 4\)\) is a volume"):
        takes_volumes(TinyNet(), torch.zeros(1, 1, 2, 3, 4))
    monkeypatch.setitem(sys.modules, "camanim.sources.dicom", None)  # a camanim without its DICOM reader
    with pytest.raises(InputError, match="no DICOM reader"):
        prepare_volume(tmp_path)
