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
import inspect
import logging
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.autograd.graph import GradientEdge, get_gradient_edge
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.overrides import TorchFunctionMode

from .errors import InputError
from .layouts import LayoutContext

LayerSpec = str | Sequence[str] | None
_GLOB_CHARS = frozenset("*?[")
logger = logging.getLogger(__name__)


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
    return _select([(n, m) for n, m in model.named_modules() if n], layers)


def _select(named: list[tuple[str, nn.Module]], layers: LayerSpec) -> list[str]:
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
        exact = {p for p in pats if not _GLOB_CHARS.intersection(p)}
        globs = [p for p in pats if p not in exact]
        rx = re.compile("|".join(fnmatch.translate(p) for p in globs)) if globs else None
        chosen = [n for n, _ in named if n in exact or (rx is not None and rx.match(n))]
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


_INPLACE_DUNDERS = frozenset({
    "__iadd__", "__isub__", "__imul__", "__itruediv__", "__ifloordiv__", "__imod__", "__ipow__", "__iand__",
    "__ior__", "__ixor__", "__ilshift__", "__irshift__", "__imatmul__", "__setitem__",
})
_INPLACE_POSITION: dict[object, int | None] = {}


def _inplace_position(func: object) -> int | None:
    """Where ``func`` (``F.relu``, ``F.hardtanh``, ...) takes an ``inplace`` flag positionally, if it has one."""
    if func not in _INPLACE_POSITION:
        try:
            params = list(inspect.signature(func).parameters)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            params = []
        _INPLACE_POSITION[func] = params.index("inplace") if "inplace" in params else None
    return _INPLACE_POSITION[func]


def written_tensor(func: object, args: Sequence[object], kwargs: Mapping[str, object]) -> torch.Tensor | None:
    """The tensor a torch call is about to overwrite in place (``x += y``, ``relu_``, ``inplace=True``,
    ``out=``), or None."""
    out = kwargs.get("out")
    if isinstance(out, (tuple, list)):
        out = next((o for o in out if isinstance(o, torch.Tensor)), None)
    if isinstance(out, torch.Tensor):
        return out
    name = getattr(func, "__name__", "")
    inplace = name in _INPLACE_DUNDERS or (name.endswith("_") and not name.endswith("__"))
    if not inplace and getattr(func, "__module__", None) == "torch.nn.functional":
        flag = kwargs.get("inplace")
        if flag is None and args:
            pos = _inplace_position(func)
            flag = args[pos] if pos is not None and pos < len(args) else None
        inplace = flag is True
    if not inplace:
        return None
    first = args[0] if args else kwargs.get("input", kwargs.get("self"))
    return first if isinstance(first, torch.Tensor) else None


def _storage_key(tensor: torch.Tensor) -> int | None:
    try:
        key = tensor.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):
        return None
    return key or None


