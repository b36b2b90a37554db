"""The CAM engine: every row (image x target), every method, every layer, from as few passes as possible.

Methods that differentiate the same score share ONE forward and ONE backward (the trace); a
method with its own score (FinerCAM) gets its own trace. Methods with extra forwards (ScoreCAM,
AblationCAM, ShapleyCAM) batch them across channels and layers. Layers that share an output
tensor (``same_as``) are computed once, for every method.

``aug_smooth`` is pytorch-grad-cam's test-time augmentation, per layer: the CAMs of six inputs
(horizontal flip x multiply by 0.9, 1, 1.1), each min-max scaled to [0, 1] at input size as
pytorch-grad-cam scales a layer's CAM, flipped back, and averaged. Raw CAMs are kept unscaled
elsewhere (global normalisation needs each layer's magnitude), so the average is multiplied by
the layer's mean raw range (max - min) over the six inputs: after local normalisation it is
exactly pytorch-grad-cam's smoothed CAM of that layer. Every augmentation explains the same
class (the one chosen on the plain input); pytorch-grad-cam, given no target, re-picks the
predicted class per augmented copy.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import InputError
from ..memory import Freed
from ..methods import CamMethod, MethodContext, ScoreFn, get_method, list_methods, score_function
from ..trace import LayerRecord, Trace, run_trace
from .maps import layer_cams, layer_maps, one_cam, one_layer_at_a_time, shared, upsample, upsample_volumes
from .options import CamOptions
from .targets import check_classes

Progress = Callable[[str, int, int], None]

#: pytorch-grad-cam's default ``tta_transforms``: HorizontalFlip x Multiply([0.9, 1, 1.1])
AUGMENTATIONS: tuple[tuple[bool, float], ...] = tuple((flip, f) for flip in (False, True) for f in (0.9, 1.0, 1.1))


@dataclass
class Computation:
    """What the engine computed for a batch of rows.

    Attributes:
        records: one per layer call, in execution order (shared by every row and method).
        logits: (R, K) on the plain input.
        targets: (R,) the explained class of each row.
        cams: method name -> raw CAMs (L, R, H, W), after ReLU, upsampled, not scaled.
        maps: method name -> the same CAMs at layer resolution, one (R, h, w) map per layer ((R, d, h, w)
            for a volume; None for a layer without a map, whose CAM is zeros), from which :attr:`cams`
            was upsampled (:func:`camanim.compute.maps.upsample`); empty where :attr:`cams` is not an
            upsampling of layer maps (``aug_smooth`` averages maps scaled at input size).
        forwards: method name -> extra forward batches the method ran; ``"trace"``: traced passes.
        seconds: wall time per method and for the traces.
        input_size: the input's spatial size, (H, W) or (D, H, W): the size :attr:`cams` are upsampled to.
    """

    records: list[LayerRecord]
    logits: torch.Tensor
    targets: torch.Tensor
    cams: dict[str, torch.Tensor]
    forwards: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    maps: dict[str, list[torch.Tensor | None]] = field(default_factory=dict)
    input_size: tuple[int, ...] = ()


def _groups(methods: Sequence[CamMethod], base: ScoreFn) -> list[tuple[ScoreFn, list[CamMethod]]]:
    """Methods by the score they differentiate: those on ``base`` share one trace, first."""
    shared = [m for m in methods if m.target_score(base) is base]
    groups: list[tuple[ScoreFn, list[CamMethod]]] = [(base, shared)] if shared else []
    groups += [(m.target_score(base), [m]) for m in methods if m not in shared]
    return groups


def _one_pass(model: nn.Module, x: torch.Tensor, methods: Sequence[CamMethod], options: CamOptions, *,
              targets: Sequence[int] | torch.Tensor | None, image_index: torch.Tensor | None, base: ScoreFn,
              on_trace: Callable[[Trace], None] | None, progress: Progress | None,
              upsampled: bool = True) -> Computation:
    """Every method's raw CAMs (L, R, H, W) for one input batch (L, R, D, H, W for volumes): one trace per score group."""
    volume = x.ndim == 5
    size = tuple(int(s) for s in x.shape[2:]) if volume else (int(x.shape[-2]), int(x.shape[-1]))
    cams: dict[str, torch.Tensor] = {}
    maps: dict[str, list[torch.Tensor | None]] = {}
    forwards: dict[str, int] = {"trace": 0}
    seconds: dict[str, float] = {"trace": 0.0}
    first: tuple[list[LayerRecord], torch.Tensor, torch.Tensor] | None = None  # records, logits, targets
    for score, group in _groups(methods, base):
        gradients = any(m.uses_gradients for m in group)
        ctxs = {m.name: MethodContext(model=model, input_tensor=x, score=score, image_index=image_index,
                                      batch_size=int(options.batch_size or 8), output_key=options.output_key,
                                      generator=torch.Generator().manual_seed(options.seed),
                                      eigen_smooth=options.eigen_smooth)
                for m in group}
        # Methods that take one layer at a time from its activation and gradient get each layer
        # during the backward, as its gradient arrives (nothing kept for later, nothing read twice).
        sink = (CamSink(group, ctxs, progress) if gradients and all(_in_backward(m) for m in group) else None)
        t0 = time.perf_counter()
        tr = run_trace(model, x, options.layers, targets=targets, gradients=gradients, output_key=options.output_key,
                       score=score, sink=sink, layouts=options.layouts)
        if sink is not None:
            sink.finish()
        seconds["trace"] += time.perf_counter() - t0
        forwards["trace"] += 1
        if first is None:
            check_classes(tr.logits, tr.targets)
            first = (tr.records, tr.logits, tr.targets)  # not the trace: its tensors go with it
            targets = tr.targets
            if on_trace is not None:
                on_trace(tr)
        elif len(tr.records) != len(first[0]):
            raise RuntimeError("the model recorded a different number of layers on a second pass")
        for m in group:
            t0 = time.perf_counter()
            ctx = ctxs[m.name]
            ctx.targets, ctx.logits = tr.targets, tr.logits
            if sink is not None:
                per_layer = sink.per_layer(m.name, tr.records)
            else:
                cb = (lambda d, t, n=m.name: progress(f"cams {n}", d, t)) if progress else None
                per_layer = layer_cams(tr, m, ctx, progress=cb)
            maps[m.name] = per_layer
            if upsampled:
                cams[m.name] = (upsample_volumes(per_layer, size, batch=int(x.shape[0])) if volume
                                else upsample(per_layer, size, batch=int(x.shape[0])))
            forwards[m.name] = ctx.forwards
            seconds[m.name] = time.perf_counter() - t0 + (sink.seconds.get(m.name, 0.0) if sink else 0.0)
        if sink is not None:
            seconds["trace"] -= sum(sink.seconds.values())
        del tr
    assert first is not None
    return Computation(*first, cams, forwards, seconds, maps, tuple(size))


