"""In-place safety: recorded outputs stay intact while the model writes in place.

See :class:`Recorder` and DEVELOPERS.md ("How trace keeps recorded outputs intact")."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from .records import Recompute

#: Cheap, deterministic modules whose output the trace may recompute from their input (see Recompute).
RECOMPUTABLE = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm, nn.LayerNorm)


def recompute_source(mod: nn.Module, args: tuple, output: torch.Tensor) -> Recompute | None:
    """A :class:`Recompute` of ``mod``'s ``output`` from its input, or None when that is not safe.

    Only for a :data:`RECOMPUTABLE` module called with one tensor that it did not overwrite, with no
    hooks of its own and autocast off (so computing it again gives the very same values).
    """
    if (type(mod) not in RECOMPUTABLE or len(args) != 1 or not isinstance(args[0], torch.Tensor)
            or mod._forward_hooks or mod._forward_pre_hooks or torch.is_autocast_enabled(output.device.type)):
        return None
    key = _storage_key(args[0])
    return Recompute(mod, args[0]) if key is not None and key != _storage_key(output) else None


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


#: a fingerprint's weight vector: one weight per element for tensors up to this size; larger ones
#: are read as rows of this length, each row's dot product weighted again (:func:`fingerprint`)
_ROW = 1 << 20
_WEIGHTS: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}
#: the first n weights, by (device, dtype, n): a dict look-up instead of a slice per fingerprint
_PREFIX: dict[tuple[torch.device, torch.dtype, int], torch.Tensor] = {}
#: dtypes whose values are weighed in place (others are converted first)
_DIRECT = (torch.float32, torch.float64)


def _weights(device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed pseudo-random weights of :func:`fingerprint`: (2**20,) per element, (2**16,) per row.

    Every weight is in ±[0.5, 1.5): no position weighs nearly nothing, and the signs keep a weighted
    sum small, so a small change to one value still moves it. Drawn once from a fixed seed (the same
    weights for a tensor at record time and after the forward), kept per device and dtype.
    """
    key = (device, dtype)
    got = _WEIGHTS.get(key)
    if got is None:
        gen = torch.Generator().manual_seed(0x5EED)

        def draw(n: int) -> torch.Tensor:
            u = torch.rand(n, generator=gen, dtype=torch.float64)
            return torch.where(u < 0.5, -0.5 - 2 * u, 2 * u - 0.5).to(device=device, dtype=dtype)

        got = _WEIGHTS[key] = (draw(_ROW), draw(1 << 16))
    return got


def _prefix(device: torch.device, dtype: torch.dtype, n: int) -> torch.Tensor:
    """The first ``n`` (at most 2**20) per-element weights of :func:`fingerprint`."""
    key = (device, dtype, n)
    w = _PREFIX.get(key)
    if w is None:
        if len(_PREFIX) > 4096:
            _PREFIX.clear()
        w = _PREFIX[key] = _weights(device, dtype)[0][:n]
    return w


def _flat(t: torch.Tensor) -> torch.Tensor:
    """``t``'s values as one contiguous 1-D tensor of float32 or float64: a view where ``t`` is dense
    (contiguous, or in another memory format such as channels last), else a copy."""
    if t.is_complex():
        t = torch.view_as_real(t.resolve_conj())
    if t.dtype not in _DIRECT:
        t = t.to(torch.float32 if t.is_floating_point() else torch.float64)  # exact for halves, ints up to 2**53
    if t.is_contiguous():
        return t.view(-1)
    order = sorted(range(t.ndim), key=lambda d: (-t.stride(d), -t.shape[d]))
    dense = t.permute(order)
    return dense.view(-1) if dense.is_contiguous() else t.reshape(-1)


def fingerprint(tensor: torch.Tensor) -> torch.Tensor:
    """A weighted sum of ``tensor``'s values, fixed pseudo-random weights in ±[0.5, 1.5): a 0-dim tensor.

    Writes autograd does not see (``.data``, numpy views) change no version counter; they change
    this sum, short of a change lost in float rounding or one that keeps it exactly. Unlike a plain
    sum, moving values between positions (a permutation, a channel swap, a flip) changes it, since
    each position has its own weight. One contiguous pass over the tensor in place (a dot product;
    a tensor of more than 2**20 values as rows, each row's dot product weighted again, plus the rest);
    a tensor that is not dense, or neither float32 nor float64, is copied first. Nothing goes to the
    host until fingerprints are compared (:func:`unchanged`); the same tensor, unchanged, gives the
    same result bit for bit (the same kernels on the same memory).
    """
    t = tensor.detach()
    flat = t.view(-1) if t.dtype in _DIRECT and t.is_contiguous() else _flat(t)
    n = flat.numel()
    if n <= _ROW:
        return torch.dot(flat, _prefix(flat.device, flat.dtype, n))
    w, v = _weights(flat.device, flat.dtype)
    rows, rest = divmod(n, _ROW)
    total = None
    for start in range(0, rows, v.numel()):  # (more than 2**36 values: blocks of rows)
        m = min(v.numel(), rows - start)
        block = flat[start * _ROW:(start + m) * _ROW].view(m, _ROW)
        part = torch.dot(torch.mv(block, w), v[:m])
        total = part if total is None else total + part
    if rest:
        total = total + torch.dot(flat[rows * _ROW:], w[:rest])
    return total


