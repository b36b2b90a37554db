"""Shared fixtures: tiny seeded models and real-model helpers."""

from __future__ import annotations

import pytest
import torch
from torch import nn


class TinyNet(nn.Module):
    """A hand-sized CNN: conv -> relu (called twice) -> pool -> linear."""

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.block = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.BatchNorm2d(6))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, num_classes)

    def forward(self, x):
        x = self.relu(self.conv1(x))
        x = self.relu(self.block(x))
        return self.fc(self.pool(x).flatten(1))


@pytest.fixture
def tiny() -> TinyNet:
    torch.manual_seed(0)
    return TinyNet().eval()


@pytest.fixture
def tiny_input() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randn(1, 3, 16, 16, generator=g)


def no_inplace(model: nn.Module) -> nn.Module:
    """Switch off in-place activations (the reference aliases in-place outputs on CPU)."""
    for m in model.modules():
        if hasattr(m, "inplace"):
            m.inplace = False
    return model
