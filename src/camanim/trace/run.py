"""The pass: one forward (and one backward) that records every selected layer.

Each selected module's ``forward`` is wrapped for the pass; each module *call* gives one record,
in the order calls finish (a container finishes after its children). A module called k times in
one forward (ResNet's shared ``relu``) gives k records named ``name``, ``name#2``, ... Gradients
are taken at each recorded output's own autograd edge, never with module backward hooks, so
in-place ReLU is safe. Every wrapper is removed on every path, errors included.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import nn
from torch.autograd.graph import GradientEdge, get_gradient_edge

from ..errors import InputError
from .backward import GradientChecks, LayerSink, backward_into, no_gradient
from .inplace import Recorder, recompute_source
from .layouts import LayoutContext, LayoutEvidence
from .model import class_logits, describe_output, eval_mode, first_tensor, logits_of, switched_by_a_pass
from .records import Activations, LayerRecord, Recompute, Trace
from .select import LayerSpec, refuse_torchscript, select_names

logger = logging.getLogger(__name__)

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

#: Models whose forward writes in place to a recorded output the trace cannot recompute: their
#: traces run with the copy-on-write torch-function mode from the start.
WRITES_IN_PLACE: weakref.WeakSet[nn.Module] = weakref.WeakSet()


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


#: the pass this thread is recording now (set only while its forward runs)
_LOCAL = threading.local()
#: modules with the shared recording wrapper: id -> [module, passes using it, its own forward or None]
_WRAPPED: dict[int, list] = {}
_WRAP_LOCK = threading.Lock()


def _recording_forward(mod: nn.Module, forward: Callable) -> Callable:
    """``forward`` that hands the call to the pass this thread is recording, if it wants it.

    A call from any other thread, or one made after the pass's forward returned (a checkpointed
    segment run again during the backward), goes straight to ``forward``: not recorded, not changed.
    """
    key = id(mod)

    def forward_or_record(*args, **kwargs):
        tp = getattr(_LOCAL, "active", None)
        if tp is None and switched_by_a_pass(mod):
            warnings.warn("camanim: this forward ran in eval mode: a camanim pass on another thread switched the "
                          "shared model from training to eval mode while it runs; explain a copy of a model that "
                          "trains (copy.deepcopy(model).eval()), or call model.eval() before sharing it",
                          RuntimeWarning, stacklevel=2)
        if tp is None or key not in tp.wrapped:
            return forward(*args, **kwargs)
        return tp.call(mod, forward, args, kwargs)

    return forward_or_record


def _shadow_forward(mod: nn.Module) -> Callable[[], None]:
    """Route ``mod``'s calls through :func:`_recording_forward` until the returned undo is called.

    The wrapper goes into the instance's ``__dict__``, where it shadows the class's ``forward``
    (a forward the instance already had is wrapped, and put back by the last undo). Passes that
    overlap (threads) share one wrapper per module; each call goes to the calling thread's pass.
    """
    with _WRAP_LOCK:
        entry = _WRAPPED.get(id(mod))
        if entry is None or entry[0] is not mod:
            own = mod.__dict__.get("forward")
            # (getattr, not the class's descriptor: a TorchScript module's forward is found only so)
            mod.__dict__["forward"] = _recording_forward(mod, own if own is not None else mod.forward)
            entry = _WRAPPED[id(mod)] = [mod, 0, own]
        entry[1] += 1

    def undo() -> None:
        with _WRAP_LOCK:
            entry[1] -= 1
            if entry[1] == 0:
                _WRAPPED.pop(id(mod), None)
                if entry[2] is not None:
                    mod.__dict__["forward"] = entry[2]
                else:
                    mod.__dict__.pop("forward", None)
    return undo


@contextmanager
def _recording(tp: _Pass) -> Iterator[None]:
    """This thread's module calls go to ``tp`` (only while the block runs: the forward)."""
    before = getattr(_LOCAL, "active", None)
    _LOCAL.active = tp
    try:
        yield
    finally:
        _LOCAL.active = before