def _in_backward(method: CamMethod) -> bool:
    return method.uses_gradients and method.per_layer and one_layer_at_a_time(method)


class CamSink:
    """Computes the CAMs of every method of a group as the backward hands over each layer."""

    def __init__(self, methods: Sequence[CamMethod], ctxs: dict[str, MethodContext],
                 progress: Progress | None) -> None:
        self.methods, self.ctxs, self.progress = methods, ctxs, progress
        self.cams: dict[str, dict[int, torch.Tensor]] = {m.name: {} for m in methods}
        self.seconds: dict[str, float] = {m.name: 0.0 for m in methods}
        self.total = self.done = 0
        # Each layer's saved tensors are freed as the backward passes it, between the maps'
        # temporaries: give that memory back as it goes (camanim.memory), or the backward's
        # resident memory climbs by what glibc keeps (1 GB over EfficientNet-B7 at 600 px). Only
        # while it is above where the backward started: below that the backward adds nothing to the
        # pass's peak, and pages given back are pages the next allocations fault in again (memory.Freed).
        self.freed = Freed(above_start=True)

    def start(self, logits: torch.Tensor, targets: torch.Tensor, total: int) -> None:
        """Before the backward: the logits (R, K) and targets (R,) every method's context needs.

        A pass that runs again (a recorded value changed behind the trace's back) starts again: the
        maps of the void one are dropped.
        """
        for ctx in self.ctxs.values():
            ctx.targets, ctx.logits = targets, logits
        for got in self.cams.values():
            got.clear()
        self.total, self.done = total, 0
        self.freed.start()

    def layer(self, index: int, record: LayerRecord, activation: torch.Tensor, gradient: torch.Tensor) -> bool:
        """Every method's raw map (R, h, w) of layer ``index``; False for a non-spatial layer (kept by the trace)."""
        pair = layer_maps(record, activation, gradient)
        if pair is None:
            return False  # a non-spatial layer: the trace keeps it (its 1-D evidence is drawn)
        for m in self.methods:
            t0 = time.perf_counter()
            self.cams[m.name][index] = one_cam(m, self.ctxs[m.name], record, *pair)
            self.seconds[m.name] += time.perf_counter() - t0
        self.done += 1
        self.freed.add(activation.numel() * activation.element_size())
        if self.progress is not None:
            for m in self.methods:
                self.progress(f"cams {m.name}", self.done, self.total)
        return True

    def finish(self) -> None:
        """After the backward: what it freed and did not give back goes back now, once, so the stages
        after it start from what the process holds."""
        self.freed.finish()

    def per_layer(self, name: str, records: Sequence[LayerRecord]) -> list[torch.Tensor | None]:
        """Method ``name``'s maps in record order (None where it made none; shared outputs share a map)."""
        got = self.cams[name]
        return shared([got.get(i) for i in range(len(records))], records)


