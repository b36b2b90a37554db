"""Activation layouts: how a layer's output tensor maps onto the image plane.

A layout names how to read a (B, ...) activation as (B, C, h, w). Only what is
recognised is mapped; anything else is ``non_spatial`` (recorded, never guessed).
"""

from __future__ import annotations

import torch
from torch import nn

NCHW = "NCHW"
NON_SPATIAL = "non_spatial"


def detect_layout(module: nn.Module, tensor: torch.Tensor | None) -> str:
    """The layout of ``module``'s output ``tensor`` (``NCHW`` or ``non_spatial``)."""
    if tensor is None or not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
        return NON_SPATIAL
    if tensor.ndim == 4 and tensor.shape[-1] * tensor.shape[-2] > 1:
        return NCHW
    return NON_SPATIAL


def to_nchw(tensor: torch.Tensor, layout: str) -> torch.Tensor | None:
    """``tensor`` as (B, C, h, w) for a spatial layout, else None."""
    if layout == NCHW:
        return tensor
    return None
