"""Trace: one forward (and one backward) pass that records every selected layer.

Hooks go on every selected module; each module *call* gives one record, in the
order calls finish (a container finishes after its children). A module called
k times in one forward (ResNet's shared ``relu``) gives k records named
``name``, ``name#2``, ... Gradients come from ``torch.autograd.grad`` on the
recorded outputs, never from module backward hooks, so in-place ReLU is safe.
Every hook is removed on every path, errors included.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from .errors import InputError
from .layouts import LayoutContext

LayerSpec = str | Sequence[str] | None


@dataclass
class LayerRecord:
    """One module call seen during the pass."""

    index: int
    name: str
    module: str
    type: str
    shape: tuple[int, ...]
    layout: str
    params: int
    seconds: float
    call: int = 1
    same_as: int | None = None

    @property
    def non_spatial(self) -> bool:
        return self.layout == "non_spatial"

    def to_dict(self) -> dict:
        return {"index": self.index, "name": self.name, "module": self.module, "type": self.type,
                "shape": list(self.shape), "layout": self.layout, "params": self.params,
                "seconds": round(self.seconds, 6), "non_spatial": self.non_spatial, "same_as": self.same_as}


@dataclass
class Trace:
    """What one pass recorded: per call, the layer record, its activation and (maybe) gradient."""

    records: list[LayerRecord]
    activations: list[torch.Tensor | None]
    gradients: list[torch.Tensor | None] = field(default_factory=list)
    logits: torch.Tensor | None = None
    targets: torch.Tensor | None = None


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode and restore every module's own train flag afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, was in flags:
            m.training = was


def select_layers(model: nn.Module, layers: LayerSpec = "all") -> list[str]:
    """Names of the modules to record, in ``named_modules`` order.

    Args:
        layers: ``"all"`` (every named module, containers included), ``"leaves"`` (modules without
            children), ``"type:Conv2d,BatchNorm2d"`` (by class name), ``"re:REGEX"`` (regex search on
            names), a glob such as ``"layer4*"`` or an exact name, a comma-separated mix of globs, or a
            list of names.

    Raises:
        InputError: the pattern selects nothing.
    """
    named = [(n, m) for n, m in model.named_modules() if n]
    if layers is None or layers == "all":
        chosen = [n for n, _ in named]
    elif isinstance(layers, str) and layers == "leaves":
        chosen = [n for n, m in named if not any(True for _ in m.children())]
    elif isinstance(layers, str) and layers.startswith("type:"):
        wanted = {t.strip() for t in layers[5:].split(",") if t.strip()}
        chosen = [n for n, m in named if type(m).__name__ in wanted]
    elif isinstance(layers, str) and layers.startswith("re:"):
        try:
            rx = re.compile(layers[3:])
        except re.error as exc:
            raise InputError(f"layer pattern '{layers}' is not a valid regular expression: {exc}") from exc
        chosen = [n for n, _ in named if rx.search(n)]
    else:
        pats = [p.strip() for p in layers.split(",")] if isinstance(layers, str) else list(layers)
        chosen = [n for n, _ in named if any(n == p or fnmatch.fnmatchcase(n, p) for p in pats)]
    if not chosen:
        raise InputError(
            f"layer pattern '{layers}' matches no layer of this model: see 'camanim layers' for the names "
            "(patterns: all, leaves, a glob like 'layer4*', re:REGEX, type:Conv2d)"
        )
    return chosen


def _first_tensor(out: object) -> torch.Tensor | None:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (list, tuple)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    return None


def logits_of(output: object, output_key: str | int | None = None) -> torch.Tensor:
    """The logits tensor of a model's output (a tensor, or a tuple/dict/dataclass with one)."""
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