def unchanged(before: Sequence[torch.Tensor], after: Sequence[torch.Tensor]) -> bool:
    """Whether every pair of :func:`fingerprint` agrees; one read from the device.

    A fingerprint that is NaN or infinite (an output holding a NaN or an infinity: the weighted sum
    is then that, whatever its other values are) vouches for nothing, so it counts as changed: the
    trace runs again, watching, and then copying every output (correct, at the cost of the passes).
    """
    if len(before) != len(after):
        return False
    if not before:
        return True
    if any(b.device != before[0].device or a.device != b.device for b, a in zip(before, after)):
        # a model spread over devices: one read per device
        on: dict[torch.device, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
        for b, a in zip(before, after):
            if a.device != b.device:
                return False
            pair = on.setdefault(b.device, ([], []))
            pair[0].append(b)
            pair[1].append(a)
        return all(unchanged(bs, as_) for bs, as_ in on.values())
    b, a = torch.stack(list(before)), torch.stack(list(after))
    return bool(((b == a) & b.isfinite()).all())


class Recorder(TorchFunctionMode):
    """Keeps recorded layer outputs intact without copying every one of them.

    A layer's output is recorded as the very tensor the model goes on with. A norm layer's
    output that an in-place op overwrites (ResNet's ``out += identity``, an in-place ReLU after a
    BatchNorm) needs no copy: its input is intact, so the value is recomputed when read
    (:class:`Recompute`); :meth:`settle` makes it so after the forward, from the version
    counters. An ``nn`` activation module with ``inplace=True`` about to overwrite any other
    recorded output gets a copy of its input for that one call (the trace's forward wrapper asks
    :meth:`needs_copy`). Any other in-place write to a recorded output is only seen after the
    fact: the trace then runs the forward again with this object as a torch-function mode, which
    sees each write coming and copies (or makes recomputable) the value first. A recomputed value
    is checked against the output's fingerprint taken when it was recorded, like every other
    value: a write autograd does not see (``.data``, numpy) may have changed the kept input. Gradients are
    taken at each output's own autograd edge, captured when it was recorded, so they are those of
    the value recorded (every path from it, the in-place op included).
    """

    def __init__(self, acts: list[torch.Tensor | Recompute | None]) -> None:
        super().__init__()
        self.acts = acts
        self.versions: dict[int, int] = {}
        self.prints: dict[int, torch.Tensor] = {}
        self.watch: dict[int, list[int]] = {}
        self.sources: dict[int, Recompute] = {}
        self.originals: list[torch.Tensor] = []
        self.escaped = False
        #: fingerprints whose comparison :meth:`settle` left to the reads (:meth:`read`), and those read
        self.deferred: dict[int, torch.Tensor] = {}
        self.after: dict[int, torch.Tensor] = {}
        #: outputs made recomputations (their value is checked against the recorded fingerprint too)
        self.recomputed: set[int] = set()

    def add(self, index: int, tensor: torch.Tensor, source: Recompute | None = None) -> None:
        """Watch the recorded output ``index``: note its version counter and storage, and how to recompute it."""
        self.versions[index] = tensor._version
        self.prints[index] = fingerprint(tensor)
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
        self.recomputed.add(i)
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
            if isinstance(t, Recompute):
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

    def settle(self, defer_values: bool = False) -> bool:
        """After the forward: overwritten norm outputs become recomputations. False when a recorded
        value was lost (overwritten, and not recomputable).

        Writes autograd does not see are found by each output's fingerprint: compared here, or with
        ``defer_values`` as each value is read during the backward (:meth:`read`, then
        :meth:`values_intact`), which reads each output once where the check here reads it once more.
        """
        intact = not self.escaped
        for i, v in list(self.versions.items()):
            t = self.acts[i]
            if t is None or (t._version != v and not self._recompute_instead(i, t)):
                intact = False
        intact = intact and all(a.intact() for a in self.acts if isinstance(a, Recompute))
        if intact and defer_values:
            self.deferred = {i: self.prints[i] for i in self._values_to_check()}
            self.after = {}
        return intact and (defer_values or self._unversioned_writes_missed())

    def read(self, index: int, value: torch.Tensor) -> None:
        """(After ``settle(defer_values=True)``) record ``index``'s value is being read: fingerprint it now."""
        if index in self.deferred and index not in self.after:
            self.after[index] = fingerprint(value)

    def values_intact(self) -> bool:
        """Whether every output whose check :meth:`settle` deferred still had its values when read (those
        not read are looked at now); True when nothing was deferred."""
        if not self.deferred:
            return True
        for i in self.deferred:
            if i not in self.after:
                t = self.acts[i]
                if isinstance(t, Recompute):
                    t = t()
                if not isinstance(t, torch.Tensor):
                    return False
                self.after[i] = fingerprint(t)
        keys = list(self.deferred)
        same = unchanged([self.deferred[i] for i in keys], [self.after[i] for i in keys])
        self.deferred, self.after = {}, {}
        return same

    def _values_to_check(self) -> list[int]:
        """The outputs whose values a fingerprint vouches for after the forward: those their version
        counter calls unchanged, and the recomputations (recomputed from an input that a write autograd
        does not see may have changed)."""
        same = [i for i, v in self.versions.items() if self.acts[i] is not None and self.acts[i]._version == v]
        return same + sorted(i for i in self.recomputed if self.acts[i] is not None)  # (no longer in versions)

    def _unversioned_writes_missed(self) -> bool:
        """Whether every output of :meth:`_values_to_check` still has its values (no ``.data`` or numpy
        write changed it, or a recomputation's input, behind autograd's back)."""
        check = self._values_to_check()
        if not check:
            return True
        with torch._C.DisableTorchFunction():
            now = [fingerprint(t() if isinstance(t := self.acts[i], Recompute) else t) for i in check]
            return unchanged([self.prints[i] for i in check], now)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.watch:
            target = written_tensor(func, args, kwargs)
            if target is not None:
                self.save_before_write(target)
        return func(*args, **kwargs)
