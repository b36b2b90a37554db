"""Local and global normalisation of raw CAMs (the only place min-max scaling happens)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

NORMALISATIONS = ("local", "global")


def normalise(cams: torch.Tensor, kind: str = "local", size: tuple[int, int] | None = None) -> torch.Tensor:
    """Scale raw CAMs [L, H, W] to [0, 1].

    ``local``: each layer by its own min and max. ``global``: one min and max over all layers,
    so layers with weak activations stay dim. A constant map (e.g. all zero) becomes all zero,
    never NaN.

    Args:
        cams: raw CAMs (L, H, W), any float dtype; NaN and infinities are first replaced by numbers.
        kind: ``"local"`` or ``"global"``.
        size: (h, w): return the maps resized to this size (bilinear), scaled by the min and max of
            the full-size maps (scaling is affine per layer, so this equals resizing the scaled maps;
            a small preview costs a resize of the raw maps, not a full-size scaling).

    Returns:
        float32 maps of the same shape, in [0, 1].

    Raises:
        ValueError: If ``kind`` is not one of :data:`NORMALISATIONS`.
    """
    if kind not in NORMALISATIONS:
        raise ValueError(f"normalisation '{kind}' is not one of {', '.join(NORMALISATIONS)}")
    x = cams.float().detach().cpu() if size is not None else cams.float()
    if x.numel() == 0:
        return x.clone()
    if kind == "local":
        flat = x.reshape(x.shape[0], -1)
        lo = flat.min(dim=1).values.view(-1, *([1] * (x.ndim - 1)))
        hi = flat.max(dim=1).values.view(-1, *([1] * (x.ndim - 1)))
    else:
        lo, hi = x.min(), x.max()
    if not (torch.isfinite(lo).all() and torch.isfinite(hi).all()):  # min/max carry any NaN or infinity
        return normalise(torch.nan_to_num(x), kind, size)
    if size is not None and x.ndim == 3 and tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x.unsqueeze(1), size=tuple(size), mode="bilinear", align_corners=False).squeeze(1)
    span = hi - lo
    safe = torch.where(span > 0, span, torch.ones_like(span))
    return torch.where(span > 0, (x - lo) / safe, torch.zeros_like(x)).clamp_(0, 1)
