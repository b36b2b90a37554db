"""``cams.npz``: the raw CAMs of a run and what is needed to score them again without the model's pass."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError


@dataclass
class SavedCams:
    """The content of ``cams.npz``.

    Attributes:
        cams: raw CAMs (L, H, W) float32: after ReLU, upsampled to input size, not scaled.
        names: (L,) layer names, as in the manifest.
        input: the model input (1, C, H, W) float32, normalised as the model takes it.
        image: the display image (H, W, 3) uint8.
        target: the explained class index.
    """

    cams: np.ndarray
    names: np.ndarray
    input: np.ndarray
    image: np.ndarray
    target: int


def write_cams(path: Path, saved: SavedCams) -> Path:
    """Write ``saved`` as ``cams.npz`` (uncompressed: a run's CAMs are read back whole)."""
    np.savez(path, cams=saved.cams, names=saved.names, input=saved.input, image=saved.image,
             target=np.array(saved.target))
    return Path(path)


def read_cams(path: Path) -> SavedCams:
    """Read a run's ``cams.npz``.

    Raises:
        InputError: the file is missing, unreadable or lacks one of its arrays.
    """
    try:
        with np.load(path) as data:
            return SavedCams(cams=data["cams"], names=data["names"], input=data["input"], image=data["image"],
                             target=int(data["target"]))
    except (OSError, KeyError, ValueError) as exc:
        raise InputError(f"{path} is not a readable camanim cams.npz ({exc}): re-run `camanim run`") from exc
