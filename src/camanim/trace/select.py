"""Which modules a pass records: ``all``, ``leaves``, globs, ``re:REGEX``, ``type:NAME``."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..errors import InputError, torchscript_refusal

LayerSpec = str | Sequence[str] | None


_GLOB_CHARS = frozenset("*?[")

#: the ``--layers`` word that keeps one layer per distinct CAM (combinable: ``distinct,layer4*``)
DISTINCT = "distinct"


def split_distinct(layers: LayerSpec) -> tuple[LayerSpec, bool]:
    """``layers`` without the word ``distinct``, and whether it was there.

    ``distinct`` is applied after the pass (only then is it known which layers hand on another
    layer's very output tensor, ``LayerRecord.same_as``); alone it means ``all``.
    """
    if isinstance(layers, str):
        parts = [p for p in layers.split(",")]
        if DISTINCT not in (p.strip() for p in parts):
            return layers, False
        rest = ",".join(p for p in parts if p.strip() != DISTINCT).strip(",")
        return rest or "all", True
    if layers is not None and DISTINCT in layers:
        rest = [p for p in layers if p != DISTINCT]
        return rest or "all", True
    return layers, False


def select_layers(model: nn.Module, layers: LayerSpec = "all") -> list[str]:
    """Names of the modules to record, in ``named_modules`` order.

    Args:
        layers: ``"all"`` (every named module, containers included), ``"leaves"`` (modules without
            children), ``"type:Conv2d,BatchNorm2d"`` (by class name), ``"re:REGEX"`` (regex search on
            names), a glob such as ``"layer4*"`` or an exact name, a comma-separated mix of globs, or a
            list of names; ``distinct`` (alone or with any of these: ``distinct,layer4*``) is
            applied after the pass (see :func:`split_distinct`) and selects like the rest here.

    Raises:
        InputError: the pattern selects nothing, or ``model`` is TorchScript (see :func:`refuse_torchscript`).
    """
    refuse_torchscript(model)
    return select_names([(n, m) for n, m in model.named_modules() if n], layers)


def refuse_torchscript(model: nn.Module) -> None:
    """Refuse a TorchScript model: its forward runs no Python, so no layer of it can be recorded.

    Raises:
        InputError: ``model`` is a ``torch.jit.ScriptModule`` (scripted, traced or frozen).
    """
    if isinstance(model, torch.jit.ScriptModule):
        raise torchscript_refusal("the model")


Match = Callable[[str, nn.Module], object]


def _by_type(spec: str) -> Match:
    wanted = {t.strip() for t in spec.split(",") if t.strip()}
    return lambda _name, mod: type(mod).__name__ in wanted


def _by_regex(spec: str, layers: str) -> Match:
    try:
        rx = re.compile(spec)
    except re.error as exc:
        raise InputError(f"layer pattern '{layers}' is not a valid regular expression: {exc}") from exc
    return lambda name, _mod: rx.search(name)


def _by_names(pats: Sequence[str]) -> Match:
    exact = {p for p in pats if not _GLOB_CHARS.intersection(p)}
    globs = [p for p in pats if p not in exact]
    rx = re.compile("|".join(fnmatch.translate(p) for p in globs)) if globs else None
    return lambda name, _mod: name in exact or (rx is not None and rx.match(name))


def matcher(layers: LayerSpec) -> Match:
    """``match(name, module)`` for a ``--layers`` pattern (see :func:`select_layers`).

    Raises:
        InputError: a ``re:`` pattern that is not a valid regular expression.
    """
    layers, _ = split_distinct(layers)
    if layers is None or layers == "all":
        return lambda _name, _mod: True
    if isinstance(layers, str):
        if layers == "leaves":
            return lambda _name, mod: not any(True for _ in mod.children())
        if layers.startswith("type:"):
            return _by_type(layers[5:])
        if layers.startswith("re:"):
            return _by_regex(layers[3:], layers)
        return _by_names([p.strip() for p in layers.split(",")])
    return _by_names(list(layers))


def select_names(named: list[tuple[str, nn.Module]], layers: LayerSpec) -> list[str]:
    """The names in ``named`` (``(name, module)`` pairs, in order) that ``layers`` selects.

    See :func:`select_layers` for the patterns.

    Raises:
        InputError: If a ``re:`` pattern is not a valid regular expression, or nothing is selected.
    """
    match = matcher(layers)
    chosen = [n for n, m in named if match(n, m)]
    if not chosen:
        raise InputError(
            f"layer pattern '{layers}' matches no layer of this model: see 'camanim layers' for the names "
            "(patterns: all, leaves, a glob like 'layer4*', re:REGEX, type:Conv2d)"
        )
    return chosen
