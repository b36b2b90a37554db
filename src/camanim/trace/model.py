"""How the trace talks to a model: eval mode for a pass, and the logits in whatever the model returns."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ..errors import InputError

#: models in eval mode for a pass: id -> [model, passes using it, its modules, their own train flags]
_EVAL_USERS: dict[int, list] = {}
_EVAL_LOCK = threading.Lock()
#: ids of every module of a model whose train flags a pass has switched (while the switch holds)
_SWITCHED: set[int] = set()


def switched_by_a_pass(module: nn.Module) -> bool:
    """Whether ``module`` belongs to a model a running pass switched from training to eval mode.

    A forward another thread runs on it meanwhile runs in eval mode (dropout off, batch-norm
    running statistics), not in the mode it was left in.
    """
    return id(module) in _SWITCHED


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode and restore every module's own train flag afterwards.

    Passes that overlap on one model (threads explaining one model at once, a pass inside a pass)
    share the switch: the first sets eval mode, the last to finish restores the flags. The model
    is shared: while the switch holds, other threads' forwards run in eval mode too. Only the
    modules the switch changed (training then) and that are still in eval mode get their flag
    back: a ``train()`` another thread made meanwhile stays (an ``eval()`` looks like the switch's).
    """
    with _EVAL_LOCK:
        entry = _EVAL_USERS.get(id(model))
        if entry is None or entry[0] is not model:
            mods = list(model.modules())
            entry = _EVAL_USERS[id(model)] = [model, 0, [m for m in mods if m.training],
                                              {id(m) for m in mods} if any(m.training for m in mods) else set()]
            _SWITCHED.update(entry[3])
            # Writing the flag straight into each module is what Module.train() does, minus a slow
            # __setattr__ per module; a module with its own train() gets it called.
            if any(type(m).train is not nn.Module.train for m in mods):
                model.eval()
            else:
                for m in mods:
                    m.__dict__["training"] = False
        entry[1] += 1
    try:
        yield model
    finally:
        with _EVAL_LOCK:
            entry[1] -= 1
            if entry[1] == 0:
                del _EVAL_USERS[id(model)]
                _SWITCHED.difference_update(entry[3])
                for m in entry[2]:
                    if not m.training:
                        m.__dict__["training"] = True