class _Pass:
    """The state of one traced forward: what is selected, what was recorded, and how it is kept.

    ``on_write``: copy-on-write (the :class:`Recorder`) keeps recorded values intact, unless every
    output is copied anyway (``copy_outputs``). ``watching``: the recorder runs as a torch-function
    mode from the start, for a model known to write in place to recorded outputs.
    """

    def __init__(self, model: nn.Module, layers: LayerSpec, keep_activations: bool, copy_outputs: bool,
                 gradients: bool = False) -> None:
        self.want_gradients = gradients
        self.walked = list(model.named_modules())
        chosen = set(select_names([(n, m) for n, m in self.walked if n], layers))
        # A TorchScript submodule runs its children in TorchScript, never as Python: it is one
        # opaque layer (its own output); its children are left out, and named (see run_trace).
        compiled = [n + "." for n, m in self.walked if n and isinstance(m, torch.jit.ScriptModule)]
        inside = {n for n, _ in self.walked if any(n.startswith(c) for c in compiled)}
        self.opaque = sorted(chosen & inside, key=[n for n, _ in self.walked].index)
        chosen -= inside
        self.params_of = _params_per_module(self.walked)
        self.name_of = {id(m): n for n, m in self.walked}
        self.selected = {id(m) for n, m in self.walked if n in chosen}
        self.activations = {id(m) for n, m in self.walked if _is_torch_activation(m) and n not in inside}
        self.wrapped = self.selected | self.activations
        self.keep, self.copy_outputs = keep_activations, copy_outputs
        self.calls: dict[str, int] = {}
        self.records: list[LayerRecord] = []
        self.acts: list[Any] = []
        self.edges: dict[int, GradientEdge] = {}
        # id(tensor) -> (record index, version): outputs that are the very tensor an earlier record
        # produced (a Sequential and its last child): their CAM is computed once and shared.
        # Each entry holds its tensor, so no id() is reused by a new tensor during the pass.
        self.produced: dict[int, tuple[int, int, torch.Tensor]] = {}
        # record index -> (a recorded output that is a view, its version then, its base's edge then)
        self.views: dict[int, tuple[torch.Tensor, int, GradientEdge]] = {}
        # record index -> how its gradient is read from the edge's (the view of its base's gradient)
        self.read_grad: dict[int, Callable[[torch.Tensor], torch.Tensor]] = {}
        self.recorder = Recorder(self.acts)
        self.on_write = keep_activations and not copy_outputs
        self.watching = self.on_write and model in WRITES_IN_PLACE
        # The trace's own bookkeeping (shapes, version counters, fingerprints, storage keys) runs
        # with every torch-function mode off: the recorder has nothing to do with it, and layout
        # evidence is about the model's ops, not ours (a copy the trace hands the model is placed
        # by ``remember``). Left on, the evidence mode saw some 30 calls of ours per layer.
        self.own_bookkeeping = torch._C.DisableTorchFunction
        self.layouts: LayoutContext | None = None

    def call(self, mod: nn.Module, forward: Callable, args: tuple, kwargs: dict) -> object:
        """One call of a wrapped module in this pass: recorded (selected modules), out of place when it must.

        An nn activation with ``inplace=True`` about to overwrite a recorded output that cannot be
        recomputed gets a copy of its input for this call (the module itself is left as it is:
        other threads may be running it).
        """
        key = id(mod)
        t0 = time.perf_counter()
        given = args
        if self.on_write and key in self.activations and args and self.needs_copy(args[0]):
            args = (args[0].clone(), *args[1:])
        output = forward(*args, **kwargs)
        if key not in self.selected:
            return output
        with self.own_bookkeeping():
            # recorded with the input the model gave (its layout is the one known)
            replaced = self.record(self.name_of.get(key, ""), mod, given, output, t0)
        return output if replaced is None else replaced

    def needs_copy(self, tensor: object) -> bool:
        with self.own_bookkeeping():
            return self.recorder.needs_copy(tensor)

    def record(self, name: str, mod: nn.Module, args: tuple, output: object, t0: float) -> object | None:
        """Record one call; returns a replacement output for the model to go on with, or None."""
        seconds = time.perf_counter() - t0
        k = self.calls[name] = self.calls.get(name, 0) + 1
        call_name = name if k == 1 else f"{name}#{k}"
        tensor = first_tensor(output)
        assert self.layouts is not None
        layout = self.layouts.detect(mod, tensor, args, call_name)
        flags = {"layout": self.layouts.reason} if self.layouts.reason else {}
        index = len(self.records)
        same = None
        if tensor is not None and id(tensor) in self.produced:
            earlier, version, _ = self.produced[id(tensor)]
            # An in-place op (ReLU(inplace=True)) returns its input object with new values:
            # only an unchanged version counter means "the same output".
            same = earlier if tensor._version == version else None
            if same is not None and "layout" in self.records[same].flags and "layout" not in flags:
                flags["layout"] = self.records[same].flags["layout"]  # the very tensor: the same reason
        self.records.append(LayerRecord(
            index=index, name=call_name, module=name, type=type(mod).__name__,
            shape=tuple(tensor.shape) if tensor is not None else (), layout=layout,
            params=self.params_of.get(name, 0), seconds=seconds, call=k, same_as=same, flags=flags))
        if tensor is None or not self.keep:
            self.acts.append(None)
            return None
        if same is not None:
            # Same tensor object as an earlier record: reuse its activation (and later its CAM).
            self.acts.append(self.acts[same])
            return None
        self.acts.append(tensor)
        if tensor.requires_grad and torch.is_grad_enabled():
            self.edges[index] = _edge(tensor)
            if tensor._base is not None:
                # A view: a later write to its memory (through it, another view, or its base) gives
                # it a new autograd node and leaves the one above cut off; its base's node is kept.
                self.views[index] = (tensor, tensor._version, _edge(tensor._base))
        elif self.want_gradients and not torch.is_grad_enabled():
            self.records[-1].flags["gradient"] = (
                "the layer ran without autograd (torch.no_grad inside the model, or reentrant activation "
                "checkpointing): no gradient reaches it, so gradient methods give it no map")
        if self.copy_outputs:
            return self._copied(index, tensor, output, layout)
        self.produced[id(tensor)] = (index, tensor._version, tensor)
        self.recorder.add(index, tensor, recompute_source(mod, args, tensor) if self.on_write else None)
        return None

    def _copied(self, index: int, tensor: torch.Tensor, output: object, layout: str) -> object | None:
        if isinstance(output, torch.Tensor) and index in self.edges:
            # The model continues on a copy, so no later op can overwrite what we recorded.
            copy = output.clone()
            self.produced[id(copy)] = (index, copy._version, copy)
            assert self.layouts is not None
            self.layouts.remember(copy, layout)
            return copy
        self.acts[-1] = tensor.detach().clone()
        self.produced[id(tensor)] = (index, tensor._version, tensor)
        return None

    def cut_views(self) -> None:
        """After the forward: a recorded view whose memory was written since takes its gradient at its base.

        The write moved the view's autograd history (its node above is no longer on the score's
        path); its base's node, noted when the view was recorded, still gets the gradient of that
        memory, every path included, and the view's own slice of it is the recorded value's.
        """
        for i, (view, version, base_edge) in self.views.items():
            if view._version != version:
                self.edges[i] = base_edge
                self.read_grad[i] = view._view_func
        self.views.clear()

    def gradients(self, s: torch.Tensor, logits: torch.Tensor, tgt: torch.Tensor, sink: LayerSink | None,
                  leaves: Callable[[], Sequence[torch.Tensor]] = tuple) -> list[torch.Tensor | None] | None:
        """d ``s`` / d activation per record: into ``sink`` during the backward, or all at once.

        A layer no gradient reaches, or whose gradient is zero everywhere, is flagged (``flags``)
        and named in one warning: its map would be empty. None when a recorded value the recorder
        left to be checked as it was read (``settle(defer_values=True)``) was changed: the pass is void.
        """
        records, acts, edges = self.records, self.acts, self.edges
        self.cut_views()
        wanted = [i for i in edges if records[i].same_as is None]
        missing: dict[int, str] = {i: no_gradient(None) for i, a in enumerate(acts)
                                   if i not in edges and records[i].same_as is None
                                   and isinstance(a, torch.Tensor) and a.is_floating_point()}
        if sink is None and wanted and s.grad_fn is not None and _has_reentrant_checkpoint(s.grad_fn):
            sink = _KeepAll()  # torch.autograd.grad refuses such a graph: backward_into does without it
        if sink is not None:
            grads = backward_into(sink, s, records, acts, edges, wanted, logits.detach(), tgt,
                                  read=self.read_grad, missing=missing, leaves=leaves, on_read=self.recorder.read)
            if not self.recorder.values_intact():
                return None
        else:
            got = (torch.autograd.grad(s.sum(), [edges[i] for i in wanted], allow_unused=True)
                   if wanted and s.requires_grad else [None] * len(wanted))
            grads = [None] * len(acts)
            checks = GradientChecks(missing)
            for i, g in zip(wanted, got):
                if g is not None and i in self.read_grad:
                    g = self.read_grad[i](g)
                grads[i] = g
                checks.add(i, g)
            checks.settle()
        for i, a in enumerate(acts):
            if records[i].same_as is not None:
                grads[i] = grads[records[i].same_as]
            elif a is not None and grads[i] is None and sink is None:
                grads[i] = torch.zeros_like(a.input if isinstance(a, Recompute) else a)
        for i, why in missing.items():
            records[i].flags.setdefault("gradient", why)
        for rec in records:
            if rec.same_as is not None and "gradient" in records[rec.same_as].flags:
                rec.flags["gradient"] = records[rec.same_as].flags["gradient"]
        flagged = [r.name for r in records if "gradient" in r.flags]
        if flagged:
            shown = ", ".join(flagged[:6]) + (f" and {len(flagged) - 6} more" if len(flagged) > 6 else "")
            warnings.warn(f"camanim: no usable gradient of the score at {len(flagged)} layer(s) ({shown}): "
                          "gradient methods give them an empty map; the manifest's 'flags' say why",
                          RuntimeWarning, stacklevel=3)
        return grads

    def detach(self) -> None:
        """Activations without their graph; shared outputs point at their first record's value."""
        for i, a in enumerate(self.acts):
            if isinstance(a, Recompute):
                a.input = a.input.detach()
            elif a is not None:
                self.acts[i] = a.detach()
        for i, rec in enumerate(self.records):
            if rec.same_as is not None:
                self.acts[i] = self.acts[rec.same_as]

    def release(self) -> None:
        self.edges.clear()
        self.produced.clear()
        self.recorder.originals.clear()


