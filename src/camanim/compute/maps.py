"""From a trace to raw CAMs: per layer weights x activations -> ReLU -> upsample to input size.

Layers that share one output tensor (``same_as``) are computed once. Upsampling is batched
per layer resolution, in torch, on the model's device. A run keeps its CAMs at layer resolution
(:class:`LazyCams`) and upsamples a run of layers when it is read (:class:`LayerView`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
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
    # Bilinear resizing is separable: two matrix products with the per-axis weights (Wy @ map @ Wx^T),
    # which BLAS runs faster than the interpolation kernel does for one-channel maps. Each map is
    # multiplied on its own, never folded with its neighbours into one taller product: a BLAS may
    # sum a product's rows in another order when there are more of them (seen on an AVX-512 CPU),
    # and a layer must be the same bits however many layers are read with it (LazyCams' reads).
    # Consecutive layers of one resolution share the weights. A shared map (``same_as``) is resized again.
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
        wxt = _interpolation(w, size[1]).to(device).T
        for one, row in zip(maps, rows):
            torch.mm(wy, torch.mm(one, wxt), out=row)
    return out


#: how many bytes of input-size maps a chunk of layers holds at most (a view reads this much at a time)
CHUNK_BYTES = 16 * 2**20
#: the most layers a chunk holds
CHUNK_LAYERS = 64


class LayerView:
    """A stack of per-layer tensors (L, ...) made a run of layers at a time, never held whole.

    Indexing reads only the layers asked for: ``view[i]`` is layer i's tensor, ``view[a:b]`` (step 1)
    the stack of layers a to b-1, and a list, an integer tensor or a bool mask of layers their
    stack (a tuple indexes the first axis, then the picked tensor). :meth:`tensor` builds the whole
    stack (``L x prod(shape[1:]) x 4`` bytes in float32); :meth:`chunks` walks it a run at a time.
    The last run read is kept, so the same run read again (local, then global frames) is made once.

    Args:
        length: L, the number of layers.
        tail: the shape of one layer's tensor.
        rows: ``rows(start, stop)`` -> the tensor (stop - start, *tail) of those layers.
        dtype: the tensors' dtype (float32).
    """

    def __init__(self, length: int, tail: Sequence[int], rows: Callable[[int, int], torch.Tensor],
                 dtype: torch.dtype = torch.float32) -> None:
        self._length, self._tail, self._rows, self.dtype = int(length), tuple(int(s) for s in tail), rows, dtype
        self._last: tuple[int, int, torch.Tensor] | None = None

    def __len__(self) -> int:
        return self._length

    @property
    def shape(self) -> torch.Size:
        """(L, *tail), as a tensor's."""
        return torch.Size((self._length, *self._tail))

    @property
    def ndim(self) -> int:
        """The number of dimensions of the whole stack."""
        return 1 + len(self._tail)

    def rows(self, start: int, stop: int) -> torch.Tensor:
        """Layers ``start`` to ``stop - 1`` as one tensor (stop - start, *tail) (clipped to the stack).

        The run read last is kept and handed out again for the same run: read it, do not write into
        it (indexing, ``view[a:b]``, always makes its own).
        """
        start, stop = max(0, start), min(self._length, stop)
        if stop <= start:
            return torch.empty((0, *self._tail), dtype=self.dtype)
        last = self._last
        if last is not None and last[0] == start and last[1] == stop:
            return last[2]
        out = self._rows(start, stop)
        self._last = (start, stop, out)
        return out

    def _fresh(self, start: int, stop: int) -> torch.Tensor:
        if stop <= start:
            return torch.empty((0, *self._tail), dtype=self.dtype)
        return self._rows(start, stop)

    def __getitem__(self, index: Any) -> torch.Tensor:
        if isinstance(index, tuple):
            if not index:
                return self.tensor()
            return self[index[0]][index[1:]] if len(index) > 1 else self[index[0]]
        if isinstance(index, (int, np.integer)) and not isinstance(index, bool):
            i = int(index)
            if not -self._length <= i < self._length:
                raise IndexError(f"layer {i} is out of range for {self._length} layers")
            i %= self._length
            return self._fresh(i, i + 1)[0]
        if isinstance(index, slice):
            start, stop, step = index.indices(self._length)
            if step == 1:
                return self._fresh(start, stop)
            return self._pick(list(range(start, stop, step)))
        if isinstance(index, torch.Tensor) and index.ndim == 0:
            return self[int(index)]
        picked = torch.as_tensor(np.asarray(index.cpu() if isinstance(index, torch.Tensor) else index))
        if picked.dtype == torch.bool:
            if picked.shape != (self._length,):
                raise IndexError(f"a bool mask of {tuple(picked.shape)} for {self._length} layers")
            picked = picked.nonzero().flatten()
        if picked.ndim != 1:
            raise IndexError("index layers by an int, a slice, a 1-D list, integer tensor or bool mask")
        n = self._length
        idx = [int(i) for i in picked]
        if any(not -n <= i < n for i in idx):
            raise IndexError(f"a layer index is out of range for {n} layers")
        return self._pick([i % n for i in idx])

    def _pick(self, idx: list[int]) -> torch.Tensor:
        if not idx:
            return torch.empty((0, *self._tail), dtype=self.dtype)
        return torch.stack([self._fresh(i, i + 1)[0] for i in idx])

    def chunk_length(self, budget: int = CHUNK_BYTES) -> int:
        """How many layers a run of at most ``budget`` bytes (and :data:`CHUNK_LAYERS`) holds (at least 1)."""
        per_layer = max(1, math.prod(self._tail)) * 4
        return max(1, min(CHUNK_LAYERS, budget // per_layer))

    def chunks(self, length: int | None = None) -> Iterator[tuple[int, int, torch.Tensor]]:
        """``(start, stop, layers start..stop-1)`` over the stack, ``length`` layers at a time."""
        step = length or self.chunk_length()
        for start in range(0, self._length, step):
            stop = min(start + step, self._length)
            yield start, stop, self.rows(start, stop)

    def tensor(self) -> torch.Tensor:
        """The whole stack (L, *tail): made here, ``L x prod(tail) x 4`` bytes for float32."""
        out = None
        for start, stop, part in self.chunks():
            if out is None:
                out = torch.empty((self._length, *self._tail), dtype=part.dtype, device=part.device)
            out[start:stop] = part
        return out if out is not None else torch.empty((0, *self._tail), dtype=self.dtype)

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor], tail: Sequence[int] | None = None) -> LayerView:
        """A view of ``fn`` applied to each run of layers (``tail``: the shape ``fn`` makes of a layer's)."""
        return LayerView(self._length, self._tail if tail is None else tail,
                         lambda start, stop: fn(self.rows(start, stop)), self.dtype)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={tuple(self.shape)})"


