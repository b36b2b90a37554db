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
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import nn
from torch.autograd.graph import GradientEdge, get_gradient_edge
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


class _Recompute:
    """A norm layer's output, computed again from its input when it is read.

    When an in-place op (ReLU(inplace=True), ``out += identity``) is about to overwrite a recorded
    BatchNorm/GroupNorm/LayerNorm output whose input is still intact, the trace keeps that input
    instead of a copy of the output: the model's in-place op runs as written (no extra memory in
    the pass), and the value is recomputed, bit for bit, by the same module in eval mode.
    """

    __slots__ = ("module", "input", "version")

    def __init__(self, module: nn.Module, inp: torch.Tensor) -> None:
        self.module, self.input, self.version = module, inp, inp._version

    def intact(self) -> bool:
        return self.input._version == self.version

    def __call__(self) -> torch.Tensor:
        with eval_mode(self.module), torch.no_grad():
            # the class's forward: the instance's may be the trace's recording wrapper
            return type(self.module).forward(self.module, self.input)


#: Cheap, deterministic modules whose output the trace may recompute from their input (see _Recompute).
_RECOMPUTABLE = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm, nn.LayerNorm)


def _recompute_source(mod: nn.Module, args: tuple, output: torch.Tensor) -> _Recompute | None:
    if (type(mod) not in _RECOMPUTABLE or len(args) != 1 or not isinstance(args[0], torch.Tensor)
            or mod._forward_hooks or mod._forward_pre_hooks or torch.is_autocast_enabled(output.device.type)):
        return None
    key = _storage_key(args[0])
    return _Recompute(mod, args[0]) if key is not None and key != _storage_key(output) else None


class Activations(Sequence):
    """The recorded activations (or gradients), one per record (None where nothing was kept).

    A list to its readers; a norm layer's output that an in-place op overwrote during the pass
    is recomputed from its input on first read (and kept). :meth:`peek` reads without keeping,
    for code that goes through the layers one at a time.
    """

    def __init__(self, values: list) -> None:
        self._values = values

    def __len__(self) -> int:
        return len(self._values)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        value = self._values[i]
        if isinstance(value, _Recompute):
            value = self._values[i] = value()
        return value

    def peek(self, i: int) -> torch.Tensor | None:
        """The value of record ``i``; a recomputed one is not kept."""
        value = self._values[i]
        return value() if isinstance(value, _Recompute) else value

    def kept(self, i: int) -> bool:
        """Whether record ``i`` has an activation (without computing it)."""
        return self._values[i] is not None

    def recomputed(self) -> int:
        """How many activations are recomputed when read (not yet read)."""
        return sum(isinstance(v, _Recompute) for v in self._values)


