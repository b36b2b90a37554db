"""ROAD's removal masks: which pixels MoRF and LeRF remove at each percentage, exactly k of them.

See :mod:`camanim.road.metric` for the metric and its source (Rong et al., 2022,
https://arxiv.org/abs/2202.00449).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch


def removed_count(percent: float, n_pixels: int) -> int:
    """How many of ``n_pixels`` pixels ROAD removes at ``percent`` percent: ``round(percent/100 * n_pixels)``."""
    # Round half up (not Python's half-to-even): it matches pytorch-grad-cam's
    # percentile threshold on tie-free CAMs in the .5 cases too.
    return int(math.floor(percent / 100.0 * n_pixels + 0.5))


def removal_masks(cam: torch.Tensor, percentiles: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels ROAD removes for one CAM, MoRF and LeRF, at each percentage.

    Args:
        cam: ``(H, W)`` CAM.
        percentiles: Percent of pixels removed, each in ``[0, 100)``.

    Returns:
        ``(morf, lerf)``, each a ``(P, H, W)`` bool tensor, True where removed:
        exactly ``round(p/100 * H*W)`` pixels, the highest (MoRF) or lowest (LeRF)
        CAM values, equal values taken in flat-index order.

    Example:
        >>> morf, lerf = removal_masks(torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]), [50])
        >>> morf[0].int().tolist(), lerf[0].int().tolist()
        ([[1, 1, 0], [1, 0, 0]], [[1, 0, 1], [0, 1, 0]])

    Raises:
        TypeError: If ``cam`` is not a 2-D tensor, or ``percentiles`` is not a sequence of numbers.
        ValueError: If ``percentiles`` is empty, or a percentage is outside ``[0, 100)`` or removes
            every pixel.
    """
    if not isinstance(cam, torch.Tensor) or cam.ndim != 2:
        raise TypeError("cam: expected a (H, W) tensor")
    flat = cam.detach().cpu().reshape(-1).numpy()
    ks = [removed_count(p, flat.size) for p in check_percentiles(percentiles, flat.size)]
    morf, lerf = (
        torch.from_numpy(np.stack(masks_from_order(order, ks, flat.size))).reshape(len(ks), *cam.shape)
        for order in (np.argsort(-flat, kind="stable"), np.argsort(flat, kind="stable"))
    )
    return morf, lerf


def masks_from_order(order: np.ndarray, ks: Sequence[int], n_pixels: int) -> list[np.ndarray]:
    """One ``(n_pixels,)`` bool mask per ``k`` in ``ks``, True at the first ``k`` flat indices of ``order``."""
    out = []
    for k in ks:
        mask = np.zeros(n_pixels, dtype=bool)
        mask[order[:k]] = True
        out.append(mask)
    return out


def check_percentiles(percentiles: Sequence[float], n_pixels: int) -> tuple[float, ...]:
    """The percentages of pixels to remove, as floats, checked against an image of ``n_pixels`` pixels.

    Raises:
        TypeError: If ``percentiles`` is not a sequence of numbers.
        ValueError: If it is empty, or a percentage is outside ``[0, 100)`` or removes every pixel.
    """
    try:
        values = tuple(float(p) for p in percentiles)
    except (TypeError, ValueError) as exc:
        raise TypeError("percentiles: expected a sequence of numbers") from exc
    if not values:
        raise ValueError("percentiles: give at least one percentage")
    for p in values:
        if not 0.0 <= p < 100.0:
            raise ValueError(f"percentiles: {p:g} is outside [0, 100) (percent of pixels removed)")
        if removed_count(p, n_pixels) >= n_pixels:
            raise ValueError(f"percentiles: {p:g}% removes every pixel of a {n_pixels}-pixel image")
    return values


class PackedMasks(Sequence[np.ndarray]):
    """Bit-packed masks, unpacked on access: a few KB each instead of one byte per pixel."""

    def __init__(self, packed: list[np.ndarray], n_pixels: int) -> None:
        self.packed, self.n_pixels = packed, n_pixels

    def __len__(self) -> int:
        return len(self.packed)

    def __getitem__(self, i: int) -> np.ndarray:  # type: ignore[override]
        return np.unpackbits(self.packed[i], count=self.n_pixels).astype(bool)
