"""A user-defined model factory, loaded by tests through ``load_user_model("helpers.user_model:make_net")``."""

from __future__ import annotations

import torch
from torch import nn

NOT_CALLABLE = 42


class SmallNet(nn.Module):
    """A small CNN a user might bring: conv → BN → ReLU → pool → linear."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, hidden: int = 8) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, hidden, 3, padding=1)
        self.bn = nn.BatchNorm2d(hidden)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.fc = nn.Linear(hidden * 16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(torch.relu(self.bn(self.conv(x)))).flatten(1))


def make_net(in_channels: int = 1, num_classes: int = 10, hidden: int = 8) -> SmallNet:
    """Factory: build a :class:`SmallNet`."""
    return SmallNet(in_channels, num_classes, hidden)


def not_a_model() -> int:
    """A factory that returns something that is not a module."""
    return 3


def broken_factory() -> nn.Module:
    """A factory that fails."""
    raise RuntimeError("the user's factory is broken")
