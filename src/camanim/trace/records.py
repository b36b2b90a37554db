"""What a pass records: one :class:`LayerRecord` per module call, and the activations it kept."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F


@dataclass
class LayerRecord:
    """One module call seen during the pass.

    ``flags`` says, per kind, why the layer's map is missing or cannot be trusted: ``"gradient"``
    (no gradient of the score reaches the recorded output, e.g. it ran under ``torch.no_grad``),
    ``"layout"`` (why the layer is ``non_spatial`` although its output has a spatial shape).
    """

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
    #: what the layer's map cannot be trusted for, by kind (``"gradient"``, ``"layout"``): one line each
    flags: dict[str, str] = field(default_factory=dict)

    @property
    def non_spatial(self) -> bool:
        """Whether the layer has no 2-D map (its layout is ``non_spatial``)."""
        return self.layout == "non_spatial"

    def to_dict(self) -> dict:
        """The record as plain JSON values, for the manifest (``seconds`` rounded to the microsecond)."""
        return {"index": self.index, "name": self.name, "module": self.module, "type": self.type,
                "shape": list(self.shape), "layout": self.layout, "params": self.params,
                "seconds": round(self.seconds, 6), "non_spatial": self.non_spatial, "same_as": self.same_as,
                "flags": dict(self.flags)}


class Recompute:
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
        """Whether the kept input is unchanged since (its version counter), so recomputing is exact."""
        return self.input._version == self.version

    def __call__(self) -> torch.Tensor:
        m = self.module
        with torch.no_grad():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
                # BatchNorm's eval-mode forward, without switching the module's flag (another
                # thread may be running the model)
                batch_stats = m.running_mean is None and m.running_var is None
                return F.batch_norm(self.input, m.running_mean, m.running_var, m.weight, m.bias,
                                    batch_stats, 0.0, m.eps)
            # the class's forward (the instance's may be the trace's recording wrapper); GroupNorm
            # and LayerNorm do not depend on the train flag
            return type(m).forward(m, self.input)


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
        if isinstance(value, Recompute):
            value = self._values[i] = value()
        return value

    def peek(self, i: int) -> torch.Tensor | None:
        """The value of record ``i``; a recomputed one is not kept."""
        value = self._values[i]
        return value() if isinstance(value, Recompute) else value

    def kept(self, i: int) -> bool:
        """Whether record ``i`` has an activation (without computing it)."""
        return self._values[i] is not None

    def recomputed(self) -> int:
        """How many activations are recomputed when read (not yet read)."""
        return sum(isinstance(v, Recompute) for v in self._values)


@dataclass
class Trace:
    """What one pass recorded: per call, the layer record, its activation and (maybe) gradient."""

    records: list[LayerRecord]
    activations: Sequence[torch.Tensor | None]
    gradients: Sequence[torch.Tensor | None] = field(default_factory=list)
    logits: torch.Tensor | None = None
    targets: torch.Tensor | None = None
