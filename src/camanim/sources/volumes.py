"""Volumes for 3-D networks: NIfTI files, DICOM series (folders) and (C, D, H, W) tensors -> model input.

A 4-D tensor is read as one volume (C, D, H, W) only for a model whose convolutions are all 3-D
(:func:`is_volume_model`); for any other model it stays a batch of images (B, C, H, W), as before.
A 5-D tensor is always volumes (B, C, D, H, W).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from .images import split_batch
from .nifti import is_nifti, read_nifti

#: (model input (1, C, D, H, W), display volume (D, H, W) uint8, provenance for the manifest)
PreparedVolume = tuple[torch.Tensor, np.ndarray, dict[str, Any]]


def is_volume_model(module: nn.Module) -> bool:
    """Whether ``module`` takes volumes: it has a ``Conv3d`` (or a subclass) and no ``Conv2d``/``Conv1d``."""
    kinds = {type(m) for m in module.modules()}
    has_3d = any(issubclass(k, nn.Conv3d) for k in kinds)
    return has_3d and not any(issubclass(k, (nn.Conv2d, nn.Conv1d)) for k in kinds)


def is_volume_source(image: Any) -> bool:
    """Whether ``image`` names a volume by itself: a NIfTI file, a folder (a DICOM series) or a 5-D tensor."""
    if isinstance(image, torch.Tensor):
        return image.ndim == 5
    if isinstance(image, (str, Path)) and not str(image).startswith("sample:"):
        return is_nifti(image) or Path(image).is_dir()
    return False


def takes_volumes(module: nn.Module, image: Any) -> bool:
    """Whether ``image`` goes to ``module`` as volumes: the model is a volume model (:func:`is_volume_model`).

    Raises:
        InputError: ``image`` is a volume (a NIfTI file, a folder, a 5-D tensor, or the first of a list is)
            but the model has no 3-D convolutions.
    """
    if is_volume_model(module):
        return True
    first = image[0] if isinstance(image, (list, tuple)) and image else image
    if is_volume_source(first):
        if not isinstance(first, torch.Tensor) and Path(first).is_dir():
            raise InputError(f"the input {first} is a folder, which camanim reads as one DICOM series (a volume), and "
                             f"{type(module).__name__} has no 3-D convolutions (Conv3d): to explain the images in it "
                             f"give them as files ({Path(first) / '*.png'}) or sweep the folder (camanim sweep {first})")
        what = f"shape {tuple(first.shape)}" if isinstance(first, torch.Tensor) else f"{first}"
        raise InputError(f"the input ({what}) is a volume, and {type(module).__name__} has no 3-D convolutions "
                         "(Conv3d): give it images, (C, H, W) or (B, C, H, W), or give the volume to a 3-D model")
    return False


def display_volume(x: torch.Tensor) -> np.ndarray:
    """A (D, H, W) uint8 picture of a volume input (1, C, D, H, W): channels averaged, min-max scaled."""
    v = x[0].detach().float().cpu().mean(0)
    v = (v - v.min()) / (v.max() - v.min() + 1e-12)
    return (v.numpy() * 255).round().astype(np.uint8)


def checked_volume(x: torch.Tensor, what: str) -> torch.Tensor:
    """``x`` as (1, C, D, H, W): (C, D, H, W) or (1, C, D, H, W), floating point, finite.

    Raises:
        InputError: another rank or batch size, an empty axis, an integer dtype, or NaN/inf values.
    """
    if x.ndim not in (4, 5) or (x.ndim == 5 and x.shape[0] != 1) or 0 in x.shape:
        raise InputError(f"{what} has shape {tuple(x.shape)}: a 3-D model takes volumes, (C, D, H, W) or "
                         "(B, C, D, H, W) tensors; give one of those")
    if not x.is_floating_point():
        raise InputError(f"{what} is {str(x.dtype).removeprefix('torch.')}: give a floating-point volume")
    if not bool(torch.isfinite(x).all()):
        raise InputError(f"{what} holds NaN or infinite values: give finite values")
    return x if x.ndim == 5 else x.unsqueeze(0)


def read_volume(path: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    """A volume file or folder as float32 (D, H, W) and its provenance.

    A ``.nii``/``.nii.gz`` file through :func:`camanim.sources.nifti.read_nifti` (RAS axes); a folder as a
    DICOM series through ``camanim.sources.dicom.read_dicom_series`` (slices, rows, columns, in
    Hounsfield units for CT).

    Raises:
        InputError: neither a NIfTI file nor a folder, or what the reader raises.
    """
    p = Path(path)
    if is_nifti(p):
        return read_nifti(p)
    if p.is_dir():
        try:
            from .dicom import read_dicom_series  # the DICOM reader's module (pydicom)
        except ModuleNotFoundError as exc:
            if exc.name != f"{__package__}.dicom":
                raise
            raise InputError(f"{p} is a folder, read as a DICOM series, and this camanim has no DICOM reader "
                             "(camanim.sources.dicom): give a .nii or .nii.gz file or a tensor") from None
        volume, meta = read_dicom_series(p)
        return np.asarray(volume, np.float32), {"source": str(p), **dict(meta)}
    raise InputError(f"{p} is no volume: give a .nii or .nii.gz file, a folder of one DICOM series, "
                     "or a (C, D, H, W) tensor")


def as_volumes(image: Any) -> tuple[list[Any], bool]:
    """The volumes of ``image`` and whether it named several (a list, or a 5-D tensor with batch > 1).

    Raises:
        InputError: an empty list.
    """
    return split_batch(image, 5, "volume")


def prepare_volume(image: Any, preprocess: Callable | None = None) -> PreparedVolume:
    """The model input, display volume and provenance of one volume.

    Args:
        image: a ``.nii``/``.nii.gz`` path, a DICOM series folder, a (D, H, W) array, or a tensor
            (C, D, H, W) / (1, C, D, H, W) as the model takes it.
        preprocess: for a file or an array: a callable (1, D, H, W) float32 tensor -> (C, D, H, W) tensor
            (e.g. MONAI's ``ScaleIntensityRange``); None gives the stored intensities as they are
            (Hounsfield units for CT).

    Returns:
        The input (1, C, D, H, W), the display volume (D, H, W) uint8 (the input's channels averaged,
        min-max scaled) and the provenance.

    Raises:
        InputError: an unreadable file; a tensor (given, or from ``preprocess``) that is not
            (C, D, H, W) or (1, C, D, H, W), floating point and finite.
    """
    if isinstance(image, torch.Tensor):
        x = checked_volume(image, "the input volume")
        return x, display_volume(x), {"source": "tensor", "shape": [int(s) for s in x.shape[2:]]}
    if isinstance(image, np.ndarray):
        if image.ndim != 3:
            raise InputError(f"a volume array has shape {image.shape}: give a (D, H, W) array, or a tensor "
                             "(C, D, H, W)")
        volume, info = np.asarray(image, np.float32), {"source": "array", "shape": [int(s) for s in image.shape]}
    else:
        volume, info = read_volume(image)
    raw = torch.from_numpy(np.ascontiguousarray(volume)).unsqueeze(0)
    x = preprocess(raw) if preprocess is not None else raw
    if not isinstance(x, torch.Tensor):
        raise InputError("the preprocess/transform of a volume must return a tensor (C, D, H, W)")
    x = checked_volume(x, "the preprocessed volume" if preprocess is not None else "the volume")
    return x, display_volume(x), info
