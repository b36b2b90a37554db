"""Class labels: ImageNet's by default, or one label per line from a file."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet-1k class names, in index order (shipped with torchvision)."""
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    return list(_IMAGENET_CATEGORIES)


def read_labels(path: str | Path, num_classes: int | None = None) -> list[str]:
    """Read a labels file: one class name per line, in class-index order.

    A model with one output logit (``num_classes`` 1) has two classes: 0 (negative) and 1 (positive).

    Raises:
        InputError: the file is missing, empty, or has a different count than the model's classes.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"labels file '{p}' not found: pass a text file with one class name per line")
    try:
        lines = [line.strip() for line in p.read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError as exc:
        raise InputError(f"labels file '{p}' is not UTF-8 text: pass one class name per line") from exc
    labels = [line for line in lines if line]
    if not labels:
        raise InputError(f"labels file '{p}' is empty: write one class name per line")
    classes = 2 if num_classes == 1 else num_classes
    if classes is not None and len(labels) != classes:
        raise InputError(
            f"labels file '{p}' has {len(labels)} labels but the model has {classes} classes: "
            "give one label per class" + (" (a one-logit model: negative, then positive)" if num_classes == 1 else "")
        )
    return labels


def resolve_target(target: int | str | None, labels: list[str] | None, num_classes: int,
                   what: str = "target") -> int | None:
    """Turn a class index, a numeric string or a label name into a class index (None = predicted class).

    A name matches a label case-insensitively; where the exact spelling picks one label, that one. A name
    that still names several classes (ImageNet has two 'crane' and two 'maillot') is refused, not taken
    as the first of them.

    Args:
        what: the noun of the messages (``target``, ``label``).

    Raises:
        InputError: If a name is given without labels, matches no label or several, or the index is
            outside ``0..num_classes-1``.
    """
    if target is None:
        return None
    if isinstance(target, str):
        text = target.strip()
        if text.lstrip("-").isdigit():
            target = int(text)
        else:
            if labels is None:
                raise InputError(f"{what} '{text}' is a name but the model has no labels: give a class index")
            exact = [i for i, label in enumerate(labels) if label.strip() == text]
            found = exact or [i for i, label in enumerate(labels) if label.strip().lower() == text.lower()]
            if len(found) == 1:
                return found[0]
            if found:
                named = ", ".join(f"{i} ({labels[i].strip()})" for i in found[:5])
                raise InputError(f"{what} '{text}' names {len(found)} classes of this model: {named}: give the "
                                 "class index")
            close = [label for label in labels if text.lower() in label.lower()][:5]
            hint = f" (close: {', '.join(close)})" if close else ""
            raise InputError(f"{what} '{text}' is not a class label of this model{hint}: give a label or an index")
    if not 0 <= int(target) < num_classes:
        raise InputError(f"{what} class {target} is out of range: the model has classes 0..{num_classes - 1}")
    return int(target)
