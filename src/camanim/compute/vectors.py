"""Non-spatial layers (global pooling, flatten, ``Linear``, the classifier): shown as stripes, or left out.

Such a layer has no 2-D map, yet the paper shows it: its units light up as vertical lines
over the image ("not informative, but not incorrect"). camanim draws the same evidence
honestly instead: the layer's 1-D vector, activation x gradient per unit (the unit's
first-order contribution to the target score; the activation alone for gradient-free
methods), after ReLU like every CAM, as a coloured stripe across the dimmed image, with a
label that says it is not a location. ``--skip-non-spatial`` drops these layers instead.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..trace import LayerRecord, Trace


@dataclass
class UnitVectors:
    """Per record, the non-spatial layer's 1-D evidence for image 0 (None for spatial layers).

    Attributes:
        values: flattened ``activation * gradient`` (or ``activation``) per record, float32 on the CPU.
        kind: what the values are, for the frame's label.
    """

    values: list[torch.Tensor | None]
    kind: str = "act x grad"

    def subset(self, keep: Sequence[int]) -> UnitVectors:
        """The vectors of the records at indices ``keep``, in that order, with the same ``kind``."""
        return UnitVectors([self.values[i] for i in keep], self.kind)


def unit_vectors(trace: Trace, row: int = 0) -> UnitVectors:
    """The 1-D evidence of every non-spatial record of ``trace`` that kept an activation, for batch row ``row``."""
    values: list[torch.Tensor | None] = []
    with_grad = bool(trace.gradients)
    for i, rec in enumerate(trace.records):
        act = trace.activations[i] if rec.non_spatial and i < len(trace.activations) else None
        if act is None or act.ndim < 2 or act.shape[0] <= row:
            values.append(None)
            continue
        grad = trace.gradients[i] if with_grad else None
        v = act[row] * grad[row] if grad is not None and grad.shape == act.shape else act[row]
        values.append(v.detach().flatten().float().cpu())
    return UnitVectors(values, "act x grad" if with_grad else "activation")


def drop_non_spatial(records: Sequence[LayerRecord], spatial: bool = True, distinct: bool = False
                     ) -> tuple[list[int], list[LayerRecord]]:
    """The records kept, renumbered (``index`` and ``same_as``), and their old positions: ``spatial``
    drops non-spatial records, ``distinct`` drops records that share another's output (``same_as``:
    the same CAM), so each CAM appears once, at its first layer."""
    keep = [i for i, r in enumerate(records)
            if not (spatial and r.non_spatial) and not (distinct and r.same_as is not None)]
    new_index = {old: new for new, old in enumerate(keep)}
    kept = [dataclasses.replace(records[old], index=new,
                                same_as=new_index.get(records[old].same_as) if records[old].same_as is not None
                                else None)
            for new, old in enumerate(keep)]
    return keep, kept
