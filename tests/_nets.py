"""The small test networks, in a module of their own: pytest drops the name ``conftest`` from
``sys.modules`` whenever it imports a sub-folder's conftest.py, and a later ``from conftest import ...``
then makes new class objects, which pickle (``torch.save`` of a whole model) cannot match. A class
defined here is one object for the whole session; ``conftest`` re-exports them."""

from __future__ import annotations

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


class SmallNet(nn.Module):
    """Conv/BN/ReLU and a SiLU (so second derivatives are not all zero), in a Sequential."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
            nn.Conv2d(6, 8, 3, padding=1, stride=2), nn.BatchNorm2d(8), nn.SiLU(),
            nn.Conv2d(8, 10, 3, padding=1), nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(10, classes)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


class TinyNet3d(nn.Module):
    """A small seeded 3-D CNN: conv-BN-ReLU, max pool, conv-ReLU, a strided conv, global pool, Linear (3 classes)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(1, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm3d(4)
        self.relu1 = nn.ReLU()
        self.pool = nn.MaxPool3d(2)
        self.conv2 = nn.Conv3d(4, 8, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv3d(8, 8, 3, stride=2, padding=1)
        self.gap = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        x = self.pool(self.relu1(self.bn1(self.conv1(x))))
        x = self.conv3(self.relu2(self.conv2(x)))
        return self.fc(self.gap(x).flatten(1))
