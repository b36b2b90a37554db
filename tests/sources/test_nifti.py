"""NIfTI volumes through nibabel: RAS axes, the file's scaling, spacing, and one-line errors."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from camanim import InputError
from camanim.sources.nifti import is_nifti, read_nifti


def _write(path, raw, affine, slope=None, inter=None):
    img = nib.Nifti1Image(raw, affine)
    if slope is not None:
        img.header.set_slope_inter(slope, inter)
    nib.save(img, str(path))
    return path


def test_read_nifti_turns_to_ras_and_applies_the_scaling(tmp_path):
    raw = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    # axis 0 runs to the patient's Left (LAS): RAS reading flips it; voxels 2 x 3 x 4 mm
    affine = np.diag([-2.0, 3.0, 4.0, 1.0])
    path = _write(tmp_path / "ct.nii.gz", raw, affine, slope=2.0, inter=-10.0)
    vol, info = read_nifti(path)
    assert vol.dtype == np.float32 and vol.shape == (4, 5, 6)
    np.testing.assert_array_equal(vol, (raw[::-1] * 2.0 - 10.0).astype(np.float32))
    assert vol[0, 0, 0] == raw[3, 0, 0] * 2 - 10 == 170.0
    assert info["spacing"] == [2.0, 3.0, 4.0] and info["orientation"] == "RAS" and info["shape"] == [4, 5, 6]
    assert info["format"] == "nifti" and is_nifti(path) and is_nifti("A.NII") and not is_nifti("a.png")


def test_a_4d_file_is_refused_in_one_line_unless_its_fourth_axis_is_one(tmp_path):
    # (review) a 4-D file quietly gave its first volume: its 4th axis may be time points or the
    # channels (modalities) of one multi-channel input, which camanim cannot tell apart
    raw = np.stack([np.full((2, 3, 4), k, np.float32) for k in range(3)], axis=-1)
    with pytest.raises(InputError, match="3 volumes along its 4th axis") as info:
        read_nifti(_write(tmp_path / "fmri.nii", raw, np.eye(4)))
    assert "\n" not in str(info.value) and "(C, D, H, W) tensor" in str(info.value)
    one = np.arange(24, dtype=np.float32).reshape(2, 3, 4, 1)
    vol, meta = read_nifti(_write(tmp_path / "one.nii", one, np.eye(4)))
    assert vol.shape == (2, 3, 4) and float(vol.max()) == 23.0 and "frames" not in meta


def test_bad_nifti_files_are_one_line(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_nifti(tmp_path / "missing.nii")
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not a nifti file at all")
    with pytest.raises(InputError, match="not a NIfTI file nibabel can read") as err:
        read_nifti(bad)
    assert "\n" not in str(err.value)
    nan = np.zeros((2, 2, 2), np.float32)
    nan[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        read_nifti(_write(tmp_path / "nan.nii", nan, np.eye(4)))
    with pytest.raises(InputError, match="not a 3-D volume"):
        read_nifti(_write(tmp_path / "flat.nii", np.zeros((3, 4), np.float32), np.eye(4)))