@dataclass
class Trace:
    """What one pass recorded: per call, the layer record, its activation and (maybe) gradient."""

    records: list[LayerRecord]
    activations: Sequence[torch.Tensor | None]
    gradients: Sequence[torch.Tensor | None] = field(default_factory=list)
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

    A layer's output is recorded as the very tensor the model goes on with. A norm layer's
    output that an in-place op overwrites (ResNet's ``out += identity``, an in-place ReLU after a
    BatchNorm) needs no copy: its input is intact, so the value is recomputed when read
    (:class:`_Recompute`); :meth:`settle` makes it so after the forward, from the version
    counters. An ``nn`` activation module with ``inplace=True`` about to overwrite any other
    recorded output runs out of place for that one call (the trace's forward wrapper asks
    :meth:`needs_copy`). Any other in-place write to a recorded output is only seen after the
    fact: the trace then runs the forward again with this object as a torch-function mode, which
    sees each write coming and copies (or makes recomputable) the value first. Gradients are
    taken at each output's own autograd edge, captured when it was recorded, so they are those of
    the value recorded (every path from it, the in-place op included).
    """

    def __init__(self, acts: list[torch.Tensor | _Recompute | None]) -> None:
        super().__init__()
        self.acts = acts
        self.versions: dict[int, int] = {}
        self.watch: dict[int, list[int]] = {}
        self.sources: dict[int, _Recompute] = {}
        self.originals: list[torch.Tensor] = []
        self.escaped = False

    def add(self, index: int, tensor: torch.Tensor, source: _Recompute | None = None) -> None:
        self.versions[index] = tensor._version
        key = _storage_key(tensor)
        if key is not None:
            self.watch.setdefault(key, []).append(index)
            if source is not None:
                self.sources[index] = source

    def needs_copy(self, tensor: object) -> bool:
        """Whether overwriting ``tensor`` would lose a recorded output that cannot be recomputed."""
        if not isinstance(tensor, torch.Tensor):
            return False
        return any(not (i in self.sources and self.sources[i].intact())
                   for i in self.watch.get(_storage_key(tensor), ()))

    def _recompute_instead(self, i: int, t: torch.Tensor) -> bool:
        source = self.sources.pop(i, None)
        if source is None or not source.intact():
            return False
        self.originals.append(t)  # kept alive to the end of the pass: same-output detection goes by id()
        self.acts[i] = source
        del self.versions[i]
        return True

    def save_before_write(self, target: torch.Tensor) -> None:
        """(As a torch-function mode) keep what the coming write to ``target`` would destroy."""
        key = _storage_key(target)
        if key is None or key not in self.watch:
            return
        saved: dict[int, torch.Tensor] = {}
        for i in self.watch.pop(key):
            t = self.acts[i]
            if isinstance(t, _Recompute):
                # its input is about to change: compute the value now, while the input holds
                self.escaped |= not t.intact()
                self.acts[i] = t()
                continue
            if t is None or i not in self.versions:
                continue
            if t._version != self.versions[i]:
                self.escaped = True  # written already, by a call this mode did not see
            if self._recompute_instead(i, t):
                self.watch.setdefault(_storage_key(self.acts[i].input), []).append(i)
                continue
            if id(t) not in saved:
                saved[id(t)] = t.detach().clone()
            self.originals.append(t)
            self.acts[i] = saved[id(t)]
            del self.versions[i]

    def settle(self) -> bool:
        """After the forward: overwritten norm outputs become recomputations. False when a recorded
        value was lost (overwritten, and not recomputable)."""
        intact = not self.escaped
        for i, v in list(self.versions.items()):
            t = self.acts[i]
            if t is None or (t._version != v and not self._recompute_instead(i, t)):
                intact = False
        return intact and all(a.intact() for a in self.acts if isinstance(a, _Recompute))

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.watch:
            target = written_tensor(func, args, kwargs)
            if target is not None:
                self.save_before_write(target)
        return func(*args, **kwargs)


#: Models whose forward writes in place to a recorded output the trace cannot recompute: their
#: traces run with the copy-on-write torch-function mode from the start.
_WRITES_IN_PLACE: weakref.WeakSet[nn.Module] = weakref.WeakSet()


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


class LayerSink(Protocol):
    """Takes each layer's activation and gradient during the backward (``run_trace(sink=...)``).

    The gradient of a layer is complete when autograd is about to go through the op that made
    the layer's output; the sink gets it then, with the activation, and what it takes the trace
    does not keep: memory falls as the backward proceeds, and nothing is read twice.
    """

    def start(self, logits: torch.Tensor, targets: torch.Tensor, total: int) -> None:
        """Before the backward: the logits, the targets and how many layers :meth:`layer` will get."""

    def layer(self, index: int, record: LayerRecord, activation: torch.Tensor, gradient: torch.Tensor) -> bool:
        """One layer's activation and d score / d activation; True: taken (the trace drops both)."""


