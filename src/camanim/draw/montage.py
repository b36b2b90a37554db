"""Volumes drawn as a slice montage: evenly spaced axial slices laid out in a grid, one picture.

A 3-D network's CAM is a volume (D, H, W). Each frame shows the same slices of it, over the same
slices of the input volume, tiled row by row (slice ``slices[0]`` top left): the anatomy under the
maps stays still from frame to frame while the CAM changes with depth in the network, so the video
compares layers on the very same voxels (and a global normalisation on one scale for all of them).
Three orthogonal slices through each map's peak would move the planes with every layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

#: the most slices a montage shows (a 4 x 4 grid)
MAX_SLICES = 16


@dataclass(frozen=True)
class Montage:
    """Which slices of a volume a frame shows, and how they are tiled.

    Attributes:
        depth: the volume's number of slices D (axis 0 of a (D, H, W) volume, the first spatial axis
            of the model input (C, D, H, W)).
        slices: the slice indices shown, in increasing order, row by row.
        rows, cols: the grid; cells after the last slice are empty (zero maps, background image).
    """

    depth: int
    slices: tuple[int, ...]
    rows: int
    cols: int

    def to_dict(self) -> dict[str, object]:
        """``{"axis", "slices", "grid"}`` as ``manifest.json`` keeps it under ``image.montage``."""
        return {"axis": 0, "depth": self.depth, "slices": list(self.slices), "grid": [self.rows, self.cols]}

    def planes(self, volumes: torch.Tensor) -> torch.Tensor:
        """Volumes (..., D, H, W) as montages (..., rows * H, cols * W), empty cells zero.

        Raises:
            ValueError: the volumes' depth is not :attr:`depth`.
        """
        if volumes.shape[-3] != self.depth:
            raise ValueError(f"volumes of depth {volumes.shape[-3]} for a montage of depth {self.depth}")
        *lead, _, h, w = volumes.shape
        picked = volumes[..., list(self.slices), :, :]
        cells = self.rows * self.cols
        if cells > len(self.slices):
            pad = volumes.new_zeros((*lead, cells - len(self.slices), h, w))
            picked = torch.cat([picked, pad], dim=-3)
        grid = picked.reshape(*lead, self.rows, self.cols, h, w)
        grid = grid.movedim(-2, -3)  # (..., rows, h, cols, w)
        return grid.reshape(*lead, self.rows * h, self.cols * w)

    def image(self, volume: np.ndarray) -> np.ndarray:
        """A display volume (D, H, W) uint8 as the montage's grey picture (rows * H, cols * W, 3) uint8."""
        plane = self.planes(torch.from_numpy(np.ascontiguousarray(volume))).numpy()
        return np.repeat(plane[..., None], 3, axis=2)


def montage_for(depth: int, max_slices: int = MAX_SLICES) -> Montage:
    """The montage of a volume with ``depth`` slices: at most ``max_slices`` of them, evenly spaced.

    Slice k of n is the centre of the k-th of n equal slabs, ``floor((k + 0.5) * depth / n)``, so the
    slices are distinct and symmetric about the middle; the grid has ``ceil(sqrt(n))`` columns.

    Raises:
        ValueError: ``depth`` or ``max_slices`` below 1.
    """
    if depth < 1 or max_slices < 1:
        raise ValueError(f"a montage needs a depth and a slice count of at least 1, not {depth}, {max_slices}")
    n = min(depth, max_slices)
    slices = tuple(int(math.floor((k + 0.5) * depth / n)) for k in range(n))
    cols = math.ceil(math.sqrt(n))
    return Montage(depth=depth, slices=slices, rows=math.ceil(n / cols), cols=cols)
