"""What to explain: a class index or label, the predicted class, the top k classes, or a target defined
on the model's whole output (a callable, ``seg:CLASS``, ``similar:IMAGE``).

A run explains *rows*: one row per (image, target class). ``--target 285`` or ``--target "tiger cat"``
explains that class in every image; no target explains each image's own predicted class;
``--target topk:3`` explains each image's three highest-scoring classes, one row (and one output
folder) each. Rows of one image share its input; they are stacked into one batch, so a single
forward and a single backward serve every image and every target (pytorch-grad-cam, given one
target for a batch, explains image 0 only: here every row has its own target).

A target on the model's output explains one scalar per image that is not a class's logit: a
callable ``fn(output) -> (B,)`` (:class:`OutputTarget`), a segmentation class's scores summed over a
mask (:class:`SegmentationTarget`, ``seg:CLASS[,mask=PATH]``), the cosine similarity of the
image's embedding to a reference image's (:class:`SimilarityTarget`, ``similar:IMAGE``), or the
score of one detected box (:class:`BoxTarget`, ``box:N``). Each is
bound to the images it explains (:func:`bind_targets`: the predicted mask, the reference's
embedding, fixed from the plain inputs) into a :class:`camanim.trace.TargetHead`, which the trace,
the methods' extra forwards and ROAD read in place of the logits.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..errors import InputError
from ..sources import load_image, resolve_target
from ..trace import TargetHead, class_logits, describe_output, logits_of

_TOPK = re.compile(r"top-?k\s*[:=]\s*(\d+)", re.IGNORECASE)


@dataclass(frozen=True)
class TopK:
    """The k highest-scoring classes of each image."""

    k: int


@dataclass(frozen=True)
class OutputTarget:
    """A target a user defines: ``fn(output) -> (B,)``, one scalar per image from the model's output.

    ``output`` is what the model returns (a tensor, a dict such as torchvision's ``{"out": ...}``, a
    list of dicts), or its ``output_key`` entry when one is given. The CAM explains that scalar, by
    its value: every method, every layer, and ROAD (the change of the value).

    Attributes:
        fn: the callable; it must return a float tensor of shape (B,) and stay differentiable.
        label: how the report names it (default: the callable's ``repr``).
    """

    fn: Callable[[Any], torch.Tensor]
    label: str | None = None

    @property
    def name(self) -> str:
        """The label, or the callable's ``repr``."""
        return self.label if self.label else repr(self.fn)


@dataclass(frozen=True)
class SegmentationTarget:
    """A semantic segmentation class's scores summed over a mask (pytorch-grad-cam's ``SemanticSegmentationTarget``).

    The model's output (its ``out`` entry, or ``output_key``) is (B, K, h, w) class scores; the
    target of image b is ``sum_{y, x} out[b, category, y, x] * mask[y, x]``. The mask is the region
    predicted as ``category`` on the plain image (argmax over classes), or a mask image (any
    non-zero pixel is in it) at the model input's size (H, W, after its resize and crop) or at (h, w),
    resized (nearest) to (h, w); a mask of any other size is refused (``InputError``).

    Attributes:
        category: the class index.
        mask: a mask image file (or an (h, w) array), or None for the predicted region.
        origin: how the user wrote it, for messages (``--target seg:15`` from the command line,
            ``target='seg:15'`` from Python text); None: the object itself names it (:func:`written_as`).
    """

    category: int
    mask: Any = None
    origin: str | None = field(default=None, compare=False, repr=False)

    @property
    def name(self) -> str:
        """``seg:CLASS`` (with ``,mask=PATH`` when a mask file was given)."""
        return f"seg:{self.category}" + (f",mask={self.mask}" if isinstance(self.mask, str) else "")


@dataclass(frozen=True)
class SimilarityTarget:
    """Cosine similarity of the image's embedding to a reference image's (pytorch-grad-cam's tutorial
    ``SimilarityToConceptTarget``), for a backbone without a classifier.

    The embedding is the model's output (its ``output_key`` entry), flattened per image.

    Attributes:
        reference: the reference image (a path, ``sample:NAME``, a PIL image or array, or an input tensor).
        input: the reference as the model's input (1, C, H, W), set by :func:`camanim.animate`.
        origin: how the user wrote it, for messages (see :class:`SegmentationTarget`).
    """

    reference: Any
    input: torch.Tensor | None = field(default=None, compare=False)
    origin: str | None = field(default=None, compare=False, repr=False)

    @property
    def name(self) -> str:
        """``similar:REFERENCE``."""
        return f"similar:{self.reference}" if isinstance(self.reference, str) else "similar:reference"


@dataclass(frozen=True)
class BoxTarget:
    """The score of one detected box, followed by IoU in later passes (pytorch-grad-cam's
    ``FasterRCNNBoxScoreTarget``), for detectors returning torchvision's list of dicts
    ``[{"boxes": (N, 4), "labels": (N,), "scores": (N,)}, ...]`` (Faster R-CNN, RetinaNet, FCOS).

    Detection ``index`` of the plain image (in the model's order: by score) fixes a box and its
    label; in every pass the target is ``IoU + score`` of the detection of that label that overlaps
    the box most, when the IoU is above ``iou``, else 0.

    Attributes:
        index: which detection of the plain image, from 0.
        iou: the IoU above which a detection of a later pass is the same box.
        origin: how the user wrote it, for messages (see :class:`SegmentationTarget`).
    """

    index: int
    iou: float = 0.5
    origin: str | None = field(default=None, compare=False, repr=False)

    @property
    def name(self) -> str:
        """``box:N``."""
        return f"box:{self.index}"


#: targets on the model's output, explained by their value rather than a class's score
VALUE_TARGETS = (OutputTarget, SegmentationTarget, SimilarityTarget, BoxTarget)

TargetSpec = int | str | TopK | OutputTarget | SegmentationTarget | SimilarityTarget | BoxTarget | None

_SEG = re.compile(r"seg\s*:\s*([^,]*)(?:,\s*mask\s*=\s*(.+))?", re.IGNORECASE)
#: the text forms of targets on the model's output
VALUE_PREFIXES = ("seg:", "box:", "similar:")
_ANOTHER = re.compile(r",\s*(?:seg|box|similar|top-?k)\s*[:=]", re.IGNORECASE)
_MASK = re.compile(r",\s*mask\s*=", re.IGNORECASE)


def written_as(spec: Any) -> str:
    """How a message names a target on the model's output: as the user wrote it (``--target seg:15`` on the
    command line, ``target='seg:15'`` as Python text, its ``origin``), else as the Python object it is
    (``SegmentationTarget(category=15)``, ``BoxTarget(index=2)``, ``SimilarityTarget(reference='ref.png')``)."""
    origin = getattr(spec, "origin", None)
    if origin:
        return origin
    if isinstance(spec, SegmentationTarget):
        return f"SegmentationTarget(category={spec.category}" + (
            "" if spec.mask is None else f", mask={_shown(spec.mask)}") + ")"
    if isinstance(spec, BoxTarget):
        return f"BoxTarget(index={spec.index}" + ("" if spec.iou == 0.5 else f", iou={spec.iou}") + ")"
    if isinstance(spec, SimilarityTarget):
        return f"SimilarityTarget(reference={_shown(spec.reference)})"
    if isinstance(spec, OutputTarget):
        return f"target {spec.name}"
    return repr(spec)


def _shown(value: Any) -> str:
    """A short form of a mask or reference in a message: a path as written, an array by its type and shape."""
    if isinstance(value, str) or hasattr(value, "__fspath__"):
        return repr(str(value))
    shape = getattr(value, "shape", None)
    if shape is None and isinstance(getattr(value, "size", None), tuple):  # a PIL image: (width, height)
        shape = value.size[::-1]
    return f"<{type(value).__name__}" + (f" {tuple(shape)}>" if shape is not None else ">")


def is_value_target(spec: Any) -> bool:
    """Whether ``spec`` is a target on the model's output (explained by its value), not a class."""
    return isinstance(parse_target(spec), VALUE_TARGETS)


def parse_target(spec: Any, *, cli: bool = False) -> TargetSpec:
    """``None`` (predicted class), a class index, a label, ``topk:K``, or a target on the model's output:
    a callable (:class:`OutputTarget`), ``seg:CLASS[,mask=PATH]``, ``similar:IMAGE``, ``box:N``.

    Args:
        spec: the target as given.
        cli: whether the text came from ``--target`` (messages name it so); else from Python (``target='...'``).

    Raises:
        InputError: ``topk:0`` or a malformed ``topk``, ``seg:``, ``similar:`` or ``box:``, or one of these
            text forms holding another target after a comma (``seg:15,seg:7``: one target per image is a list,
            or ``--target`` once per image).
    """
    if spec is None or isinstance(spec, (int, TopK, *VALUE_TARGETS)):
        return spec
    if callable(spec) and not isinstance(spec, str):
        return OutputTarget(spec)
    text = str(spec).strip()
    low = text.lower()
    where = f"--target '{text}'" if cli else f"target={text!r}"
    origin = f"--target {text}" if cli else f"target={text!r}"
    if low.startswith(VALUE_PREFIXES) and _ANOTHER.search(text):
        raise InputError(f"{where} holds several targets: give one per image, "
                         + ("repeating --target (--target seg:15 --target seg:7)" if cli else
                            "as a list (target=['seg:15', 'seg:7'])"))
    if low.startswith("seg:"):
        m = _SEG.fullmatch(text)
        if m is None or not m.group(1).strip().isdigit():
            raise InputError(f"{where}: write seg:CLASS with a class index, e.g. seg:15 or seg:15,mask=mask.png")
        return SegmentationTarget(int(m.group(1)), m.group(2).strip() if m.group(2) else None, origin=origin)
    if low.startswith("box:"):
        n = text.split(":", 1)[1].strip()
        if not n.isdigit():
            raise InputError(f"{where}: write box:N, the N-th detection (from 0), e.g. box:0")
        return BoxTarget(int(n), origin=origin)
    if low.startswith("similar:"):
        ref = text.split(":", 1)[1].strip()
        if not ref:
            raise InputError(f"{where}: write similar:IMAGE, the reference image, e.g. similar:ref.png")
        return SimilarityTarget(ref, origin=origin)
    if text.lower().startswith("top"):
        m = _TOPK.fullmatch(text)
        if m is None or int(m.group(1)) < 1:
            raise InputError(f"{where}: write topk:K with K >= 1, e.g. topk:3")
        return TopK(int(m.group(1)))
    return text


def is_multi_target(spec: TargetSpec | Sequence[TargetSpec]) -> bool:
    """Whether ``spec`` gives several rows per image (``topk:K``; a list is one target per image)."""
    if isinstance(spec, (list, tuple)):
        return any(is_multi_target(s) for s in spec)
    return isinstance(parse_target(spec), TopK)


def rows_for(specs: Sequence[TargetSpec], labels: Sequence[str] | None, num_classes: int | None,
             logits: torch.Tensor | None = None) -> list[list[int | None]]:
    """Target classes per image: ``[[285], [None], [281, 285, 282]]`` (None: the predicted class).

    Args:
        specs: one spec per image (already parsed with :func:`parse_target`, or raw).
        labels: class names, to resolve a label.
        num_classes: for range checks (None: not checked here).
        logits: (images, classes); needed for ``topk``.

    Raises:
        InputError: an unknown label, a class out of range, or k larger than the number of classes.
    """
    out: list[list[int | None]] = []
    for i, raw in enumerate(specs):
        spec = parse_target(raw)
        if isinstance(spec, TopK):
            if logits is None:
                raise ValueError("topk targets need the logits")
            cols = class_logits(logits)  # a one-logit model has two classes
            classes = cols.shape[1]
            if spec.k > classes:
                raise InputError(f"--target topk:{spec.k} asks for more classes than the model has ({classes})")
            out.append([int(c) for c in cols[i].float().topk(spec.k).indices.tolist()])
        elif spec is None:
            out.append([None])
        else:
            out.append([resolve_target(spec, list(labels) if labels else None,
                                       classes_of(num_classes) if num_classes is not None else 10**9)])
    return out


def per_image(spec: str | Sequence[str] | None, n_images: int, labels: Sequence[str] | None) -> TargetSpec | list:
    """``--target`` text as the run's target: the option given once (for every image, or a comma list of
    classes, one per image) or once per image.

    Given once, it is a class index or label, ``topk:K``, or a target on the model's output
    (``seg:CLASS[,mask=PATH]``, ``box:N``, ``similar:IMAGE``) for every image, or one class per image
    separated by commas (``281,eel``; a label that itself contains a comma is one class for every
    image). Given once per image (``--target seg:15,mask=m.png --target seg:7``), each is that image's
    target, whole: its commas are its own. Targets on the model's output are given one per ``--target``:
    with several images, a comma that is not ``seg:``'s ``,mask=`` could be either (another image's target,
    or part of a file name), and is refused.

    Args:
        spec: the ``--target`` values (one string, or one per time the option was given), or None.
        n_images: the number of images of the run.
        labels: the model's class names, to keep a label with a comma whole.

    Returns:
        None, one target for every image, or a list with one per image; parsed (:func:`parse_target`,
        whose messages then say ``--target``).

    Raises:
        InputError: an empty entry, a number of entries other than the number of images, a comma list
            holding a ``seg:``, ``box:`` or ``similar:`` target, or such a target with a comma of unclear
            meaning with several images.
    """
    if spec is None:
        return None
    given = [spec] if isinstance(spec, str) else list(spec)
    if len(given) > 1:
        if len(given) != n_images:
            raise InputError(f"--target is given {len(given)} times for {n_images} image(s): give it once per "
                             "image, or once for all")
        return [parse_target(t, cli=True) for t in given]
    text = given[0].strip()
    low = text.lower()
    if low.startswith(VALUE_PREFIXES):
        body = _MASK.sub("=", text.split(":", 1)[1], count=1) if low.startswith("seg:") else text.split(":", 1)[1]
        if n_images > 1 and "," in body:
            raise InputError(f"--target '{text}' is ambiguous with {n_images} images (a comma in a {low.split(':')[0]}: "
                             "target): give --target once per image, e.g. --target seg:15,mask=m.png --target seg:7")
        return parse_target(text, cli=True)
    if "," not in text or low in {label.lower() for label in labels or ()}:
        return parse_target(text, cli=True)
    parts = [part.strip() for part in text.split(",")]
    if not all(parts):
        raise InputError(f"--target '{text}' has an empty entry: give one class per image, e.g. 281,eel")
    if any(part.lower().startswith(VALUE_PREFIXES) for part in parts):
        raise InputError(f"--target '{text}': seg:, box: and similar: targets are given one per --target: "
                         "give --target once per image, e.g. --target seg:15,mask=m.png --target seg:7")
    if len(parts) != n_images:
        raise InputError(f"--target '{text}' gives {len(parts)} targets for {n_images} image(s): "
                         "give one class per image, comma-separated, or one class for all")
    return parts


def classes_of(outputs: int) -> int:
    """The number of classes of a model with ``outputs`` logits: a one-logit model has two (0 and 1)."""
    return 2 if int(outputs) == 1 else int(outputs)


def check_classes(logits: torch.Tensor, targets: torch.Tensor) -> None:
    """Every explained class (R,) is a class of the model's output (R, K) (K = 1: classes 0 and 1).

    Raises:
        InputError: a class index outside [0, K).
    """
    classes = classes_of(logits.shape[1])
    bad = [int(t) for t in targets.view(-1).tolist() if not 0 <= int(t) < classes]
    if bad:
        raise InputError(f"target class {bad[0]} is out of range: the model has {classes} classes")


def _scores_of(output: object, output_key: str | int | None, spec: SegmentationTarget) -> torch.Tensor:
    """The (B, K, h, w) class scores of a segmentation model's output (its ``out`` entry)."""
    scores = logits_of(output, output_key)
    if scores.ndim != 4:
        raise InputError(f"{written_as(spec)} needs (batch, classes, height, width) scores, but the model "
                         f"returns {describe_output(output)}: use it with a segmentation model")
    if not 0 <= spec.category < scores.shape[1]:
        raise InputError(f"{written_as(spec)}: class {spec.category} is out of range: the model's output "
                         f"{tuple(scores.shape)} has {scores.shape[1]} classes (0 to {scores.shape[1] - 1})")
    return scores


def _mask_file(spec: SegmentationTarget, size: tuple[int, int], input_size: tuple[int, int]) -> np.ndarray:
    """The mask image of ``spec`` as a bool (h, w) array, resized (nearest) to the scores' ``size``.

    The mask must have the model input's size (after the resize and centre crop) or the output's: a mask
    of any other size (one drawn on the original photo) would be stretched onto the crop, explaining other
    pixels than the ones marked.

    Raises:
        InputError: a mask array that is not 2-D, or a mask of another size.
    """
    if isinstance(spec.mask, (str, bytes)) or hasattr(spec.mask, "__fspath__"):
        try:
            img, _ = load_image(spec.mask)
        except InputError as exc:  # say which image: the mask, not the one explained
            raise InputError(f"{written_as(spec)}: the mask: {exc}") from exc
        grey = img.convert("L")
    else:
        arr = np.asarray(spec.mask)
        if arr.ndim != 2:
            raise InputError(f"{written_as(spec)}: a mask array must be (height, width), not {arr.shape}")
        grey = Image.fromarray((arr != 0).astype(np.uint8) * 255)
    got = (grey.size[1], grey.size[0])
    if got not in (tuple(size), tuple(input_size)):
        raise InputError(f"{written_as(spec)}: the mask is {got[1]}x{got[0]}, but the model's input is "
                         f"{input_size[1]}x{input_size[0]} (after its resize and centre crop) and its output "
                         f"{size[1]}x{size[0]}: give the mask at one of those sizes (a mask of the original "
                         "photo would be stretched onto the crop)")
    return np.asarray(grey.resize((size[1], size[0]), Image.Resampling.NEAREST)) > 0


class _SegmentationScore:
    """``sum(out[:, category] * mask)`` per image, the score of :class:`SegmentationTarget`."""

    def __init__(self, category: int, mask: torch.Tensor) -> None:
        self.category, self.mask = category, mask

    def __call__(self, output: object) -> torch.Tensor:
        scores = logits_of(output, None) if not isinstance(output, torch.Tensor) else output
        return (scores[:, self.category] * self.mask.to(scores.device, scores.dtype)).sum(dim=(1, 2))


class _Similarity:
    """Cosine similarity of each image's flattened embedding to a reference embedding (D,)."""

    def __init__(self, embedding: torch.Tensor) -> None:
        self.embedding = embedding

    def __call__(self, output: object) -> torch.Tensor:
        emb = logits_of(output, None) if not isinstance(output, torch.Tensor) else output
        ref = self.embedding.to(emb.device, emb.dtype)
        return torch.nn.functional.cosine_similarity(emb.flatten(1), ref.view(1, -1), dim=1)


def _detections(output: object, spec: BoxTarget) -> list[dict]:
    """The per-image detection dicts of a detector's output (torchvision's list of dicts)."""
    if isinstance(output, (list, tuple)) and output and all(
            isinstance(o, dict) and {"boxes", "labels", "scores"} <= set(o) for o in output):
        return list(output)
    raise InputError(f"{written_as(spec)} needs a detector's output, a list of dicts with boxes, labels and "
                     f"scores per image, but the model returns {describe_output(output)}")


class _BoxScore:
    """pytorch-grad-cam's ``FasterRCNNBoxScoreTarget`` for one box, per image: ``IoU + score`` of the detection
    of ``label`` that overlaps ``box`` most, when the IoU is above ``iou``; else 0."""

    def __init__(self, box: torch.Tensor, label: int, iou: float) -> None:
        self.box, self.label, self.iou = box, label, iou

    def __call__(self, output: object) -> torch.Tensor:
        from torchvision.ops import box_iou

        values = []
        for det in output:  # type: ignore[attr-defined]
            boxes = det["boxes"]
            zero = boxes.new_zeros(()) if boxes.is_floating_point() else torch.zeros(())
            if len(boxes) == 0:
                values.append(zero)
                continue
            ious = box_iou(self.box.to(boxes.device, boxes.dtype)[None], boxes)
            index = ious.argmax()
            if ious[0, index] > self.iou and int(det["labels"][index]) == self.label:
                values.append(ious[0, index] + det["scores"][index])
            else:
                values.append(zero)
        return torch.stack(values)


def box_region(box: Sequence[float], size: tuple[int, int]) -> np.ndarray:
    """The (H, W) bool region of a box ``(x1, y1, x2, y2)`` in pixels (clipped to the image)."""
    h, w = size
    x1, y1, x2, y2 = (float(v) for v in box)
    region = np.zeros((h, w), bool)
    top, left = max(0, int(np.floor(y1))), max(0, int(np.floor(x1)))
    bottom, right = min(h, max(top + 1, int(np.ceil(y2)))), min(w, max(left + 1, int(np.ceil(x2))))
    region[top:bottom, left:right] = True
    return region


#: the names torchvision and timm give a classifier's head
HEAD_NAMES = frozenset({"fc", "classifier", "head", "heads", "last_linear"})


def classifier_head(module: torch.nn.Module, width: int) -> str | None:
    """The classification head whose ``width`` outputs are the model's output, or None (no such head: the
    output is an embedding, as far as the model says).

    Read from what the model says of itself: timm's ``get_classifier()`` (``nn.Identity`` on a
    backbone made with ``num_classes=0``), else the model's last ``nn.Linear``, when it has ``width``
    outputs and sits under a name torchvision and timm give heads (:data:`HEAD_NAMES`: ``fc``,
    ``classifier``, ``head``, ...).

    Returns:
        e.g. ``"fc, Linear(512 -> 1000)"``, or None.
    """
    getter = getattr(module, "get_classifier", None)
    if callable(getter):
        try:
            head = getter()
        except Exception:  # noqa: BLE001 - a model's own method; no head then
            head = None
        if isinstance(head, torch.nn.Module):
            linears = [m for m in head.modules() if isinstance(m, torch.nn.Linear)]
            if linears and linears[-1].out_features == width:
                name = next((n for n, m in module.named_modules() if m is linears[-1]), "classifier")
                return f"{name}, Linear({linears[-1].in_features} -> {width})"
            return None
    last = next(((n, m) for n, m in reversed(list(module.named_modules())) if isinstance(m, torch.nn.Linear)), None)
    if last is not None and last[1].out_features == width and HEAD_NAMES & set(last[0].split(".")):
        return f"{last[0]}, Linear({last[1].in_features} -> {width})"
    return None


@dataclass
class BoundTargets:
    """Targets on the model's output, bound to the images of a batch.

    Attributes:
        head: one column per row (:class:`camanim.trace.TargetHead`): row ``r`` explains class ``r + 1``.
        regions: per row, the (h, w) bool region the target reads (a segmentation mask), or None.
    """

    head: TargetHead
    regions: list[np.ndarray | None]


def bind_targets(specs: Sequence[TargetSpec], module: torch.nn.Module, x: torch.Tensor,
                 output_key: str | int | None) -> BoundTargets:
    """Bind each image's target on the model's output to that image: one column of a head per image.

    Args:
        specs: one target per image (a :data:`VALUE_TARGETS` instance, parsed).
        module: the model (run once on ``x``, and on a similarity target's reference, without gradients).
        x: the images (B, C, H, W), on the model's device.
        output_key: where the model's output holds the scores (segmentation) or embedding (similarity).

    Returns:
        The bound targets; row ``k`` is image ``k``.

    Warns:
        UserWarning: once, when a similarity target reads a classifier's logits (:func:`classifier_head`).

    Raises:
        InputError: a segmentation class out of range, an empty mask (none predicted, or a blank mask
            file), an output that is not (B, K, h, w) class scores for ``seg:``, a similarity
            target without its reference input, a detection that is not there (``box:N`` with fewer
            than N + 1 detections) or an output that is not a detector's list of dicts.
    """
    fns: list[Callable[[Any], torch.Tensor]] = []
    labels: list[str] = []
    regions: list[np.ndarray | None] = []
    output = None
    warned = False
    for k, spec in enumerate(specs):
        if isinstance(spec, OutputTarget):
            fns.append(spec.fn)
            labels.append(spec.name)
            regions.append(None)
            continue
        if output is None:
            with torch.no_grad():
                output = module(x)
        if isinstance(spec, SegmentationTarget):
            scores = _scores_of(output, output_key, spec)
            size = (int(scores.shape[2]), int(scores.shape[3]))
            if spec.mask is None:
                predicted = scores[k].argmax(dim=0)
                mask = (predicted == spec.category).cpu().numpy()
                if not mask.any():
                    found = sorted(int(c) for c in predicted.unique().tolist())
                    shown = ", ".join(map(str, found[:8])) + (" ..." if len(found) > 8 else "")
                    raise InputError(f"{written_as(spec)}: no pixel of image {k} is predicted as class "
                                     f"{spec.category} (the model's output {tuple(scores.shape)} predicts classes "
                                     f"{shown}): pick one of those, or give the region with mask=PATH")
            else:
                mask = _mask_file(spec, size, (int(x.shape[-2]), int(x.shape[-1])))
                if not mask.any():
                    raise InputError(f"{written_as(spec)}: the mask is empty (no non-zero pixel at the output's "
                                     f"{size[0]}x{size[1]}): give a mask with the region to explain")
            fns.append(_SegmentationScore(spec.category, torch.from_numpy(mask)))
            labels.append(spec.name)
            regions.append(mask)
        elif isinstance(spec, BoxTarget):
            det = _detections(output, spec)[k]
            found = len(det["boxes"])
            if spec.index >= found:
                what = "nothing" if found == 0 else f"{found} box(es), box:0 to box:{found - 1}"
                raise InputError(f"{written_as(spec)}: the model detected {what} in image {k} (it returns "
                                 f"{describe_output(output)}; detections below its score threshold are dropped)"
                                 + ("" if found else ": use a trained detector, or lower its score threshold"))
            box = det["boxes"][spec.index].detach().float().cpu()
            label = int(det["labels"][spec.index])
            fns.append(_BoxScore(box, label, spec.iou))
            labels.append(f"{spec.name} (label {label}, score {float(det['scores'][spec.index]):.3g}, box "
                          f"{', '.join(f'{v:.0f}' for v in box.tolist())})")
            regions.append(box_region(box.tolist(), (int(x.shape[-2]), int(x.shape[-1]))))
        elif isinstance(spec, SimilarityTarget):
            if spec.input is None:
                raise InputError(f"{written_as(spec)}: the reference image was not read; pass it through "
                                 "camanim.animate")
            with torch.no_grad():
                ref = logits_of(module(spec.input.to(x.device, x.dtype)), output_key)
            if ref.shape[0] != 1 or ref[0].numel() == 0:
                raise InputError(f"{written_as(spec)}: the model returns {describe_output(ref)} for the "
                                 "reference, not one embedding: use a backbone that returns (1, D) features")
            head = classifier_head(module, ref[0].numel())
            if head is not None and not warned:
                warned = True
                warnings.warn(f"camanim: {written_as(spec)}: the similarity is computed on the classifier's logits "
                              f"({head}, {ref[0].numel()} values), not on an embedding: give the model without its "
                              "head (a timm model with num_classes=0, --num-classes 0; or the head replaced by "
                              "torch.nn.Identity()), or pick an embedding output with output_key (--output-key); "
                              "see the README's Tasks, Embeddings", UserWarning, stacklevel=3)
            fns.append(_Similarity(ref.detach()[0].flatten()))
            labels.append(spec.name)
            regions.append(None)
        else:
            raise TypeError(f"not a target on the model's output: {spec!r}")
    return BoundTargets(TargetHead(fns, labels, output_key), regions)