def run_trace(
    model: nn.Module,
    input_tensor: torch.Tensor,
    layers: LayerSpec = "all",
    *,
    targets: Sequence[int] | torch.Tensor | None = None,
    gradients: bool = True,
    keep_activations: bool = True,
    output_key: str | int | None = None,
    score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    layouts: Mapping[str, str] | None = None,
) -> Trace:
    """Run the single forward (and backward) pass and record every selected layer.

    Args:
        model: any ``nn.Module``; its train/eval flags are restored afterwards.
        input_tensor: (B, C, H, W) input, on the model's device.
        layers: see :func:`select_layers`.
        targets: class index per image (default: each image's predicted class).
        gradients: also compute d score / d activation for every recorded layer (one backward).
        keep_activations: keep the activations (False: only shapes, e.g. for ``camanim layers``).
        output_key: how to find the logits in a tuple/dict output.
        score: ``score(logits, targets) -> (B,)`` to differentiate; default the target logits.
        layouts: ``{layer name: layout}`` overriding detection (see :mod:`camanim.layouts`).

    Returns:
        The records in execution order, with activations and gradients.
    """
    names = select_layers(model, layers)
    modules = dict(model.named_modules())
    calls: dict[str, int] = {}
    records: list[LayerRecord] = []
    acts: list[torch.Tensor | None] = []
    starts: dict[int, list[float]] = {}
    handles = []
    params_of: dict[str, int] = {}
    # id(tensor) -> record index, for outputs that are the very tensor an earlier record produced
    # (a Sequential and its last child): their CAM is computed once and shared.
    produced: dict[int, tuple[int, int]] = {}
    alive: list[torch.Tensor] = []

    def make_hooks(name: str, module: nn.Module):
        def pre(mod, args):
            starts.setdefault(id(mod), []).append(time.perf_counter())

        def post(mod, args, output):
            t0 = starts[id(mod)].pop() if starts.get(id(mod)) else time.perf_counter()
            seconds = time.perf_counter() - t0
            k = calls[name] = calls.get(name, 0) + 1
            tensor = _first_tensor(output)
            layout = layout_ctx.detect(mod, tensor, args, name if k == 1 else f"{name}#{k}")
            if name not in params_of:
                params_of[name] = sum(p.numel() for p in mod.parameters())
            index = len(records)
            same = None
            if tensor is not None and id(tensor) in produced:
                earlier, version = produced[id(tensor)]
                # An in-place op (ReLU(inplace=True)) returns its input object with new values:
                # only an unchanged version counter means "the same output".
                same = earlier if tensor._version == version else None
            records.append(LayerRecord(
                index=index, name=name if k == 1 else f"{name}#{k}", module=name,
                type=type(mod).__name__, shape=tuple(tensor.shape) if tensor is not None else (),
                layout=layout, params=params_of[name], seconds=seconds, call=k, same_as=same))
            if tensor is None or not keep_activations:
                acts.append(None)
                return None
            if same is not None:
                # Same tensor object as an earlier record: reuse its activation (and later its CAM).
                acts.append(acts[same])
                return None
            acts.append(tensor)
            if isinstance(output, torch.Tensor) and gradients and tensor.requires_grad:
                # The model continues on a copy, so a later in-place op (ReLU(inplace=True),
                # ``out += identity``) cannot overwrite what we recorded, and the gradient we
                # take is the one of this layer's own output.
                copy = output.clone()
                produced[id(copy)] = (index, copy._version)
                layout_ctx.remember(copy, layout)
                alive.append(copy)
                return copy
            if isinstance(output, torch.Tensor):
                acts[-1] = tensor.detach().clone()
                produced[id(tensor)] = (index, tensor._version)
                alive.append(tensor)
            return None

        return pre, post

    x = input_tensor
    if gradients and not x.requires_grad:
        # Activations must require grad even when the user froze every parameter.
        x = x.detach().requires_grad_(True)
    layout_ctx = LayoutContext.for_model(model, x, layouts)
    try:
        for name in names:
            pre, post = make_hooks(name, modules[name])
            handles.append(modules[name].register_forward_pre_hook(pre))
            handles.append(modules[name].register_forward_hook(post))
        with eval_mode(model), torch.set_grad_enabled(gradients):
            out = model(x)
            logits = logits_of(out, output_key)
            if logits.ndim != 2:
                raise InputError(f"the model's output has shape {tuple(logits.shape)}, not (batch, classes)")
            if targets is None:
                tgt = logits.argmax(dim=1)
            else:
                tgt = torch.as_tensor(list(targets) if not isinstance(targets, torch.Tensor) else targets,
                                      device=logits.device).long().view(-1)
                if tgt.numel() == 1 and logits.shape[0] > 1:
                    tgt = tgt.expand(logits.shape[0])
            grads: list[torch.Tensor | None] = []
            if gradients:
                s = score(logits, tgt) if score is not None else logits.gather(1, tgt.view(-1, 1)).squeeze(1)
                wanted = [i for i, a in enumerate(acts)
                          if a is not None and a.requires_grad and records[i].same_as is None]
                got = torch.autograd.grad(s.sum(), [acts[i] for i in wanted], allow_unused=True) if wanted else []
                grads = [None] * len(acts)
                for i, g in zip(wanted, got):
                    grads[i] = torch.zeros_like(acts[i]) if g is None else g
                for i, a in enumerate(acts):
                    if records[i].same_as is not None:
                        grads[i] = grads[records[i].same_as]
                    elif a is not None and grads[i] is None:
                        grads[i] = torch.zeros_like(a)
            acts = [a.detach() if a is not None else None for a in acts]
    finally:
        for h in handles:
            h.remove()
        alive.clear()
    return Trace(records=records, activations=acts, gradients=grads, logits=logits.detach(), targets=tgt)
