"""From a trace to raw CAMs: per layer weights x activations -> ReLU -> upsample to input size.

Layers that share one output tensor (``same_as``) are computed once. Upsampling is batched
per layer resolution, in torch, on the model's device.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F

from ..methods import CamMethod, LayerJob, MethodContext
from ..trace import LayerRecord, Trace
from ..trace.layouts import to_nchw, volume_size


def layer_cams(trace: Trace, method: CamMethod, ctx: MethodContext | None = None,
               progress: Callable[[int, int], None] | None = None) -> list[torch.Tensor | None]:
    """Raw CAM per record at layer resolution, (B, h, w) after ReLU, or None for non-spatial layers.

    A method with its own :meth:`CamMethod.cam_batch` gets all spatial layers at once, so methods with extra
    forwards (ScoreCAM, AblationCAM) can batch them across layers. A record with ``same_as`` gets
    the very CAM of the record it shares its output with: computed once, for every method.
    """
    ctx = ctx or MethodContext()
    if ctx.targets is None:
        ctx.targets = trace.targets
    if ctx.logits is None:
        ctx.logits = trace.logits
    # A method that takes its layers one at a time gets them one at a time: an activation the trace
    # recomputes (see camanim.trace.Activations) then lives only while its CAM is computed.
    streaming = one_layer_at_a_time(method)
    acts, grads = trace.activations, trace.gradients
    read = acts.peek if streaming and hasattr(acts, "peek") else acts.__getitem__

    def jobs() -> Iterator[LayerJob]:
        for i, rec in enumerate(trace.records):
            if rec.same_as is not None or rec.non_spatial:
                continue
            act = read(i)
            pair = layer_maps(rec, act, grads[i] if grads else None) if act is not None else None
            if pair is not None:
                yield LayerJob(i, rec, pair[0], pair[1], act)

    out: list[torch.Tensor | None] = [None] * len(trace.records)
    with torch.no_grad():
        if streaming:
            kept = acts.kept if hasattr(acts, "kept") else (lambda i: acts[i] is not None)
            total = sum(1 for i, rec in enumerate(trace.records)
                        if rec.same_as is None and not rec.non_spatial and kept(i))
            for done, job in enumerate(jobs(), 1):
                out[job.index] = one_cam(method, ctx, job.record, job.acts, job.grads)
                if progress is not None:
                    progress(done, total)
        else:
            batch = list(jobs())
            for job, cam in zip(batch, method.cam_batch(batch, ctx, progress=progress), strict=True):
                out[job.index] = as_volume(clean_cam(cam), job.record)
    return shared(out, trace.records)


def one_layer_at_a_time(method: CamMethod) -> bool:
    """Whether ``method`` computes each layer's map on its own (the base :meth:`CamMethod.cam_batch`)."""
    return type(method).cam_batch is CamMethod.cam_batch