def first_tensor(out: object) -> torch.Tensor | None:
    """A module's output tensor: ``out`` itself, or the first item of a tuple/list; else None."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (list, tuple)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    return None


def describe_output(output: object, depth: int = 0) -> str:
    """What a model returned, in words: ``a tensor (1, 21, 64, 64)``, ``a dict of out (1, 21, 64, 64)``,
    ``a list of 1 dict of boxes (0, 4), labels (0,), scores (0,)`` (for one-line errors)."""
    if isinstance(output, torch.Tensor):
        return f"a tensor {tuple(output.shape)}"
    if isinstance(output, dict) and depth < 2:
        parts = [f"{k} {tuple(v.shape)}" if isinstance(v, torch.Tensor) else f"{k} ({type(v).__name__})"
                 for k, v in list(output.items())[:6]]
        return f"a {type(output).__name__} of {', '.join(parts) or 'nothing'}"
    if isinstance(output, (list, tuple)) and depth < 2:
        if output and all(type(o) is type(output[0]) for o in output):
            first = describe_output(output[0], depth + 1)
            return f"a {type(output).__name__} of {len(output)} {first[2:] if first.startswith('a ') else first}"
        return f"a {type(output).__name__} of {len(output)} items"
    return f"a {type(output).__name__}"


class TargetHead:
    """Targets defined on a model's whole output: one function per row, ``fn(output) -> (B,)``.

    A head stands where the logits are read (``output_key``): :func:`logits_of` returns
    ``(B, 1 + n)`` "logits" whose column 0 is zero and whose column ``r + 1`` is target ``r``'s
    value, so that every part of camanim that explains the score of a class (the trace, methods
    with extra forwards, ROAD) explains target ``r`` as "class" ``r + 1``, by its raw value
    (``score="logit"``). Column 0 keeps the width at 2 or more, so a one-target head is never read
    as a one-logit binary model.

    Attributes:
        fns: callables ``fn(output) -> (B,)`` (one scalar per image of the batch).
        labels: how the report names each target.
        output_key: when given, the functions receive this entry of the output, not the whole output.
    """

    def __init__(self, fns: list, labels: list[str], output_key: str | int | None = None) -> None:
        self.fns, self.labels, self.output_key = list(fns), list(labels), output_key

    def column(self, r: int) -> TargetHead:
        """A head of target ``r`` alone (its value in column 1)."""
        return TargetHead([self.fns[r]], [self.labels[r]], self.output_key)

    def __call__(self, output: object) -> torch.Tensor:
        """The ``(B, 1 + n)`` columns ``[0, fn_1(output), ..., fn_n(output)]``.

        Raises:
            InputError: a function that returns no tensor, not one value per image, or non-finite values.
        """
        picked = output if self.output_key is None else logits_of(output, self.output_key)
        cols = []
        for fn, label in zip(self.fns, self.labels):
            v = fn(picked)
            if isinstance(v, torch.Tensor) and v.ndim == 2 and v.shape[1] == 1:
                v = v[:, 0]
            if not isinstance(v, torch.Tensor) or v.ndim != 1:
                got = f"shape {tuple(v.shape)}" if isinstance(v, torch.Tensor) else f"a {type(v).__name__}"
                raise InputError(f"target {label} returned {got} from {describe_output(picked)}: a target must "
                                 "return one scalar per image, a tensor of shape (B,)")
            if not bool(torch.isfinite(v.detach()).all()):
                raise InputError(f"target {label} returned non-finite values {v.detach().tolist()[:4]} from "
                                 f"{describe_output(picked)}: a target's value must be finite")
            cols.append(v)
        n = {int(c.shape[0]) for c in cols}
        if len(n) != 1:
            raise InputError(f"targets {', '.join(self.labels)} return different batch sizes {sorted(n)}")
        base = cols[0]
        return torch.stack([torch.zeros_like(base), *[c.to(base.dtype) for c in cols]], dim=1)

    def __repr__(self) -> str:
        return f"TargetHead({', '.join(self.labels)})"


def logits_of(output: object, output_key: str | int | TargetHead | None = None) -> torch.Tensor:
    """The logits tensor of a model's output (a tensor, or a tuple/dict/dataclass with one).

    Without ``output_key``, a ``logits`` or ``out`` entry or attribute is taken. With a
    :class:`TargetHead`, the head's ``(B, 1 + n)`` columns of target values.

    Raises:
        InputError: If ``output_key`` is not in the output or picks no tensor, or no logits can be found;
            what a :class:`TargetHead` raises.
    """
    if isinstance(output_key, TargetHead):
        return output_key(output)
    if isinstance(output, torch.Tensor):
        return output
    if output_key is not None:
        try:
            if isinstance(output, (tuple, list)) and str(output_key).lstrip("-").isdigit():
                picked = output[int(output_key)]
            elif isinstance(output, dict):
                picked = output[output_key]
            else:
                picked = getattr(output, str(output_key))
        except (KeyError, IndexError, AttributeError, ValueError) as exc:
            raise InputError(f"--output-key '{output_key}' is not in the model's output: name its logits") from exc
        if isinstance(picked, torch.Tensor):
            return picked
        raise InputError(f"--output-key '{output_key}' picks a {type(picked).__name__}, not the logits tensor")
    for key in ("logits", "out"):
        val = output.get(key) if isinstance(output, dict) else getattr(output, key, None)
        if isinstance(val, torch.Tensor):
            return val
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor) and output_key is None:
        raise InputError(
            f"the model returns a {type(output).__name__} of {len(output)} items: pick the logits with --output-key N"
        )
    raise InputError(f"the model returns a {type(output).__name__}{_fields_of(output)}, not logits: "
                     "pick them with --output-key KEY")


#: how a probability is made from the logits: ``softmax`` (one label per image) or ``sigmoid``
#: (each class on its own: multi-label models, and every model with one output logit)
PROBABILITIES = ("softmax", "sigmoid")


def class_logits(logits: torch.Tensor) -> torch.Tensor:
    """The logits (B, K) as one column per class: a one-logit model's (B, 1) becomes (B, 2), ``[-z, z]``.

    A binary classifier with ONE output logit z (trained with ``BCEWithLogitsLoss``) has two
    classes: class 1, the positive one, with logit z (probability sigmoid(z)), and class 0 with
    logit -z (probability sigmoid(-z) = 1 - sigmoid(z)). Any other width is returned as is.
    """
    if logits.ndim == 2 and logits.shape[1] == 1:
        return torch.cat([-logits, logits], dim=1)
    return logits


def probability_kind(score: str, outputs: int) -> str:
    """Which probability a run uses: ``sigmoid`` for ``score="sigmoid"`` or a one-logit model, else ``softmax``.

    Args:
        score: the run's score (``logit``, ``softmax`` or ``sigmoid``).
        outputs: the width K of the model's logits (B, K).
    """
    return "sigmoid" if str(score).strip().lower() == "sigmoid" or outputs == 1 else "softmax"


def class_scores(logits: torch.Tensor, kind: str) -> torch.Tensor:
    """Every class's score (B, K') from the logits (B, K): ``logit``, ``softmax`` or ``sigmoid``.

    K' is the number of classes (2 for a one-logit model, see :func:`class_logits`). A one-logit
    model's probability is always its sigmoid: softmax over one logit is the constant 1.

    Raises:
        ValueError: an unknown ``kind``.
    """
    cols = class_logits(logits)
    if kind == "logit":
        return cols
    if kind == "sigmoid" or (kind == "softmax" and logits.shape[1] == 1):
        return cols.sigmoid()
    if kind == "softmax":
        return cols.softmax(dim=1)
    raise ValueError(f"score kind {kind!r}: expected logit, softmax or sigmoid")


def _fields_of(output: object) -> str:
    """' with fields a, b' for a dict, named tuple or dataclass output; '' otherwise."""
    if isinstance(output, dict):
        names = [str(k) for k in output]
    elif hasattr(output, "_fields"):
        names = list(output._fields)
    elif dataclasses.is_dataclass(output):
        names = [f.name for f in dataclasses.fields(output)]
    else:
        return ""
    return f" with fields {', '.join(names[:8])}" if names else ""
