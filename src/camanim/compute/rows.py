"""Several images, targets and methods in one call: rows in, one :class:`Row` per (image, target, method) out.

:func:`explain` stacks every (image, target) row of images of one input size into one batch, so a
single traced pass serves all of them (see :mod:`camanim.compute.engine`), and splits the result
back per row and method. :mod:`camanim.results` turns each :class:`Row` into a ``CamResult``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import InputError
from ..methods import CamMethod
from ..methods.guided import guided_backprop, guided_relus
from ..trace import (
    LayerRecord,
    TargetHead,
    Trace,
    class_logits,
    class_scores,
    eval_mode,
    logits_of,
    probability_kind,
    run_trace,
    split_distinct,
)
from .engine import Computation, compute_cams
from .maps import LazyCams
from .options import CamOptions
from .targets import (
    VALUE_TARGETS,
    BoxTarget,
    SegmentationTarget,
    TargetSpec,
    bind_targets,
    parse_target,
    rows_for,
)
from .vectors import UnitVectors, drop_non_spatial, unit_vectors

Progress = Callable[[str, int, int], None]


@dataclass
class Row:
    """The CAMs of one image, one target class and one method.

    Attributes:
        image: index of the image in the call's inputs.
        target: the explained class index.
        label: its name, when the model has labels.
        probability: the target's probability on the plain input: softmax, or sigmoid (``score="sigmoid"``
            and one-logit models; ``options["probability"]`` says which).
        method: the method's registry name.
        cams: raw CAMs (L, H, W) float32: after ReLU, upsampled to input size, not scaled, as a
            :class:`camanim.compute.LazyCams` (the layer maps, upsampled when read; the whole stack
            with ``aug_smooth``).
        maps: the same CAMs at layer resolution, one (h, w) map per layer ((d, h, w) for a volume; None
            where the CAM is zeros), whose upsampling (:func:`camanim.compute.maps.upsample`) :attr:`cams`
            is; None when :attr:`cams` is not one (``aug_smooth``).
        records: one per layer call, in execution order.
        input_tensor: the model input of this row (1, C, H, W).
        vectors: non-spatial layers' 1-D evidence.
        seconds: wall time per stage (``cams``, ``trace``, per method).
        options: what ``manifest.json`` records under ``options``.
        num_classes: the number of classes of the model's output (0 for a target on the model's output).
        top: the image's five most probable classes (fewer with fewer classes), most probable first:
            ``{"index", "label", "score"}`` with the same probability as ``probability``.
        guided: the row's guided backpropagation (C, H, W) with ``CamOptions.guided``, else None.
        kind: ``class`` (a class's score is explained) or ``value`` (a target on the model's output,
            explained by its value; ``target`` is -1, ``label`` its name, ``probability`` its value).
        head: for a ``value`` row, its target alone as a :class:`camanim.trace.TargetHead` (column 1),
            to score it again (ROAD).
        region: the (h, w) bool region a segmentation target reads (at the output's resolution), or None.
    """

    image: int
    target: int
    label: str | None
    probability: float
    method: str
    cams: LazyCams
    records: list[LayerRecord]
    input_tensor: torch.Tensor
    vectors: UnitVectors
    seconds: dict[str, float] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    top: list[dict[str, Any]] = field(default_factory=list)
    num_classes: int = 0
    guided: torch.Tensor | None = None
    kind: str = "class"
    head: TargetHead | None = None
    region: Any = None
    maps: list[torch.Tensor | None] | None = None


def _needs_logits(spec: TargetSpec) -> bool:
    return spec is not None and not isinstance(spec, (int, str, *VALUE_TARGETS))


def _check_value_targets(specs: Sequence[TargetSpec], methods: Sequence[CamMethod], options: CamOptions) -> bool:
    """Whether the targets are on the model's output (not classes); refuses what cannot explain them."""
    value = [isinstance(s, VALUE_TARGETS) for s in specs]
    if not any(value):
        return False
    if not all(value):
        raise InputError("give every image a target on the model's output, or every image a class: "
                         "the two cannot be mixed in one call")
    if isinstance(options.score, str) and options.score.strip().lower() != "logit" or callable(options.score):
        raise InputError(f"score '{options.score}' reads a class's probability: a target on the model's output is "
                         "explained by its value; drop --score")
    bad = [m.name for m in methods if getattr(m, "needs_classes", False)]
    if bad:
        raise InputError(f"method {', '.join(bad)} contrasts the target class with other classes: it cannot explain "
                         "a target on the model's output; use another method")
    if options.aug_smooth and any(isinstance(s, (SegmentationTarget, BoxTarget)) for s in specs):
        raise InputError("--aug-smooth flips the image, but a seg: target's mask and a box: target's box are fixed "
                         "on the plain image: drop --aug-smooth")
    if options.guided:
        raise InputError("--guided backpropagates a class's score through the ReLUs: a target on the model's "
                         "output has no guided frames; drop --guided")
    return True


def _specs(target: Any, n_images: int) -> list[TargetSpec]:
    """One parsed target spec per image."""
    if isinstance(target, (list, tuple)):
        if len(target) != n_images:
            raise InputError(f"{len(target)} targets for {n_images} images: give one target per image, or one for all")
        return [parse_target(t) for t in target]
    return [parse_target(target)] * n_images


def explain(
    module: nn.Module,
    inputs: Sequence[torch.Tensor],
    methods: Sequence[CamMethod],
    options: CamOptions,
    *,
    labels: Sequence[str] | None,
    num_classes: int | None,
    progress: Progress | None = None,
) -> list[Row]:
    """CAMs of every layer for every image, target and method.

    Args:
        module: the network.
        inputs: one (1, C, H, W) input per image, on the model's device. Images of one input size
            run as one batch: one traced pass for all of them and all their targets.
        methods: the methods, in the order asked.
        options: see :class:`CamOptions`; ``options.target`` is one spec for every image, or a list
            with one spec per image.
        labels: class names, to resolve a label target and name the explained class.
        num_classes: for range checks of the targets (None: checked against the logits).
        progress: called as ``progress(stage, done, total)``.

    Returns:
        The rows by image (input order), then target (as ranked), then method (as asked).

    Raises:
        InputError: a target list of the wrong length, an unknown label, a class out of range,
            ``skip_non_spatial`` leaving no layer, or what :func:`compute_cams` raises.
    """
    specs = _specs(options.target, len(inputs))
    value = _check_value_targets(specs, methods, options)
    # Resolve labels and indices before any pass: a bad label fails before any work.
    if not value:
        rows_for([s for s in specs if not _needs_logits(s)], labels, num_classes)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, x in enumerate(inputs):
        by_shape.setdefault(tuple(x.shape[1:]), []).append(i)
    out: list[Row] = []
    for image_ids in by_shape.values():
        out += _explain_batch(module, [inputs[i] for i in image_ids], image_ids, [specs[i] for i in image_ids],
                              methods, options, labels, num_classes, progress)
    return _ordered(out, methods)


def _explain_batch(module: nn.Module, xs: Sequence[torch.Tensor], image_ids: Sequence[int],
                   specs: Sequence[TargetSpec], methods: Sequence[CamMethod], options: CamOptions,
                   labels: Sequence[str] | None, num_classes: int | None, progress: Progress | None) -> list[Row]:
    """The rows of images of one input size, from one batch."""
    x_img = torch.cat(list(xs))
    if isinstance(specs[0], VALUE_TARGETS):
        return _explain_values(module, x_img, image_ids, specs, methods, options, progress)
    logits = None
    given = [s is not None for s in specs]
    if any(_needs_logits(s) for s in specs) or (any(given) and not all(given)):
        # topk needs the scores first; so does a mix of given and predicted targets
        with eval_mode(module), torch.inference_mode():
            logits = logits_of(module(x_img), options.output_key)
    per_image = rows_for(specs, labels, num_classes, logits)
    rows = [(k, t) for k, ts in enumerate(per_image) for t in ts]
    x_rows = x_img[[k for k, _ in rows]] if len(rows) != len(xs) else x_img
    tgts = None if all(t is None for _, t in rows) else [
        int(t) if t is not None else int(class_logits(logits)[k].argmax()) for k, t in rows]  # type: ignore[index]
    vectors_of: list[UnitVectors] = []

    def keep_vectors(tr: Trace) -> None:
        vectors_of.extend(unit_vectors(tr, r) for r in range(len(rows)))

    t0 = time.perf_counter()
    comp = compute_cams(module, x_rows, methods, options, targets=tgts,
                        image_index=torch.tensor([k for k, _ in rows]), on_trace=keep_vectors, progress=progress,
                        upsampled=options.aug_smooth)
    seconds = {"cams": time.perf_counter() - t0, **comp.seconds}
    guided = None
    if options.guided:  # once per (image, target), shared by every method and layer
        t1 = time.perf_counter()
        guided = guided_backprop(module, x_rows, comp.targets, options.output_key)
        seconds["guided"] = time.perf_counter() - t1
    out = []
    for r, (k, _) in enumerate(rows):
        for row in _split(comp, r, image_ids[k], x_rows[r:r + 1].detach(), vectors_of[r], len(rows),
                          methods, options, labels, seconds):
            row.guided = None if guided is None else guided[r]
            if guided is not None:  # 0: no guided rule applied, the guided image is the plain input gradient
                row.options["guided_relus"] = guided_relus(module)
            out.append(row)
    return out


def _explain_values(module: nn.Module, x_img: torch.Tensor, image_ids: Sequence[int], specs: Sequence[TargetSpec],
                    methods: Sequence[CamMethod], options: CamOptions, progress: Progress | None) -> list[Row]:
    """The rows of targets on the model's output: image ``k`` explains column ``k + 1`` of one head."""
    with eval_mode(module):
        bound = bind_targets(specs, module, x_img, options.output_key)
    if any(isinstance(s, BoxTarget) for s in specs):
        options = dataclasses.replace(options, layouts={**_detector_layouts(module, x_img, options, bound.head),
                                                        **options.layouts})
    vectors_of: list[UnitVectors] = []

    def keep_vectors(tr: Trace) -> None:
        vectors_of.extend(unit_vectors(tr, r) for r in range(len(specs)))

    t0 = time.perf_counter()
    comp = compute_cams(module, x_img, methods, dataclasses.replace(options, output_key=bound.head),
                        targets=list(range(1, len(specs) + 1)), image_index=torch.arange(len(specs)),
                        on_trace=keep_vectors, progress=progress, upsampled=options.aug_smooth)
    seconds = {"cams": time.perf_counter() - t0, **comp.seconds}
    out = []
    for r in range(len(specs)):
        for row in _split(comp, r, image_ids[r], x_img[r:r + 1].detach(), vectors_of[r], len(specs), methods,
                          options, None, seconds):
            value = float(comp.logits[r, r + 1])
            row.target, row.label, row.probability, row.num_classes = -1, bound.head.labels[r], value, 0
            row.kind, row.head, row.region = "value", bound.head.column(r), bound.regions[r]
            row.top = []  # no classes: the head's columns are placeholders, not a model's classes
            row.options.update(score="value", probability=None, target_kind="value")
            out.append(row)
    return out


def _detector_layouts(module: nn.Module, x: torch.Tensor, options: CamOptions, head: TargetHead) -> dict[str, str]:
    """``{layer: "NCHW"}`` for a detector's 4-D feature maps that layout detection leaves unplaced.

    torchvision's detectors take the images apart (``unbind``), resize and normalise each, and
    copy them into one padded batch (``GeneralizedRCNNTransform``): no layout rule follows that,
    so every feature map after it would be non-spatial. Each (B, C, h, w) map of such a CNN is
    channels-first over that batch, which covers the image (aspect kept; padded at the bottom and
    right to a multiple of 32 when the resized size is not one). One pass without gradients finds them.
    """
    with torch.no_grad():
        tr = run_trace(module, x, options.layers, gradients=False, keep_activations=False, output_key=head,
                       targets=list(range(1, len(head.fns) + 1)), layouts=options.layouts)
    return {rec.name: "NCHW" for rec in tr.records
            if rec.non_spatial and len(rec.shape) == 4 and rec.shape[0] == x.shape[0]}


def _split(comp: Computation, r: int, image: int, x: torch.Tensor, vectors: UnitVectors, n_rows: int,
           methods: Sequence[CamMethod], options: CamOptions, labels: Sequence[str] | None,
           seconds: dict[str, float]) -> list[Row]:
    """Batch row ``r`` of a computation, one :class:`Row` per method."""
    records = comp.records
    if n_rows > 1:
        records = [dataclasses.replace(rec, shape=(1, *rec.shape[1:])) if rec.shape and rec.shape[0] == n_rows
                   else rec for rec in records]
    keep = None
    _, distinct = split_distinct(options.layers)
    if options.skip_non_spatial or distinct:
        keep, records = drop_non_spatial(records, spatial=options.skip_non_spatial, distinct=distinct)
        if not records:
            raise InputError(f"all {len(comp.records)} selected layers are non-spatial and --skip-non-spatial leaves "
                             "none: select layers with a 2-D map, or drop --skip-non-spatial")
        vectors = vectors.subset(keep)
    tgt = int(comp.targets[r])
    kind = probability_kind(options.score if isinstance(options.score, str) else "custom", comp.logits.shape[1])
    scores = class_scores(comp.logits.float(), kind)[r]
    probability = float(scores[tgt])
    # ranked by the logits, first index first among equals (as the argmax that picked the target), not by the
    # probabilities: near-uniform softmax values of a random model round to ties in float32 and topk's pick among
    # ties could name another class as the prediction than the one explained
    indices = torch.sort(class_logits(comp.logits.float())[r], descending=True, stable=True).indices[:5]
    values = scores[indices]
    top = [{"index": int(i), "label": labels[int(i)] if labels and int(i) < len(labels) else None,
            "score": round(float(v), 6)} for v, i in zip(values, indices)]
    label = labels[tgt] if labels and tgt < len(labels) else None
    left_out = {"same_cam": 0, "non_spatial": 0}
    if keep is not None:
        kept = set(keep)
        for i, rec in enumerate(comp.records):
            if i not in kept:
                left_out["same_cam" if distinct and rec.same_as is not None else "non_spatial"] += 1
    manifest_options = {**options.manifest([m.name for m in methods]), "probability": kind,
                        "layers_recorded": len(comp.records), "layers_left_out": left_out}
    size = tuple(int(s) for s in comp.input_size)
    out = []
    for m in methods:
        maps = comp.maps.get(m.name)
        if maps is not None:
            maps = [None if c is None else c[r] for c in maps]
            maps = [maps[i] for i in keep] if keep is not None else maps
        if m.name in comp.cams:  # upsampled whole (aug_smooth: no layer maps)
            whole = comp.cams[m.name][:, r].contiguous()
            cams = LazyCams.whole(whole[keep] if keep is not None else whole)
        else:  # layer maps, upsampled when read
            cams = LazyCams(maps, size)
        out.append(Row(image=image, target=tgt, label=label, probability=probability, method=m.name, cams=cams,
                       records=list(records), input_tensor=x, vectors=vectors, seconds=dict(seconds),
                       options={**manifest_options, "extra_forwards": comp.forwards.get(m.name, 0),
                                "traced_passes": comp.forwards.get("trace", 0)},
                       num_classes=int(class_logits(comp.logits).shape[1]), top=top, maps=maps))
    return out


def _ordered(rows: list[Row], methods: Sequence[CamMethod]) -> list[Row]:
    """Rows by image (input order), then target (as ranked), then method (as asked)."""
    order = {m.name: i for i, m in enumerate(methods)}
    seen: dict[tuple[int, int], int] = {}
    for row in rows:
        seen.setdefault((row.image, row.target), len(seen))
    return sorted(rows, key=lambda row: (row.image, seen[(row.image, row.target)], order[row.method]))
