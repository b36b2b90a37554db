"""From a trace to raw CAMs: per layer weights x activations -> ReLU -> upsample to input size.

Layers that share one output tensor (``same_as``) are computed once. Upsampling is batched
per layer resolution, in torch, on the model's device.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .layouts import to_nchw
from .methods import CamMethod, LayerJob, MethodContext
from .trace import Trace


def layer_cams(trace: Trace, method: CamMethod, ctx: MethodContext | None = None,
               progress: Callable[[int, int], None] | None = None) -> list[torch.Tensor | None]:
    """Raw CAM per record at layer resolution, (B, h, w) after ReLU, or None for non-spatial layers.

    All spatial layers go to the method at once (:meth:`CamMethod.cam_batch`), so methods with extra
    forwards (ScoreCAM, AblationCAM) can batch them across layers. A record with ``same_as`` gets
    the very CAM of the record it shares its output with: computed once, for every method.
    """
    ctx = ctx or MethodContext()
    if ctx.targets is None:
        ctx.targets = trace.targets
    if ctx.logits is None:
        ctx.logits = trace.logits
    jobs: list[LayerJob] = []
    for i, rec in enumerate(trace.records):
        act = trace.activations[i]
        if rec.same_as is not None or act is None:
            continue
        maps = to_nchw(act, rec.layout)
        if maps is None:
            continue
        grad = trace.gradients[i] if trace.gradients else None
        g = to_nchw(grad, rec.layout) if grad is not None else None
        jobs.append(LayerJob(i, rec, maps.float(), g.float() if g is not None else None, act))
    with torch.no_grad():
        cams = method.cam_batch(jobs, ctx, progress=progress)
    out: list[torch.Tensor | None] = [None] * len(trace.records)
    for job, cam in zip(jobs, cams, strict=True):
        out[job.index] = torch.nan_to_num(cam.detach(), nan=0.0, posinf=0.0, neginf=0.0).clamp_(min=0)
    for i, rec in enumerate(trace.records):
        if rec.same_as is not None:
            out[i] = out[rec.same_as]
    return out


def upsample(cams: list[torch.Tensor | None], size: tuple[int, int], batch: int = 1) -> torch.Tensor:
    """Stack per-layer maps into (L, B, H, W) at input ``size``, bilinear (as cv2.resize), zeros for None."""
    ref = next((c for c in cams if c is not None), None)
    device = ref.device if ref is not None else torch.device("cpu")
    out = torch.empty((len(cams), batch, *size), dtype=torch.float32, device=device)
    # Consecutive layers of one resolution (execution order keeps them together) are interpolated
    # in one call straight into their rows (the ``out=`` form of the op F.interpolate calls): few
    # large ops, no zero-fill of the stack, no large temporaries, no scattered writes. A shared map
    # (``same_as``) is simply interpolated again in its run.
    runs: list[tuple[int, int]] = []
    for i, c in enumerate(cams):
        if c is None:
            out[i].zero_()
        elif runs and runs[-1][1] == i and cams[i - 1].shape[-2:] == c.shape[-2:]:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    for start, stop in runs:
        n, hw = stop - start, tuple(cams[start].shape[-2:])
        flat = torch.stack(cams[start:stop]).reshape(n * batch, 1, *hw).float()
        if hw == tuple(size):
            out[start:stop] = flat.view(n, batch, *size)
        else:
            torch.ops.aten.upsample_bilinear2d.out(flat, list(size), False, None, None,
                                                   out=out[start:stop].view(n * batch, 1, *size))
    return out
