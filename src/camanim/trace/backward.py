"""Backward delivery: each layer's activation and complete gradient handed to a sink as autograd reaches it."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import torch
from torch.autograd.graph import GradientEdge

from .records import LayerRecord, Recompute


class LayerSink(Protocol):
    """Takes each layer's activation and gradient during the backward (``run_trace(sink=...)``).

    The gradient of a layer is complete when autograd is about to go through the op that made
    the layer's output; the sink gets it then, with the activation, and what it takes the trace
    does not keep: memory falls as the backward proceeds, and nothing is read twice.
    """

    def start(self, logits: torch.Tensor, targets: torch.Tensor, total: int) -> None:
        """Before the backward: the logits, the targets and how many layers :meth:`layer` will get.

        Called again when the pass runs again (a recorded value was changed behind the trace's back,
        seen as it was read): what the sink took before is void.
        """

    def layer(self, index: int, record: LayerRecord, activation: torch.Tensor, gradient: torch.Tensor) -> bool:
        """One layer's activation and d score / d activation; True: taken (the trace drops both)."""


#: values of a gradient looked at first: any of them not zero settles it without reading the rest
_HEAD = 4096
_ZERO = "the gradient of the score is zero everywhere on this layer's output"


#: dtypes whose first values :func:`_nonzero` reads through numpy (a tenth of a torch call's overhead)
_NUMPY = frozenset({torch.float32, torch.float64, torch.float16})


def _nonzero(gradient: torch.Tensor) -> bool:
    """Whether any value of ``gradient`` is not zero (NaN counts), reading its first values first.

    (``Tensor.any`` over a whole float tensor is slower than a sum on the CPU; a gradient that is
    not zero almost always shows it within its first few thousand values.)
    """
    if not gradient.is_contiguous():
        return bool(gradient.any())
    if (gradient.is_cpu and gradient.dtype in _NUMPY and not gradient.requires_grad
            and not gradient.is_neg()):
        values = gradient.numpy().reshape(-1)
        if values[:_HEAD].any():
            return True
        if values.size <= _HEAD:
            return False
    elif gradient.numel() > _HEAD and bool(gradient.view(-1)[:_HEAD].any()):
        return True
    return bool(gradient.any())


def no_gradient(gradient: torch.Tensor | None) -> str:
    """Why a layer's gradient gives no map (one line), or '' when it can give one."""
    if gradient is None:
        return ("no gradient of the score reaches this layer's output (it feeds nothing the score depends on, "
                "or the model detached it)")
    if not _nonzero(gradient):
        return _ZERO
    return ""


class GradientChecks:
    """:func:`no_gradient` for every layer of a backward, read from an accelerator once for all.

    On the CPU each gradient is looked at when it arrives (nothing to wait for); elsewhere whether
    it is zero stays on the device (one reduction, no wait) until :meth:`settle` reads them all.
    """

    def __init__(self, missing: dict[int, str]) -> None:
        self.missing = missing
        self.pending: dict[int, torch.Tensor] = {}

    def add(self, index: int, gradient: torch.Tensor | None) -> None:
        """Note why layer ``index``'s gradient gives no map, if it gives none (now or at :meth:`settle`)."""
        if gradient is not None and not gradient.is_cpu:
            self.pending[index] = gradient.any()
            return
        why = no_gradient(gradient)
        if why:
            self.missing[index] = why

    def settle(self) -> dict[int, str]:
        """``missing``, with every layer whose gradient is zero everywhere (one read of the device)."""
        by_device: dict[torch.device, list[int]] = {}
        for i, flag in self.pending.items():  # a model spread over devices: one read per device
            by_device.setdefault(flag.device, []).append(i)
        for layers in by_device.values():
            for i, nonzero in zip(layers, torch.stack([self.pending[i] for i in layers]).tolist()):
                if not nonzero:
                    self.missing[i] = _ZERO
        self.pending.clear()
        return self.missing


def backward_into(sink: LayerSink, score: torch.Tensor, records: list[LayerRecord], acts: list,
                   edges: dict[int, GradientEdge], wanted: list[int], logits: torch.Tensor,
                   targets: torch.Tensor, *, read: Mapping[int, Callable] | None = None,
                   missing: dict[int, str] | None = None,
                   leaves: Callable[[], Sequence[torch.Tensor]] = tuple,
                   on_read: Callable[[int, torch.Tensor], None] | None = None) -> list[torch.Tensor | None]:
    """The backward of ``score`` with each layer's gradient handed to ``sink`` as it arrives.

    A hook before each recorded op's backward node sees the gradient of its outputs. A node with
    no recorded node below it (the first layer's; a branch fed by parameters only) does not run,
    since nothing below it is asked for: its gradient is asked for instead. A layer no gradient
    reaches gets zeros, and ``missing[index]`` says why (:func:`no_gradient`), as for a gradient
    that is zero everywhere. ``read[index]`` turns the gradient at a layer's edge into its own (a
    view's slice of its base's gradient). Returns the gradients the sink declined (None elsewhere).

    A graph with a reentrant activation checkpoint (``checkpoint(fn, x, use_reentrant=True)``)
    refuses ``torch.autograd.grad``: there every recorded node gets the hook and the whole
    backward runs (``torch.autograd.backward`` without inputs); the ``.grad`` it accumulates on
    the graph's leaves and on ``leaves()`` (the model's parameters, the input) is put back as it was.
    ``on_read(index, activation)`` is called with each activation as it is read, before the sink gets it.
    """
    read = read or {}
    missing = {} if missing is None else missing
    grads: list[torch.Tensor | None] = [None] * len(acts)
    todo = [i for i, rec in enumerate(records) if rec.same_as is None and acts[i] is not None]
    sink.start(logits, targets, len(todo))
    done: set[int] = set()
    checks = GradientChecks(missing)

    def deliver(i: int, g: torch.Tensor | None) -> None:
        if i in done:
            return
        done.add(i)
        a = acts[i]
        a = (a() if isinstance(a, Recompute) else a).detach()
        if on_read is not None:
            on_read(i, a)
        if g is not None and i in read:
            g = read[i](g)
        checks.add(i, g)
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
    whole = any(type(node).__name__ == "CheckpointFunctionBackward" for node in below)
    if whole:
        below = dict.fromkeys(by_node, True)
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
        if whole and wanted and score.requires_grad:
            _backward_keeping_grads(score.sum(), [*leaves(), *_graph_leaves(score.grad_fn)])
        elif capture and score.requires_grad:
            got = torch.autograd.grad(score.sum(), [edges[i] for i in capture], allow_unused=True)
            for i, g in zip(capture, got):
                deliver(i, g)
    finally:
        for h in hooks:
            h.remove()
    for i in todo:
        deliver(i, None)  # no gradient reaches it: zeros
    checks.settle()
    return grads


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


def _graph_leaves(root: object) -> list[torch.Tensor]:
    """The leaf tensors (``AccumulateGrad`` nodes' variables) below ``root``."""
    found, seen, stack = [], set(), [root]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        var = getattr(node, "variable", None)
        if isinstance(var, torch.Tensor):
            found.append(var)
        stack.extend(c for c, _ in node.next_functions)
    return found


def _backward_keeping_grads(score: torch.Tensor, leaves: Sequence[torch.Tensor]) -> None:
    """``score.backward()`` with every ``leaves`` tensor's ``.grad`` put back as it was before."""
    saved = {id(t): (t, t.grad) for t in leaves}
    try:
        torch.autograd.backward(score)
    finally:
        for t, g in saved.values():
            t.grad = g