class _KeepAll:
    """A :class:`LayerSink` that takes nothing: the trace keeps every activation and gradient."""

    def start(self, logits: torch.Tensor, targets: torch.Tensor, total: int) -> None:
        pass

    def layer(self, index: int, record: LayerRecord, activation: torch.Tensor, gradient: torch.Tensor) -> bool:
        return False


def _has_reentrant_checkpoint(root: object) -> bool:
    """Whether a reentrant activation checkpoint (``use_reentrant=True``) lies in the graph below ``root``."""
    seen, stack = set(), [root]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        if type(node).__name__ == "CheckpointFunctionBackward":
            return True
        seen.add(node)
        stack.extend(c for c, _ in node.next_functions)
    return False


def _targets_of(logits: torch.Tensor, targets: Sequence[int] | torch.Tensor | None) -> torch.Tensor:
    if targets is None:
        return class_logits(logits).argmax(dim=1)  # a one-logit model: class 1 where its logit is positive
    tgt = torch.as_tensor(list(targets) if not isinstance(targets, torch.Tensor) else targets,
                          device=logits.device).long().view(-1)
    return tgt.expand(logits.shape[0]) if tgt.numel() == 1 and logits.shape[0] > 1 else tgt


def run_trace(
    model: nn.Module,
    input_tensor: torch.Tensor,
    layers: LayerSpec = "all",
    *,
    targets: Sequence[int] | torch.Tensor | None = None,
    gradients: bool = True,
    keep_activations: bool = True,
    output_key: str | int | None = None,
    score: ScoreFn | None = None,
    layouts: Mapping[str, str] | None = None,
    copy_outputs: bool = False,
    sink: LayerSink | None = None,
    read_output: bool = True,
) -> Trace:
    """Run the single forward (and backward) pass and record every selected layer.

    Args:
        model: any ``nn.Module``; its train/eval flags are restored afterwards.
        input_tensor: (B, C, H, W) input, on the model's device.
        layers: see :func:`camanim.trace.select_layers`.
        targets: class index per image (default: each image's predicted class).
        gradients: also compute d score / d activation for every recorded layer (one backward).
        keep_activations: keep the activations (False: only shapes, e.g. for ``camanim layers``).
        output_key: how to find the logits in a tuple/dict output.
        score: ``score(logits, targets) -> (B,)`` to differentiate; default the target logits.
        layouts: ``{layer name: layout}`` overriding detection (see :mod:`camanim.trace.layouts`).
        copy_outputs: hand the model a copy of every recorded output (the slow, always-safe way;
            used by itself when an in-place write escaped the copy-on-write of :class:`Recorder`).
        sink: with gradients, hand each layer's activation and gradient to ``sink`` during the
            backward, as the gradient arrives (see :class:`LayerSink`); the trace keeps only
            what the sink declines.
        read_output: False: the model's output is not read as logits (``logits`` and ``targets`` are None;
            only without gradients): ``camanim layers`` lists the layers of any model, a detector's too.

    Returns:
        A :class:`Trace`: the records in execution order, with activations (B, ...) and gradients
        of the same shapes, the logits (B, K) and the explained classes (B,).

    Raises:
        InputError: the layer pattern selects nothing, or none of the selected layers ran (zero
            records are never returned); ``model`` is a TorchScript module (its forward cannot be
            recorded); a ``layouts`` entry is malformed; or the model's output holds no (batch,
            classes) logits (name them with ``output_key``).
    """
    refuse_torchscript(model)
    tp = _Pass(model, layers, keep_activations, copy_outputs, gradients)
    x = fed = input_tensor
    if gradients and not x.requires_grad:
        # Activations must require grad even when the user froze every parameter. The model gets a
        # copy, not the leaf: a forward that writes into its input in place is allowed by autograd
        # then, and leaves the caller's tensor as it was.
        x = x.detach().requires_grad_(True)
        fed = x.clone()
    tp.layouts = LayoutContext.for_model(model, fed, layouts, named=tp.walked)
    undo: list[Callable[[], None]] = []
    try:
        for _, mod in tp.walked:
            if id(mod) in tp.wrapped:
                undo.append(_shadow_forward(mod))
        with eval_mode(model), torch.set_grad_enabled(gradients):
            with tp.recorder if tp.watching else nullcontext(), LayoutEvidence(tp.layouts), _recording(tp):
                out = model(fed)
            if not tp.records:
                compiled = (f" ({len(tp.opaque)} of them inside TorchScript submodules, which run no Python "
                            "forward: select the submodule itself)") if tp.opaque else ""
                raise InputError(f"none of the {len(tp.selected) + len(tp.opaque)} selected layers ran in the "
                                 f"model's forward{compiled}, so there is no layer to explain: select layers its "
                                 "forward calls (see 'camanim layers')")
            if tp.opaque:
                shown = ", ".join(tp.opaque[:6]) + (f" and {len(tp.opaque) - 6} more" if len(tp.opaque) > 6 else "")
                warnings.warn(f"camanim: {len(tp.opaque)} selected layer(s) inside TorchScript submodule(s) ({shown}) "
                              "run no Python forward and are not recorded; each TorchScript submodule is one layer "
                              "(its output)", RuntimeWarning, stacklevel=2)

            def again() -> Trace:
                """The pass again, watching writes (or copying every output, if watching did not do)."""
                while undo:
                    undo.pop()()
                if not tp.watching:
                    logger.info("the model writes in place to a recorded output: tracing again, copying before writes")
                    WRITES_IN_PLACE.add(model)
                else:
                    logger.info("an in-place write escaped copy-on-write: tracing again with every output copied")
                return run_trace(model, input_tensor, layers, targets=targets, gradients=gradients,
                                 keep_activations=keep_activations, output_key=output_key, score=score,
                                 layouts=layouts, copy_outputs=tp.watching, sink=sink, read_output=read_output)

            # With a sink every recorded value is read during the backward: its fingerprint is
            # compared then (one read of it fewer than comparing here).
            if tp.on_write and not tp.recorder.settle(defer_values=gradients and sink is not None):
                return again()
            if not read_output and not gradients:
                tp.detach()
                return Trace(records=tp.records, activations=Activations(tp.acts), gradients=Activations([]))
            logits = logits_of(out, output_key)
            if logits.ndim != 2:
                raise InputError(f"the model's output has shape {tuple(logits.shape)}, not (batch, classes): "
                                 + ("for a segmentation model explain a class's region with --target seg:CLASS, "
                                    if logits.ndim == 4 else "")
                                 + "or give a target that reads one scalar per image from the output (see README, "
                                 "'Tasks')")
            if logits.shape[0] != input_tensor.shape[0]:
                raise InputError(f"the model's output gives {logits.shape[0]} rows for {input_tensor.shape[0]} "
                                 f"image(s) ({describe_output(out)}): a target must give one scalar per image")
            tgt = _targets_of(logits, targets)
            grads: list[torch.Tensor | None] = []
            if gradients:
                s = score(logits, tgt) if score is not None else class_logits(logits).gather(1, tgt.view(-1, 1)).squeeze(1)
                got = tp.gradients(s, logits, tgt, sink, leaves=lambda: [*model.parameters(), x])
                if got is None:
                    return again()
                grads = got
            tp.detach()
    finally:
        while undo:
            undo.pop()()
        tp.release()
    return Trace(records=tp.records, activations=Activations(tp.acts), gradients=Activations(grads),
                 logits=logits.detach(), targets=tgt)
