"""Volumes (3-D networks): NCDHW from Conv3d/BatchNorm3d/pool evidence, everything else non-spatial, never guessed."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_net3d, tiny_volume
from torch import nn

from camanim.trace import run_trace
from camanim.trace.layouts import NCDHW, NON_SPATIAL, Layout, parse_layout, to_nchw, volume_size


def test_parse_and_read_a_volume_layout():
    assert parse_layout("ncdhw") == Layout(NCDHW) and str(Layout(NCDHW)) == "NCDHW"
    x = torch.arange(2 * 3 * 4 * 5 * 6, dtype=torch.float32).reshape(2, 3, 4, 5, 6)
    flat = to_nchw(x, "NCDHW")
    assert flat.shape == (2, 3, 4, 30)
    # position (d, h, w) is column h * W + w of row d: the map reshapes back exactly
    assert float(flat[1, 2, 3, 4 * 6 + 5]) == float(x[1, 2, 3, 4, 5])
    assert volume_size("NCDHW", x.shape) == (4, 5, 6)
    assert volume_size("NCHW", (1, 3, 5, 6)) is None


def test_a_3d_cnn_is_placed_by_its_modules():
    tr = run_trace(tiny_net3d(), tiny_volume(), "all", gradients=False)
    layouts = {r.name: r.layout for r in tr.records}
    assert layouts == {"conv1": NCDHW, "bn1": NCDHW, "relu1": NCDHW, "pool": NCDHW, "conv2": NCDHW, "relu2": NCDHW,
                       "conv3": NCDHW, "gap": NON_SPATIAL, "fc": NON_SPATIAL}


class ChannelsLast3d(nn.Module):
    """A 3-D block that works channels-last: permute to (B, D, H, W, C), LayerNorm, Linear."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(c)
        self.mlp = nn.Linear(c, c)

    def forward(self, x):
        return self.mlp(self.norm(x.permute(0, 2, 3, 4, 1)))


class Squash(nn.Module):
    """Averages the depth away: a (B, C, H, W) tensor in a 3-D network."""

    def forward(self, x):
        return x.mean(dim=2)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, 6, 3, padding=1)  # 6 channels on a 6 x 6 x 6 volume: every axis reads alike
        self.block = ChannelsLast3d(6)
        self.back = Squash()
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        y = self.conv(x)
        z = self.block(y)  # (B, 6, 6, 6, 6) channels last
        return self.head(self.back(y).mean(dim=(2, 3)) + z.mean(dim=(1, 2, 3)))


def test_5d_and_4d_tensors_without_evidence_are_non_spatial():
    """A channels-last volume of a cube with as many channels as voxels per side, and a 4-D tensor in a
    3-D network, read every way by their shapes alone: neither is guessed, both are non_spatial."""
    torch.manual_seed(0)
    tr = run_trace(Net().eval(), torch.randn(1, 1, 6, 6, 6), "all", gradients=False)
    layouts = {r.name: r.layout for r in tr.records}
    assert layouts["conv"] == NCDHW
    assert layouts["block.norm"] == NON_SPATIAL and layouts["block.mlp"] == NON_SPATIAL
    assert layouts["block"] == NON_SPATIAL
    assert "permute" in tr.records[[r.name for r in tr.records].index("block.norm")].flags.get("layout", "")
    assert layouts["back"] == NON_SPATIAL


def test_a_layout_override_places_a_volume():
    torch.manual_seed(0)
    tr = run_trace(Net().eval(), torch.randn(1, 1, 6, 6, 6), "all", gradients=False,
                   layouts={"block": "non_spatial", "back": "NCHW"})
    assert {r.name: r.layout for r in tr.records}["back"] == "NCHW"
    with pytest.raises(Exception, match="does not fit"):
        run_trace(Net().eval(), torch.randn(1, 1, 6, 6, 6), "all", gradients=False, layouts={"back": "NCDHW"})


class Slab(nn.Module):
    """Folds depth into channels, (B, C*D, H, W), then a channels-last LayerNorm on a (B, H, W, C*D) permute."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(c)

    def forward(self, x):
        b, c, d, h, w = x.shape
        return self.norm(x.reshape(b, c * d, h, w).permute(0, 2, 3, 1))


def test_no_2d_convention_places_a_4d_tensor_in_a_3d_network():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv3d(1, 2, 3, padding=1), Slab(12), nn.Flatten(), nn.Linear(12 * 6 * 6, 2)).eval()
    tr = run_trace(net, torch.randn(1, 1, 6, 6, 6), "all", gradients=False)
    assert {r.name: r.layout for r in tr.records} == {"0": NCDHW, "1": NON_SPATIAL, "1.norm": NON_SPATIAL,
                                                       "2": NON_SPATIAL, "3": NON_SPATIAL}