class _Recorder(TorchFunctionMode):
    """Keeps recorded layer outputs intact without copying every one of them.

    A layer's output is recorded as the very tensor the model goes on with. Only when a torch
    call is about to overwrite it in place (``out += identity``, ``F.relu(x, inplace=True)``, an
    ``nn.ReLU(inplace=True)``) is its value copied first, and an ``nn`` activation module with
    ``inplace=True`` is instead run out of place for that one call (its output is a new tensor,
    the same work without the copy). Gradients are taken at each output's own autograd edge,
    captured when it was recorded, so they are those of the value recorded (every path from it,
    the in-place op included). After the forward, :meth:`intact` checks every version counter: a
    write this mode could not see makes the trace fall back to copying every output.
    """

    def __init__(self, acts: list[torch.Tensor | None]) -> None:
        super().__init__()
        self.acts = acts
        self.versions: dict[int, int] = {}
        self.watch: dict[int, list[int]] = {}
        self.originals: list[torch.Tensor] = []
        self.escaped = False

    def add(self, index: int, tensor: torch.Tensor) -> None:
        self.versions[index] = tensor._version
        key = _storage_key(tensor)
        if key is not None:
            self.watch.setdefault(key, []).append(index)

    def watched(self, tensor: object) -> bool:
        return isinstance(tensor, torch.Tensor) and _storage_key(tensor) in self.watch

    def save_before_write(self, target: torch.Tensor) -> None:
        key = _storage_key(target)
        if key is None or key not in self.watch:
            return
        saved: dict[int, torch.Tensor] = {}
        for i in self.watch.pop(key):
            t = self.acts[i]
            if t is None or i not in self.versions:
                continue
            if t._version != self.versions[i]:
                self.escaped = True  # written already, by a call this mode did not see
            if id(t) not in saved:
                saved[id(t)] = t.detach().clone()
                # kept alive to the end of the pass: same-output detection goes by id()
                self.originals.append(t)
            self.acts[i] = saved[id(t)]
            del self.versions[i]

    def intact(self) -> bool:
        return not self.escaped and all(self.acts[i] is not None and self.acts[i]._version == v for i, v in self.versions.items())

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.watch:
            target = written_tensor(func, args, kwargs)
            if target is not None:
                self.save_before_write(target)
        return func(*args, **kwargs)


def _params_per_module(named: Sequence[tuple[str, nn.Module]]) -> dict[str, int]:
    """Parameters of every named module, its children's included, from one walk over the model.

    Each parameter counts once per module, as in ``module.parameters()``: a model that shares a
    parameter between modules (tied weights) is counted module by module instead.
    """
    own: dict[str, int] = {}
    seen: set[int] = set()
    for name, mod in named:
        params = [p for p in mod._parameters.values() if p is not None]
        own[name] = sum(p.numel() for p in params)
        seen.update(id(p) for p in params)
    if len(seen) != sum(len([p for p in m._parameters.values() if p is not None]) for _, m in named):
        return {name: sum(p.numel() for p in mod.parameters()) for name, mod in named}
    total = dict(own)
    for name in sorted(own, key=lambda n: n.count(".") if n else -1, reverse=True):
        if name:
            parent = name.rpartition(".")[0]
            if parent in total:
                total[parent] += total[name]
    return total


def _edge(tensor: torch.Tensor) -> GradientEdge:
    """Where autograd delivers d score / d ``tensor``, also once ``tensor`` is overwritten in place."""
    fn = tensor.grad_fn
    return GradientEdge(fn, tensor.output_nr) if fn is not None else get_gradient_edge(tensor)