def check_volume_methods(methods: Sequence[CamMethod], options: CamOptions) -> None:
    """Refuse what camanim cannot compute right on a volume (B, C, D, H, W), in one line.

    Raises:
        InputError: a method without :attr:`CamMethod.volumes` (ScoreCAM, AblationCAM, plugins), or
            ``aug_smooth`` (its flips and scaling are 2-D).
    """
    bad = [m.name for m in methods if not m.volumes]
    if bad:
        ok = ", ".join(sorted(m for m in list_methods() if get_method(m).volumes))
        raise InputError(f"method {', '.join(bad)} works on 2-D images only (its maps of a volume would be wrong): "
                         f"for volumes use {ok}")
    if options.aug_smooth:
        raise InputError("--aug-smooth works on 2-D images only: drop it for volumes")


def _checked(score: ScoreFn) -> ScoreFn:
    """``score`` that first checks the targets against the logits (a clear error, not an index error)."""

    def checked(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        check_classes(logits, targets.view(-1))
        return score(logits, targets)

    checked.__name__ = getattr(score, "__name__", "score")
    return checked


def augment(x: torch.Tensor, flip: bool, factor: float) -> torch.Tensor:
    """One test-time augmentation of an input batch (ttach's HorizontalFlip and Multiply)."""
    y = x * factor if factor != 1.0 else x
    return y.flip(-1) if flip else y


def compute_cams(
    model: nn.Module,
    x: torch.Tensor,
    methods: Sequence[CamMethod],
    options: CamOptions = CamOptions(),
    *,
    targets: Sequence[int] | torch.Tensor | None = None,
    image_index: torch.Tensor | None = None,
    on_trace: Callable[[Trace], None] | None = None,
    progress: Progress | None = None,
    upsampled: bool = True,
) -> Computation:
    """Raw CAMs of every layer for every row of ``x`` and every method.

    Args:
        model: the network (its train/eval flags are restored).
        x: (R, C, H, W), one row per (image, target), on the model's device.
        methods: the methods; those differentiating the same score share one trace.
        options: layers, score, smoothing, batch size, seed, output key and layouts (:class:`CamOptions`;
            its ``target`` is not read here: ``targets`` are already resolved).
        targets: class per row (None: each row's predicted class).
        image_index: (R,) which image each row shows; rows of one image share perturbation forwards.
        on_trace: called with the first trace of the plain input (to keep more of it than the CAMs).
        progress: called as ``progress(stage, done, total)``.
        upsampled: False: the CAMs at layer resolution only (``maps``; ``cams`` stays empty), the
            upsampling to input size left out (for callers that work at layer resolution).

    Returns:
        A :class:`Computation`; its ``cams[name]`` are (L, R, H, W) float32, after ReLU, not scaled;
        for a volume ``x`` (R, C, D, H, W), (L, R, D, H, W); its ``maps[name]`` the same at layer resolution.

    Raises:
        InputError: a target class out of range, a layer pattern that selects nothing, a model
            output without (batch, classes) logits, or a method or option that works on 2-D images
            only for a volume.
        RuntimeError: an augmented input recorded a different number of layers.
        ValueError: ``upsampled=False`` with ``aug_smooth`` (its maps are averaged at input size).
    """
    options = options.for_device(x.device.type)
    if not upsampled and options.aug_smooth:
        raise ValueError("aug_smooth averages maps scaled at input size: it needs upsampled=True")
    if x.ndim == 5:
        check_volume_methods(methods, options)
    base = _checked(score_function(options.score))
    kw = dict(image_index=image_index, base=base, progress=progress)
    plain = _one_pass(model, x, methods, options, targets=targets, on_trace=on_trace, upsampled=upsampled, **kw)
    if not options.aug_smooth:
        return plain
    total = {name: torch.zeros_like(c) for name, c in plain.cams.items()}
    spans = {name: torch.zeros(c.shape[:2], dtype=c.dtype, device=c.device) for name, c in plain.cams.items()}
    forwards, seconds = dict(plain.forwards), dict(plain.seconds)
    for flip, factor in AUGMENTATIONS:
        if (flip, factor) == (False, 1.0):
            comp = plain
        else:
            comp = _one_pass(model, augment(x, flip, factor), methods, options, targets=plain.targets,
                             on_trace=None, **kw)
            if len(comp.records) != len(plain.records):
                raise RuntimeError("an augmented input recorded a different number of layers")
            for k, v in comp.forwards.items():
                forwards[k] = forwards.get(k, 0) + v
            for k, v in comp.seconds.items():
                seconds[k] = seconds.get(k, 0.0) + v
        for name, c in comp.cams.items():
            lo = c.amin(dim=(2, 3), keepdim=True)
            span = c.amax(dim=(2, 3), keepdim=True) - lo
            # pytorch-grad-cam scales twice with an eps of 1e-7 (before and after its resize), which
            # comes to an exact min-max scaling even for maps far smaller than the eps.
            scaled = torch.where(span > 0, (c - lo) / torch.where(span > 0, span, 1.0), 0.0)
            total[name] += scaled.flip(-1) if flip else scaled
            spans[name] += span[:, :, 0, 0]
    n = len(AUGMENTATIONS)
    cams = {name: (total[name] / n) * (spans[name] / n)[:, :, None, None] for name in total}
    return Computation(plain.records, plain.logits, plain.targets, cams, forwards, seconds,
                       input_size=plain.input_size)
