"""Deletion and Insertion (Petsiuk et al. 2018, RISE, https://arxiv.org/abs/1806.07421) per layer.

torchcam's ``DeletionInsertionMetric``, per layer: the map is min-max scaled at the layer's resolution
and resized to the input as torchcam's extractor and metric do (:func:`forwards.at_input`: the ranking
is that of the resized map up to rounding, and rounding decides ties, so it is made the same way), then
pixels are ranked from the highest value down
(a stable sort, so ties go to the lower flat index); with ``steps`` intervals the counts are
``0, s, 2s, ..., N`` (``s = ceil(N / steps)``). Deletion replaces the first k ranked pixels (all
channels) by the baseline (zeros), insertion puts them back on the baseline; each curve is the
target's score against the fraction k/N, and its area (trapezoid rule) is the metric. The first point
of deletion and the last of insertion are the unperturbed image; the all-baseline image is shared.
Every perturbed image is keyed by its mask, so layers whose CAMs rank the same top-k pixels share a
forward, and all layers' images go through the model in shared batches. The chance baseline ranks
pixels in ``trials`` random orders (seeded) instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..road.stats import prediction_band
from .curve import LayerCurve
from .forwards import SharedForwards, at_input


def counts_for(n_pixels: int, steps: int) -> list[int]:
    """The numbers of perturbed pixels: ``0, s, 2s, ... < N`` and ``N``, with ``s = ceil(N / steps)``."""
    step = (n_pixels + steps - 1) // steps
    return [*range(0, n_pixels, step), n_pixels]


def _ask(fw: SharedForwards, x: torch.Tensor, ranks: torch.Tensor, counts: Sequence[int]) -> list[list[bytes]]:
    """Keys of the deletion and insertion images of one ranking (ranks (N,): position of each pixel)."""
    c = x.shape[0]
    flat = x.reshape(c, -1)
    keys: list[list[bytes]] = [[], []]
    for k in counts:
        top = ranks < k
        for curve in (0, 1):
            keep = ~top if curve == 0 else top  # deletion keeps the rest, insertion the top k
            if bool(keep.all()):
                key = fw.key("original")
                fw.add(key, lambda: x)
            else:
                key = fw.key("keep", keep)
                fw.add(key, lambda keep=keep: torch.where(keep[None], flat, torch.zeros_like(flat)).reshape(x.shape))
            keys[curve].append(key)
    return keys


def _auc(fw: SharedForwards, keys: list[bytes], fractions: torch.Tensor) -> tuple[float, list[float]]:
    curve = torch.tensor([fw.score(k) for k in keys], dtype=torch.float32)
    return float(torch.trapezoid(curve, fractions)), curve.tolist()


def deletion_insertion(fw: SharedForwards, x: torch.Tensor, cams: Sequence[torch.Tensor], names: Sequence[str],
                       defined: Sequence[bool], *, steps: int = 20, trials: int = 0, seed: int = 0,
                       ) -> tuple[LayerCurve, LayerCurve]:
    """Deletion and insertion AUC of every layer's CAM on one image.

    Args:
        fw: the shared forwards (model, target, score).
        x: the input (C, H, W).
        cams: L maps (h, w), each at its layer's resolution (or all at input size).
        names: the L layer names.
        defined: per layer, whether it has a map to rank (non-spatial and constant maps have none).
        steps: intervals of the curves.
        trials: random orders for the chance baseline (0: none).
        seed: seeds them.

    Returns:
        (deletion, insertion) curves over the layers, NaN where undefined.
    """
    n = int(x.shape[-1] * x.shape[-2])
    counts = counts_for(n, steps)
    fractions = torch.tensor(counts, dtype=torch.float32) / n
    wanted: dict[int, list[list[bytes]]] = {}
    for i in range(len(cams)):
        if defined[i]:
            order = torch.argsort(at_input(cams[i].to(x.device), x.shape[-2:]).reshape(-1), descending=True,
                                  stable=True)
            wanted[i] = _ask(fw, x, torch.argsort(order), counts)
    chance: list[list[list[bytes]]] = []
    gen = torch.Generator().manual_seed(int(seed))
    for _ in range(trials):
        chance.append(_ask(fw, x, torch.argsort(torch.randperm(n, generator=gen)).to(x.device), counts))
    fw.run()
    out = []
    for curve, name in ((0, "deletion"), (1, "insertion")):
        values = np.full(len(names), np.nan)
        per_layer: list[list[float] | None] = [None] * len(names)
        for i, keys in wanted.items():
            values[i], per_layer[i] = _auc(fw, keys[curve], fractions)
        base = np.array([_auc(fw, keys[curve], fractions)[0] for keys in chance]) if chance else None
        band = prediction_band(base) if base is not None and len(base) >= 2 else None
        out.append(LayerCurve(name, list(names), values, score="", baseline=base, band=band,
                              extra={"fractions": fractions.tolist(), "steps": steps, "curves": per_layer}))
    return out[0], out[1]
