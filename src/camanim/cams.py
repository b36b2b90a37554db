"""From a trace to raw CAMs: per layer weights x activations -> ReLU -> upsample to input size.

Layers that share one output tensor (``same_as``) are computed once. Upsampling is batched
per layer resolution, in torch, on the model's device.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator

import torch

from .layouts import to_nchw
from .methods import CamMethod, LayerJob, MethodContext
from .trace import Trace


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
    streaming = type(method).cam_batch is CamMethod.cam_batch
    acts, grads = trace.activations, trace.gradients
    read = acts.peek if streaming and hasattr(acts, "peek") else acts.__getitem__

    def jobs() -> Iterator[LayerJob]:
        for i, rec in enumerate(trace.records):
            if rec.same_as is not None or rec.non_spatial:
                continue
            act = read(i)
            maps = to_nchw(act, rec.layout) if act is not None else None
            if maps is None:
                continue
            grad = grads[i] if grads else None
            g = to_nchw(grad, rec.layout) if grad is not None else None
            yield LayerJob(i, rec, maps.float(), g.float() if g is not None else None, act)

    out: list[torch.Tensor | None] = [None] * len(trace.records)
    with torch.no_grad():
        if streaming:
            kept = acts.kept if hasattr(acts, "kept") else (lambda i: acts[i] is not None)
            total = sum(1 for i, rec in enumerate(trace.records)
                        if rec.same_as is None and not rec.non_spatial and kept(i))
            done = 0
            for job in jobs():
                ctx.layer_name, ctx.record = job.record.name, job.record
                out[job.index] = clean_cam(method.cam(job.acts, job.grads, ctx))
                done += 1
                if progress is not None:
                    progress(done, total)
        else:
            batch = list(jobs())
            for job, cam in zip(batch, method.cam_batch(batch, ctx, progress=progress), strict=True):
                out[job.index] = clean_cam(cam)
    for i, rec in enumerate(trace.records):
        if rec.same_as is not None:
            out[i] = out[rec.same_as]
    return out


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


def upsample(cams: list[torch.Tensor | None], size: tuple[int, int], batch: int = 1) -> torch.Tensor:
    """Stack per-layer maps into (L, B, H, W) at input ``size``, bilinear (as cv2.resize), zeros for None."""
    ref = next((c for c in cams if c is not None), None)
    device = ref.device if ref is not None else torch.device("cpu")
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
