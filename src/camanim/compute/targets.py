"""Which classes to explain: a class index or label, the predicted class, or the top k classes.

A run explains *rows*: one row per (image, target class). ``--target 285`` or ``--target "tiger cat"``
explains that class in every image; no target explains each image's own predicted class;
``--target topk:3`` explains each image's three highest-scoring classes, one row (and one output
folder) each. Rows of one image share its input; they are stacked into one batch, so a single
forward and a single backward serve every image and every target (pytorch-grad-cam, given one
target for a batch, explains image 0 only: here every row has its own target).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import InputError
from ..sources import resolve_target
from ..trace import class_logits

_TOPK = re.compile(r"top-?k\s*[:=]\s*(\d+)", re.IGNORECASE)


@dataclass(frozen=True)
class TopK:
    """The k highest-scoring classes of each image."""

    k: int


TargetSpec = int | str | TopK | None


def parse_target(spec: int | str | TopK | None) -> TargetSpec:
    """``None`` (predicted class), a class index, a label, or ``topk:K``.

    Raises:
        InputError: ``topk:0`` or a malformed ``topk``.
    """
    if spec is None or isinstance(spec, (int, TopK)):
        return spec
    text = str(spec).strip()
    if text.lower().startswith("top"):
        m = _TOPK.fullmatch(text)
        if m is None or int(m.group(1)) < 1:
            raise InputError(f"--target '{text}': write topk:K with K >= 1, e.g. topk:3")
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


def per_image(spec: str | None, n_images: int, labels: Sequence[str] | None) -> str | list[str] | None:
    """``--target`` text: one class for every image, or one per image separated by commas (``281,eel``).

    A label that itself contains a comma is one class for every image.

    Raises:
        InputError: an empty entry, or a number of entries other than the number of images.
    """
    if spec is None or "," not in spec or spec.strip().lower() in {label.lower() for label in labels or ()}:
        return spec
    parts = [part.strip() for part in spec.split(",")]
    if not all(parts):
        raise InputError(f"--target '{spec}' has an empty entry: give one class per image, e.g. 281,eel")
    if len(parts) != n_images:
        raise InputError(f"--target '{spec}' gives {len(parts)} targets for {n_images} image(s): "
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
