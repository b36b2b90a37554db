"""From a trace to raw CAMs: per layer weights x activations -> ReLU -> upsample to input size.

Layers that share one output tensor (``same_as``) are computed once. Upsampling is batched
per layer resolution, in torch, on the model's device.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import torch
import torch.nn.functional as F

from .layouts import to_nchw
from .methods import CamMethod, MethodContext
from .trace import Trace


def layer_cams(trace: Trace, method: CamMethod, ctx: MethodContext | None = None,
               progress: Callable[[int, int], None] | None = None) -> list[torch.Tensor | None]:
    """Raw CAM per record at layer resolution, (B, h, w) after ReLU, or None for non-spatial layers."""
    ctx = ctx or MethodContext()
    out: list[torch.Tensor | None] = []
    total = len(trace.records)
    for i, rec in enumerate(trace.records):
        if rec.same_as is not None:
            out.append(out[rec.same_as])
            continue
        act = trace.activations[i]
        maps = to_nchw(act, rec.layout) if act is not None else None
        if maps is None:
            out.append(None)
            continue
        grad = trace.gradients[i] if trace.gradients else None
        g = to_nchw(grad, rec.layout) if grad is not None else None
        ctx.layer_name = rec.name
        with torch.no_grad():
            cam = method.cam(maps.float(), g.float() if g is not None else None, ctx)
            cam = torch.nan_to_num(cam, nan=0.0, posinf=0.0, neginf=0.0).clamp_(min=0)
        out.append(cam)
        if progress is not None:
            progress(i + 1, total)
    return out


def upsample(cams: list[torch.Tensor | None], size: tuple[int, int], batch: int = 1) -> torch.Tensor:
    """Stack per-layer maps into (L, B, H, W) at input ``size``, bilinear (as cv2.resize), zeros for None."""
    ref = next((c for c in cams if c is not None), None)
    device = ref.device if ref is not None else torch.device("cpu")
    out = torch.zeros((len(cams), batch, *size), dtype=torch.float32, device=device)
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    done: dict[int, int] = {}
    for i, c in enumerate(cams):
        if c is None:
            continue
        if id(c) in done:
            continue
        done[id(c)] = i
        groups[tuple(c.shape[-2:])].append(i)
    for hw, idx in groups.items():
        stack = torch.stack([cams[i] for i in idx])  # (n, B, h, w)
        n = stack.shape[0]
        flat = stack.reshape(n * batch, 1, *hw).float()
        if hw != tuple(size):
            flat = F.interpolate(flat, size=size, mode="bilinear", align_corners=False)
        out[idx] = flat.reshape(n, batch, *size)
    for i, c in enumerate(cams):
        if c is not None and done[id(c)] != i:
            out[i] = out[done[id(c)]]
    return out