def _backward_into(sink: LayerSink, score: torch.Tensor, records: list[LayerRecord], acts: list,
                   edges: dict[int, GradientEdge], wanted: list[int], logits: torch.Tensor,
                   targets: torch.Tensor) -> list[torch.Tensor | None]:
    """The backward of ``score`` with each layer's gradient handed to ``sink`` as it arrives.

    A hook before each recorded op's backward node sees the gradient of its outputs. A node with
    no recorded node below it (the first layer's; a branch fed by parameters only) does not run,
    since nothing below it is asked for: its gradient is asked for instead. A layer no gradient
    reaches gets zeros. Returns the gradients the sink declined (None elsewhere).
    """
    grads: list[torch.Tensor | None] = [None] * len(acts)
    todo = [i for i, rec in enumerate(records) if rec.same_as is None and acts[i] is not None]
    sink.start(logits, targets, len(todo))
    done: set[int] = set()

    def deliver(i: int, g: torch.Tensor | None) -> None:
        if i in done:
            return
        done.add(i)
        a = acts[i]
        a = (a() if isinstance(a, _Recompute) else a).detach()
        g = torch.zeros_like(a) if g is None else g.detach()
        if sink.layer(i, records[i], a, g):
            acts[i] = None
        else:
            acts[i], grads[i] = a, g

    by_node: dict[object, list[tuple[int, int]]] = {}
    for i in wanted:
        by_node.setdefault(edges[i].node, []).append((edges[i].output_nr, i))
    # A recorded op whose node leads down to another recorded op's node runs in this backward
    # (autograd runs every node on a path to what it is asked for), so its hook sees its
    # gradient; the others (the first layer, parameter-only branches) are asked for directly.
    # Nothing else is asked for, so the graph is freed as the backward goes (no retain_graph).
    below = _reaches(score.grad_fn, by_node) if score.grad_fn is not None else {}
    capture = [i for i in wanted if not below.get(edges[i].node, False)]
    hooks = []
    try:
        for node, items in by_node.items():
            if below.get(node, False):
                def hook(grad_outputs, items=items):
                    for nr, i in items:
                        deliver(i, grad_outputs[nr] if nr < len(grad_outputs) else None)
                hooks.append(node.register_prehook(hook))
        # (capture is never empty when wanted is not: the graph is finite, so some recorded node
        # has no recorded node below it)
        if capture and score.requires_grad:
            got = torch.autograd.grad(score.sum(), [edges[i] for i in capture], allow_unused=True)
            for i, g in zip(capture, got):
                deliver(i, g)
    finally:
        for h in hooks:
            h.remove()
    for i in todo:
        deliver(i, None)  # no gradient reaches it: zeros
    return grads


def _shadow_forward(mod: nn.Module, wrap: Callable[[nn.Module, Callable], Callable]) -> Callable[[], None]:
    """Run ``mod`` through ``wrap(mod, its forward)`` until the returned undo is called.

    The wrapper goes into the instance's ``__dict__``, where it shadows the class's ``forward``
    (a forward the instance already had is wrapped, and put back by the undo).
    """
    own = mod.__dict__.get("forward")
    mod.__dict__["forward"] = wrap(mod, own if own is not None else type(mod).forward.__get__(mod))

    def undo() -> None:
        if own is not None:
            mod.__dict__["forward"] = own
        else:
            mod.__dict__.pop("forward", None)
    return undo


