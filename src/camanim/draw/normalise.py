"""Local and global normalisation of raw CAMs (the only place min-max scaling happens).

Raw CAMs come whole (a tensor (L, H, W)) or as a :class:`camanim.compute.LayerView` read a run of
layers at a time (:class:`camanim.compute.LazyCams`). :func:`normalise` scales a whole stack;
:func:`normalised_view` scales a view run by run, never holding it whole: local scaling needs only
each layer's own min and max, global the network's, found in one pass over the runs first. Both give
the same numbers bit for bit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..compute import LayerView

NORMALISATIONS = ("local", "global")


def scale(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """``(x - lo) / (hi - lo)`` clipped to [0, 1], zero where ``hi == lo`` (never NaN): the one min-max formula.

    ``lo`` and ``hi`` broadcast against ``x``: scalars (global) or (n, 1, 1) (one per layer, local).
    """
    span = hi - lo
    positive = span > 0
    # one new tensor, worked in place: a run of input-size maps is tens of MB, and each fresh
    # temporary costs its page faults (the same numbers as ``where(positive, (x - lo) / safe, 0)``)
    out = torch.sub(x, lo)
    out.div_(torch.where(positive, span, torch.ones_like(span)))
    if not bool(positive.all()):
        out.masked_fill_(~positive, 0.0)
    return out.clamp_(0, 1)


def _check(kind: str) -> None:
    if kind not in NORMALISATIONS:
        raise ValueError(f"normalisation '{kind}' is not one of {', '.join(NORMALISATIONS)}")


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
    _check(kind)
    x = _finite(cams.float().detach().cpu() if size is not None else cams.float())
    if x.numel() == 0:
        return x.clone()
    lo, hi = _layer_range(x) if kind == "local" else (x.min(), x.max())
    return scale(_resized(x, size), lo, hi)


def _layer_range(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each layer's min and max, shaped (n, 1, ...) to broadcast against ``x`` (n, ...)."""
    flat = x.reshape(x.shape[0], -1)
    shape = (-1, *([1] * (x.ndim - 1)))
    return flat.min(dim=1).values.view(shape), flat.max(dim=1).values.view(shape)


def _resized(x: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    if size is not None and x.ndim == 3 and tuple(x.shape[-2:]) != tuple(size):
        return F.interpolate(x.unsqueeze(1), size=tuple(size), mode="bilinear", align_corners=False).squeeze(1)
    return x


def _finite(x: torch.Tensor) -> torch.Tensor:
    """``x`` as float32, NaN and infinities replaced by numbers where it holds any (as :func:`normalise` does)."""
    x = x.float()
    if x.numel() and not (torch.isfinite(x.amin()) and torch.isfinite(x.amax())):
        return torch.nan_to_num(x)
    return x


def _as_view(cams: LayerView | torch.Tensor) -> LayerView:
    """A whole (L, ...) tensor as a :class:`~camanim.compute.LayerView` of its own rows; a view as it is."""
    return cams if isinstance(cams, LayerView) else LayerView(len(cams), cams.shape[1:], lambda a, b: cams[a:b])


def global_range(cams: LayerView | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The network's min and max over every layer of raw CAMs, read a run of layers at a time.

    NaN and infinities count as :func:`normalise` counts them (replaced by numbers). Returns two
    float32 scalars (0-dim tensors); both 0 for no CAMs.
    """
    view = _as_view(cams)
    los, his = [], []
    for _, _, part in view.chunks():
        part = _finite(part)
        if part.numel():
            los.append(part.amin())
            his.append(part.amax())
    if not los:
        return torch.tensor(0.0), torch.tensor(0.0)
    return torch.stack(los).amin(), torch.stack(his).amax()


def normalised_view(cams: LayerView | torch.Tensor, kind: str = "local", size: tuple[int, int] | None = None,
                    bounds: tuple[torch.Tensor, torch.Tensor] | None = None) -> LayerView:
    """Raw CAMs scaled to [0, 1] as :func:`normalise` scales them, a run of layers at a time.

    Reading layers a to b of the view equals ``normalise(whole, kind, size)[a:b]`` bit for bit, and
    holds only those layers: ``local`` scales each layer by its own min and max, ``global`` by the
    network's (:func:`global_range`, one pass over the CAMs when the view is made, unless ``bounds``
    gives them).

    Args:
        cams: raw CAMs (L, H, W) whole, or a view of them (:class:`camanim.compute.LazyCams`).
        kind: ``"local"`` or ``"global"``.
        size: (h, w): each layer resized to this size (bilinear), scaled by its full-size min and max.
        bounds: for ``global``, the network's (min, max) when already known.

    Returns:
        A :class:`camanim.compute.LayerView` of float32 maps (L, H, W) (or (L, *size)) in [0, 1].

    Raises:
        ValueError: If ``kind`` is not one of :data:`NORMALISATIONS`.
    """
    _check(kind)
    view = _as_view(cams)
    if kind == "global":
        lo, hi = bounds if bounds is not None else global_range(view)

    def scaled(part: torch.Tensor) -> torch.Tensor:
        x = _finite(part.detach().cpu() if size is not None else part.detach())
        if x.numel() == 0:
            return x.clone()
        a, b = _layer_range(x) if kind == "local" else (lo.to(x.device), hi.to(x.device))
        return scale(_resized(x, size), a, b)

    tail = view.shape[1:] if size is None or len(view.shape) != 3 else tuple(size)
    return view.map(scaled, tail)