def layer_maps(record: LayerRecord, act: torch.Tensor,
               grad: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """A layer's activation and gradient as float32 (B, C, h, w), or None for a non-spatial layer.

    A volume (NCDHW) comes as (B, C, D, H*W) (see :mod:`camanim.trace.layouts`); :func:`as_volume`
    puts its map back as (B, D, H, W).
    """
    maps = to_nchw(act, record.layout)
    if maps is None:
        return None
    grads = to_nchw(grad, record.layout) if grad is not None else None
    if maps.dtype != torch.float32:
        maps = maps.float()
    if grads is not None and grads.dtype != torch.float32:
        grads = grads.float()
    return maps, grads


def one_cam(method: CamMethod, ctx: MethodContext, record: LayerRecord, maps: torch.Tensor,
            grads: torch.Tensor | None) -> torch.Tensor:
    """One layer's raw map by ``method`` (:meth:`CamMethod.cam`), cleaned as kept."""
    ctx.layer_name, ctx.record = record.name, record
    return as_volume(clean_cam(method.cam(maps, grads, ctx)), record)


def as_volume(cam: torch.Tensor, record: LayerRecord) -> torch.Tensor:
    """A volume layer's map (B, D, H*W) as (B, D, H, W); any other layer's map as it is."""
    dhw = volume_size(record.layout, record.shape) if record.shape else None
    return cam.reshape(cam.shape[0], *dhw) if dhw is not None else cam


def shared(cams: list[torch.Tensor | None], records: Sequence[LayerRecord]) -> list[torch.Tensor | None]:
    """``cams`` with each ``same_as`` record given the map of the record it shares its output with.

    The record gets that record's flags too (a method's "not applicable" among them: CAM's, LeGrad's),
    so a layer that shows a shared map is flagged exactly as the layer it shares it with.
    """
    for i, rec in enumerate(records):
        if rec.same_as is not None:
            cams[i] = cams[rec.same_as]
            for kind, why in records[rec.same_as].flags.items():
                rec.flags.setdefault(kind, why)
    return cams


def clean_cam(cam: torch.Tensor) -> torch.Tensor:
    """A raw map as kept: NaN and infinities zeroed, then ReLU."""
    return torch.nan_to_num(cam.detach(), nan=0.0, posinf=0.0, neginf=0.0).clamp_(min=0)


@functools.lru_cache(maxsize=64)
def _interpolation(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) weights of bilinear resizing along one axis, pixel centres aligned (cv2.resize,
    ``F.interpolate(..., align_corners=False)``)."""
    src = ((torch.arange(n_out, dtype=torch.float64) + 0.5) * (n_in / n_out) - 0.5).clamp(min=0)
    lo = src.floor().long().clamp(max=n_in - 1)
    hi = (lo + 1).clamp(max=n_in - 1)
    frac = src - lo
    w = torch.zeros(n_out, n_in, dtype=torch.float64)
    rows = torch.arange(n_out)
    w.index_put_((rows, lo), 1 - frac, accumulate=True)
    w.index_put_((rows, hi), frac, accumulate=True)
    return w.float()


def upsample_volumes(cams: list[torch.Tensor | None], size: tuple[int, int, int], batch: int = 1) -> torch.Tensor:
    """Stack per-layer volume maps (B, d, h, w) into (L, B, D, H, W) at input ``size``, zeros for None.

    Trilinear, pixel centres aligned (``F.interpolate(..., mode="trilinear", align_corners=False)``),
    the 3-D form of :func:`upsample`'s bilinear resizing.
    """
    ref = next((c for c in cams if c is not None), None)
    device = ref.device if ref is not None else torch.device("cpu")
    out = torch.zeros((len(cams), batch, *size), dtype=torch.float32, device=device)
    for i, c in enumerate(cams):
        if c is None:
            continue
        c = c.float()
        out[i] = c if tuple(c.shape[-3:]) == tuple(size) else F.interpolate(
            c.unsqueeze(1), size=size, mode="trilinear", align_corners=False).squeeze(1)
    return out


def upsample(cams: list[torch.Tensor | None], size: tuple[int, int], batch: int = 1,
             out: torch.Tensor | None = None) -> torch.Tensor:
    """Stack per-layer maps into (L, B, H, W) at input ``size``, bilinear (as cv2.resize), zeros for None.

    ``out``: a float32 (L, B, H, W) tensor to write into instead of a new one.
    """
    ref = next((c for c in cams if c is not None), None)
    device = ref.device if ref is not None else torch.device("cpu")
    if out is None:
        out = torch.empty((len(cams), batch, *size), dtype=torch.float32, device=device)
    # Consecutive layers of one resolution (execution order keeps them together) are resized in
    # one go, straight into their rows: bilinear resizing is separable, so it is two matrix
    # products with the per-axis weights (Wy @ maps @ Wx^T), which BLAS runs faster than the
    # interpolation kernel does for one-channel maps. A shared map (``same_as``) is resized again.
    runs: list[tuple[int, int]] = []
    for i, c in enumerate(cams):
        if c is None:
            out[i].zero_()
        elif runs and runs[-1][1] == i and cams[i - 1].shape[-2:] == c.shape[-2:]:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    for start, stop in runs:
        n, (h, w) = stop - start, cams[start].shape[-2:]
        maps = torch.stack(cams[start:stop]).reshape(n * batch, h, w).float()
        rows = out[start:stop].view(n * batch, *size)
        if (h, w) == tuple(size):
            rows.copy_(maps)
            continue
        wy = _interpolation(h, size[0]).to(device)
        wx = _interpolation(w, size[1]).to(device)
        torch.matmul(wy, torch.matmul(maps, wx.T), out=rows)
    return out