def _reaches(root: object, targets: Mapping[object, object]) -> dict[object, bool]:
    """For every autograd node below ``root``: whether a node in ``targets`` lies strictly below it."""
    below: dict[object, bool] = {}
    children: dict[object, list[object]] = {}
    stack = [root]
    while stack:
        node = stack[-1]
        if node in below:
            stack.pop()
            continue
        kids = children.get(node)
        if kids is None:
            kids = children[node] = [c for c, _ in node.next_functions if c is not None]
            pending = [c for c in kids if c not in below]
            if pending:
                stack.extend(pending)
                continue
        stack.pop()
        below[node] = any(c in targets or below.get(c, False) for c in kids)
    return below


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
    sink: LayerSink | None = None,
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
        sink: with gradients, hand each layer's activation and gradient to ``sink`` during the
            backward, as the gradient arrives (see :class:`LayerSink`); the trace keeps only
            what the sink declines.

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
    undo: list[Callable[[], None]] = []
    # id(tensor) -> (record index, version): outputs that are the very tensor an earlier record
    # produced (a Sequential and its last child): their CAM is computed once and shared.
    # Each entry holds its tensor, so no id() is reused by a new tensor during the pass.
    produced: dict[int, tuple[int, int, torch.Tensor]] = {}
    recorder = _Recorder(acts)
    # copy-on-write (the recorder) keeps recorded values intact, unless every output is copied anyway
    on_write = keep_activations and not copy_outputs
    # watch write by write (the recorder as a torch-function mode) a model known to need it
    watching = on_write and model in _WRITES_IN_PLACE
    # the recorder's torch-function mode has nothing to do with the trace's own bookkeeping
    own_bookkeeping = torch._C.DisableTorchFunction if watching else nullcontext

    # Each selected module (and each nn activation that may run in place) gets its forward wrapped
    # for the pass, as an instance attribute that shadows the class's forward: Module.__call__
    # then stays on its fast path (no hooks), and unselected modules cost nothing.
    def wrapped(mod: nn.Module, forward: Callable) -> Callable:
        key = id(mod)
        name = name_of.get(key, "")
        is_selected, is_activation = key in selected, key in activations

        def forward_and_record(*args, **kwargs):
            t0 = time.perf_counter()
            flip = on_write and is_activation and args and _needs_copy(args[0])
            if flip:
                # an nn activation about to overwrite a recorded output runs out of place for this call
                mod.__dict__["inplace"] = False
            try:
                output = forward(*args, **kwargs)
            finally:
                if flip:
                    mod.__dict__["inplace"] = True
            if not is_selected:
                return output
            with own_bookkeeping():
                replaced = record(name, mod, args, output, t0)
            return output if replaced is None else replaced

        return forward_and_record

    def _needs_copy(tensor: object) -> bool:
        with own_bookkeeping():
            return recorder.needs_copy(tensor)

    def record(name, mod, args, output, t0):
        seconds = time.perf_counter() - t0
        k = calls[name] = calls.get(name, 0) + 1
        tensor = _first_tensor(output)
        layout = layout_ctx.detect(mod, tensor, args, name if k == 1 else f"{name}#{k}")
        index = len(records)
        same = None
        if tensor is not None and id(tensor) in produced:
            earlier, version, _ = produced[id(tensor)]
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
                produced[id(copy)] = (index, copy._version, copy)
                layout_ctx.remember(copy, layout)
                return copy
            acts[-1] = tensor.detach().clone()
            produced[id(tensor)] = (index, tensor._version, tensor)
            return None
        produced[id(tensor)] = (index, tensor._version, tensor)
        recorder.add(index, tensor, _recompute_source(mod, args, tensor) if on_write else None)
        return None

    x = input_tensor
    if gradients and not x.requires_grad:
        # Activations must require grad even when the user froze every parameter.
        x = x.detach().requires_grad_(True)
    layout_ctx = LayoutContext.for_model(model, x, layouts, named=walked)
    logits = None
    try:
        for _, mod in walked:
            if id(mod) in selected or id(mod) in activations:
                undo.append(_shadow_forward(mod, wrapped))
        with eval_mode(model), torch.set_grad_enabled(gradients):
            if watching:
                with recorder:
                    out = model(x)
            else:
                out = model(x)
            if on_write and not recorder.settle():
                while undo:
                    undo.pop()()
                if not watching:
                    logger.info("the model writes in place to a recorded output: tracing again, copying before writes")
                    _WRITES_IN_PLACE.add(model)
                else:
                    logger.info("an in-place write escaped copy-on-write: tracing again with every output copied")
                return run_trace(model, input_tensor, layers, targets=targets, gradients=gradients,
                                 keep_activations=keep_activations, output_key=output_key, score=score,
                                 layouts=layouts, copy_outputs=watching, sink=sink)
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
                if sink is not None:
                    grads = _backward_into(sink, s, records, acts, edges, wanted, logits.detach(), tgt)
                else:
                    got = (torch.autograd.grad(s.sum(), [edges[i] for i in wanted], allow_unused=True)
                           if wanted and s.requires_grad else [None] * len(wanted))
                    grads = [None] * len(acts)
                    for i, g in zip(wanted, got):
                        grads[i] = g
                for i, a in enumerate(acts):
                    if records[i].same_as is not None:
                        grads[i] = grads[records[i].same_as]
                    elif a is not None and grads[i] is None and sink is None:
                        grads[i] = torch.zeros_like(a.input if isinstance(a, _Recompute) else a)
            for i, a in enumerate(acts):
                if isinstance(a, _Recompute):
                    a.input = a.input.detach()
                elif a is not None:
                    acts[i] = a.detach()
            for i, rec in enumerate(records):
                if rec.same_as is not None:
                    acts[i] = acts[rec.same_as]
    finally:
        while undo:
            undo.pop()()
        edges.clear()
        produced.clear()
        recorder.originals.clear()
    return Trace(records=records, activations=Activations(acts), gradients=Activations(grads),
                 logits=logits.detach(), targets=tgt)
