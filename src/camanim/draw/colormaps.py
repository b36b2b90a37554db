"""Colormaps as lookup tables: one (256, 3) uint8 table per matplotlib colormap name."""

from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=16)
def colormap_lut(name: str) -> np.ndarray:
    """A (256, 3) uint8 lookup table for a matplotlib colormap name.

    Raises:
        ValueError: ``name`` is not a matplotlib colormap.
    """
    import matplotlib

    try:
        cmap = matplotlib.colormaps[name]
    except KeyError as exc:
        raise ValueError(f"unknown colormap '{name}': use a matplotlib name such as jet, viridis, inferno") from exc
    return (cmap(np.linspace(0.0, 1.0, 256))[:, :3] * 255.0 + 0.5).astype(np.uint8)