class LazyCams(LayerView):
    """Raw CAMs (L, H, W) float32 ((L, D, H, W) for a volume), kept as layer-resolution maps and
    upsampled (:func:`upsample`, :func:`upsample_volumes`) only for the layers read.

    Every layer read is bit for bit the row of the whole upsampled stack (each layer's bilinear
    resizing is two matrix products of its own rows). Made from the maps (``maps``: one (h, w) or
    (d, h, w) map per layer, None for zeros; ``size``: the input's (H, W) or (D, H, W)), or around a
    stack already whole (:meth:`whole`: ``aug_smooth``'s averaged CAMs, a user's tensor).

    Attributes:
        maps: the layer maps (None for a view around a whole stack).
        size: the CAMs' size at input resolution.
    """

    def __init__(self, maps: Sequence[torch.Tensor | None] | None, size: Sequence[int], *,
                 whole: torch.Tensor | None = None) -> None:
        self.maps = list(maps) if maps is not None else None
        self.size = tuple(int(s) for s in size)
        self._whole = whole
        if whole is not None:
            super().__init__(len(whole), whole.shape[1:], self._sliced, whole.dtype)
        else:
            if self.maps is None:
                raise ValueError("LazyCams: give the layer maps, or a whole stack")
            super().__init__(len(self.maps), self.size, self._upsampled)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_last": None}  # pickled without the run kept for the next read

    def _sliced(self, start: int, stop: int) -> torch.Tensor:
        return self._whole[start:stop]  # type: ignore[index]

    @classmethod
    def whole(cls, cams: torch.Tensor) -> LazyCams:
        """A view around CAMs already whole (L, H, W) or (L, D, H, W): reading slices them."""
        return cls(None, cams.shape[1:], whole=cams)

    @classmethod
    def of(cls, cams: torch.Tensor | LazyCams) -> LazyCams:
        """``cams`` as a view (a tensor is wrapped, a view returned as it is)."""
        return cams if isinstance(cams, LazyCams) else cls.whole(cams)

    def stack(self) -> torch.Tensor:
        """The whole stack: the one this view is around, else made here (:meth:`tensor`, not kept)."""
        return self._whole if self._whole is not None else self.tensor()

    @property
    def whole_stack(self) -> torch.Tensor | None:
        """The stack this view is around (:meth:`whole`), or None for one made from layer maps."""
        return self._whole

    @property
    def device(self) -> torch.device:
        """Where the CAMs are made (the maps' device)."""
        if self._whole is not None:
            return self._whole.device
        ref = next((m for m in self.maps or [] if m is not None), None)
        return ref.device if ref is not None else torch.device("cpu")

    def _upsampled(self, start: int, stop: int) -> torch.Tensor:
        part = [None if m is None else m.unsqueeze(0) for m in self.maps[start:stop]]  # type: ignore[index]
        if len(self.size) == 3:
            return upsample_volumes(part, self.size, batch=1)[:, 0]
        return upsample(part, self.size, batch=1)[:, 0]
