"""NIfTI volumes (``.nii``, ``.nii.gz``) through nibabel: the one reader of the format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError

SUFFIXES = (".nii", ".nii.gz")


def is_nifti(path: str | Path) -> bool:
    """Whether ``path`` names a NIfTI file by its suffix (``.nii`` or ``.nii.gz``)."""
    return str(path).lower().endswith(SUFFIXES)


def read_nifti(path: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    """A NIfTI volume as float32 (X, Y, Z) in RAS+ orientation, and its provenance.

    The image is turned to the closest canonical orientation (``nibabel.as_closest_canonical``):
    axis 0 runs to the patient's Right, axis 1 Anterior, axis 2 Superior, as MONAI's
    ``Orientation("RAS")`` gives it, so a model trained on MONAI-loaded volumes gets the axes it was
    trained on. The values are the stored intensities after the file's scaling (``scl_slope``,
    ``scl_inter``), e.g. Hounsfield units for CT; a 4-D file is refused unless its 4th axis has size 1.

    Args:
        path: a ``.nii`` or ``.nii.gz`` file.

    Returns:
        ``(volume, info)``: the (X, Y, Z) float32 volume and ``{"source", "format", "shape",
        "spacing" (mm, per axis), "orientation": "RAS"}`` for the manifest.

    Raises:
        InputError: the file is missing, is not a NIfTI file nibabel can read, holds no 3-D volume (a 4-D file with several volumes), or
            holds NaN or infinite values.
    """
    import nibabel as nib

    p = Path(path)
    if not p.is_file():
        raise InputError(f"NIfTI file {p} not found: give the path of a .nii or .nii.gz file")
    try:
        img = nib.as_closest_canonical(nib.load(str(p)))
        data = np.asarray(img.get_fdata(dtype=np.float32))
    except Exception as exc:  # nibabel raises several kinds for a damaged or foreign file
        raise InputError(f"{p} is not a NIfTI file nibabel can read ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else 'unreadable'}): give a .nii or .nii.gz volume") from None
    info: dict[str, Any] = {"source": str(p), "format": "nifti", "orientation": "RAS"}
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    elif data.ndim == 4:
        raise InputError(f"{p} holds {data.shape[3]} volumes along its 4th axis (time points, or the channels of "
                         "one input), and camanim reads one 3-D volume per file: save the volume to explain as its "
                         "own file, or pass a (C, D, H, W) tensor in Python for a multi-channel input")
    if data.ndim != 3 or min(data.shape) < 1:
        raise InputError(f"{p} holds an array of shape {data.shape}, not a 3-D volume: give a 3-D NIfTI file")
    if not np.isfinite(data).all():
        raise InputError(f"{p} holds NaN or infinite values: give a volume of finite values")
    info["shape"] = [int(s) for s in data.shape]
    info["spacing"] = [round(float(z), 6) for z in img.header.get_zooms()[:3]]
    return np.ascontiguousarray(data, dtype=np.float32), info
