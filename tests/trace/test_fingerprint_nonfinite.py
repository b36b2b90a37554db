"""A recorded output holding one NaN or infinity (a review of issue 15's weighted-sum fingerprint).

The fingerprint is one weighted sum: a single NaN or infinity among the values makes it NaN or
infinite whatever the other values are, so it cannot show a write autograd does not see (``.data``,
numpy) to any other value. Such a fingerprint counts as changed: the trace runs again (watching, then
copying every output) and records the value the layer returned.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from camanim.trace import run_trace
from camanim.trace.inplace import fingerprint, unchanged


@pytest.mark.parametrize("special", [float("nan"), float("inf"), float("-inf")])
def test_fingerprint_sees_a_write_in_an_output_holding_one_special_value(special):
    t = torch.randn(1, 6, 10, 10, generator=torch.Generator().manual_seed(0))
    t[0, 1, 2, 3] = special
    before = fingerprint(t)
    u = t.clone()
    u[0, 4] *= -2.0  # a whole other channel changed
    assert not unchanged([before], [fingerprint(u)])


class _Holes(nn.Module):
    """Marks one pixel as missing with -inf (out of place), as a masking layer does."""

    def forward(self, y):
        mask = torch.zeros_like(y, dtype=torch.bool)
        mask[..., 0, 0] = True
        return y.masked_fill(mask, float("-inf"))


class _HolesThenDataWrite(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.holes = _Holes()
        self.conv2 = nn.Conv2d(6, 5, 3, padding=1)
        self.fc = nn.Linear(5, 3)

    def forward(self, x):
        y = self.holes(self.conv1(x))
        y.data[:, 2] = 0.5  # a write autograd does not see, to a channel without the hole
        y = y.clamp(min=-10.0)  # the hole becomes a number
        return self.fc(F.adaptive_avg_pool2d(F.silu(self.conv2(y)), 1).flatten(1))


def test_an_unseen_write_to_an_output_holding_minus_inf_leaves_the_recorded_value_intact():
    torch.manual_seed(0)
    model = _HolesThenDataWrite().eval()
    x = torch.randn(1, 3, 10, 10, generator=torch.Generator().manual_seed(3))
    out: dict[str, torch.Tensor] = {}
    h = model.holes.register_forward_hook(lambda m, i, o: out.update(before=o.detach().clone()))
    try:
        with torch.no_grad():
            target = int(model(x).argmax())
    finally:
        h.remove()
    # without a sink: fingerprints compared after the forward (settle)
    tr = run_trace(model, x, ["holes"], targets=[target])
    assert torch.equal(tr.activations[0], out["before"])
    # with a sink (the engine's gradient methods): compared as the backward reads each value
    sink = _Keep()
    run_trace(model, x, ["holes"], targets=[target], sink=sink)
    assert torch.equal(sink.got[0], out["before"])


class _Keep:
    """A LayerSink that keeps what it is handed (and forgets it when a pass starts again)."""

    def __init__(self) -> None:
        self.got: dict[int, torch.Tensor] = {}

    def start(self, logits, targets, total) -> None:
        self.got.clear()

    def layer(self, index, record, activation, gradient) -> bool:
        self.got[index] = activation.clone()
        return True
