"""How the trace talks to a model: eval mode for a pass, and the logits in whatever the model returns."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ..errors import InputError


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode and restore every module's own train flag afterwards."""
    mods = list(model.modules())
    flags = [m.training for m in mods]
    # Writing the flag straight into each module is what Module.train() does, minus a slow
    # __setattr__ per module; a module with its own train() gets it called.
    own_train = any(type(m).train is not nn.Module.train for m in mods)
    if own_train:
        model.eval()
    else:
        for m in mods:
            m.__dict__["training"] = False
    try:
        yield model
    finally:
        for m, was in zip(mods, flags):
            m.__dict__["training"] = was


def first_tensor(out: object) -> torch.Tensor | None:
    """A module's output tensor: ``out`` itself, or the first item of a tuple/list; else None."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (list, tuple)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    return None


def logits_of(output: object, output_key: str | int | None = None) -> torch.Tensor:
    """The logits tensor of a model's output (a tensor, or a tuple/dict/dataclass with one).

    Without ``output_key``, a ``logits`` or ``out`` entry or attribute is taken.

    Raises:
        InputError: If ``output_key`` is not in the output or picks no tensor, or no logits can be found.
    """
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