def _is_torch_activation(module: nn.Module) -> bool:
    return getattr(module, "inplace", None) is True and type(module).__module__.startswith("torch.nn.")


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
    copy_outputs: bool = False,
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
        copy_outputs: hand the model a copy of every recorded output (the slow, always-safe way;
            used by itself when an in-place write escaped the copy-on-write of :class:`_Recorder`).

    Returns:
        The records in execution order, with activations and gradients.
    """
    walked = list(model.named_modules())
    names = _select([(n, m) for n, m in walked if n], layers)
    params_of = _params_per_module(walked)
    name_of = {id(m): n for n, m in walked}
    chosen = set(names)
    selected = {id(m) for n, m in walked if n in chosen}
    activations = {id(m) for _, m in walked if _is_torch_activation(m)}
    calls: dict[str, int] = {}
    records: list[LayerRecord] = []
    acts: list[torch.Tensor | None] = []
    edges: dict[int, object] = {}
    starts: dict[int, list[float]] = {}
    handles = []
    flipped: list[nn.Module] = []
    # id(tensor) -> (record index, version): outputs that are the very tensor an earlier record
    # produced (a Sequential and its last child): their CAM is computed once and shared.
    produced: dict[int, tuple[int, int]] = {}
    recorder = _Recorder(acts)
    # copy-on-write (the recorder) keeps recorded values intact, unless every output is copied anyway
    on_write = keep_activations and not copy_outputs

    # Two process-wide module hooks instead of two per layer (registering hundreds of hooks costs
    # more than the pass's own bookkeeping); they act only on this model's modules.
    def pre(mod, args):
        key = id(mod)
        if key in selected:
            starts.setdefault(key, []).append(time.perf_counter())
        if on_write and key in activations and args and recorder.watched(args[0]):
            # an nn activation about to overwrite a recorded output runs out of place for this call
            mod.__dict__["inplace"] = False
            flipped.append(mod)

    def post(mod, args, output):
        key = id(mod)
        out = None
        if key in selected:
            # the recorder's torch-function mode has nothing to do with our own bookkeeping
            with torch._C.DisableTorchFunction():
                out = record(name_of[key], mod, args, output)
        if flipped and flipped[-1] is mod:
            flipped.pop().__dict__["inplace"] = True
        return out

    def record(name, mod, args, output):
        t0 = starts[id(mod)].pop() if starts.get(id(mod)) else time.perf_counter()
        seconds = time.perf_counter() - t0
        k = calls[name] = calls.get(name, 0) + 1
        tensor = _first_tensor(output)
        layout = layout_ctx.detect(mod, tensor, args, name if k == 1 else f"{name}#{k}")
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
            layout=layout, params=params_of.get(name, 0), seconds=seconds, call=k, same_as=same))
        if tensor is None or not keep_activations:
            acts.append(None)
            return None
        if same is not None:
            # Same tensor object as an earlier record: reuse its activation (and later its CAM).
            acts.append(acts[same])
            return None
        acts.append(tensor)
        if tensor.requires_grad and torch.is_grad_enabled():
            edges[index] = _edge(tensor)
        if copy_outputs:
            if isinstance(output, torch.Tensor) and index in edges:
                # The model continues on a copy, so no later op can overwrite what we recorded.
                copy = output.clone()
                produced[id(copy)] = (index, copy._version)
                layout_ctx.remember(copy, layout)
                return copy
            acts[-1] = tensor.detach().clone()
            produced[id(tensor)] = (index, tensor._version)
            return None
        produced[id(tensor)] = (index, tensor._version)
        recorder.add(index, tensor)
        return None

    x = input_tensor
    if gradients and not x.requires_grad:
        # Activations must require grad even when the user froze every parameter.
        x = x.detach().requires_grad_(True)
    layout_ctx = LayoutContext.for_model(model, x, layouts, named=walked)
    logits = None
    try:
        handles.append(register_module_forward_pre_hook(pre))
        handles.append(register_module_forward_hook(post))
        with eval_mode(model), torch.set_grad_enabled(gradients):
            if on_write:
                with recorder:
                    out = model(x)
            else:
                out = model(x)
            if not copy_outputs and not recorder.intact():
                logger.info("an in-place write escaped copy-on-write: tracing again with every output copied")
                for h in handles:
                    h.remove()
                handles.clear()
                return run_trace(model, input_tensor, layers, targets=targets, gradients=gradients,
                                 keep_activations=keep_activations, output_key=output_key, score=score,
                                 layouts=layouts, copy_outputs=True)
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
                wanted = [i for i in edges if records[i].same_as is None]
                got = (torch.autograd.grad(s.sum(), [edges[i] for i in wanted], allow_unused=True)
                       if wanted and s.requires_grad else [None] * len(wanted))
                grads = [None] * len(acts)
                for i, g in zip(wanted, got):
                    grads[i] = g
                for i, a in enumerate(acts):
                    if records[i].same_as is not None:
                        grads[i] = grads[records[i].same_as]
                    elif a is not None and grads[i] is None:
                        grads[i] = torch.zeros_like(a)
            acts[:] = [a.detach() if a is not None else None for a in acts]
    finally:
        for h in handles:
            h.remove()
        for mod in flipped:
            mod.__dict__["inplace"] = True
        edges.clear()
        recorder.originals.clear()
    return Trace(records=records, activations=acts, gradients=grads, logits=logits.detach(), targets=tgt)
