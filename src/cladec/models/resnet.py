"""CIFAR-style ResNets with basic blocks (He et al. 2016): ``resnet10`` and ``resnet18``.

Layout (``width`` scales every channel count)::

    stem     3×3 conv 64, stride 1 → BN → ReLU      (+ 3×3/2 max-pool only for inputs larger than 64 px)
    layer1   BasicBlock × n, 64 channels,  stride 1
    layer2   BasicBlock × n, 128 channels, stride 2
    layer3   BasicBlock × n, 256 channels, stride 2
    layer4   BasicBlock × n, 512 channels, stride 2
    pool (adaptive average to 1×1) → flatten → fc

``n`` is 1 for resnet10 and 2 for resnet18. Every block is ``relu2(bn2(conv2(relu1(bn1(conv1(x))))) +
shortcut(x))`` with ``shortcut`` the identity or a 1×1 conv + BN when the shape changes, so
``layer3.0.conv2`` names a layer inside a block and ``layer3.0`` the block's (residual) output.
"""

from __future__ import annotations

import torch
from torch import nn

from ._registry import register_model
from .vgg import check_width

__all__ = ["BasicBlock", "Stem", "ResNet", "resnet10", "resnet18"]


class Stem(nn.Module):
    """3×3 conv (stride 1, no bias) → BN → ReLU, then a 3×3/2 max-pool only for inputs larger than 64 px.

    Examples:
        >>> Stem(3, 64)(torch.rand(1, 3, 32, 32)).shape
        torch.Size([1, 64, 32, 32])
    """

    def __init__(self, in_channels: int, out_channels: int, pool_above: int = 64) -> None:
        """Build the stem.

        Args:
            in_channels: image channels.
            out_channels: output channels.
            pool_above: max-pool inputs whose height or width exceeds this many pixels.

        Returns:
            None.

        Examples:
            >>> stem = Stem(1, 16)
        """
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.pool_above = pool_above

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the stem."""
        big = max(x.shape[-2:]) > self.pool_above
        x = self.relu(self.bn(self.conv(x)))
        return self.maxpool(x) if big else x


class BasicBlock(nn.Module):
    """Two 3×3 convs with BN and a residual connection.

    Examples:
        >>> BasicBlock(64, 128, stride=2)(torch.rand(1, 64, 8, 8)).shape
        torch.Size([1, 128, 4, 4])
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        """Build the block; the shortcut is a 1×1 conv + BN when the stride or channel count changes.

        Args:
            in_channels: input channels.
            out_channels: output channels.
            stride: stride of ``conv1`` and of the shortcut.

        Returns:
            None.

        Examples:
            >>> block = BasicBlock(64, 64)
        """
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.shortcut: nn.Module = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        else:
            self.shortcut = nn.Identity()
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``."""
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class ResNet(nn.Module):
    """A CIFAR-style ResNet of :class:`BasicBlock` s.

    Attributes:
        default_layers: ``{"last": "layer4", "middle": "layer2"}``.

    Examples:
        >>> ResNet([1, 1, 1, 1], in_channels=1, num_classes=10, width=0.25)(torch.rand(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    WIDTHS = (64, 128, 256, 512)

    def __init__(self, blocks: list[int], in_channels: int = 1, num_classes: int = 10, width: float = 1.0) -> None:
        """Build the net.

        Args:
            blocks: number of basic blocks in layer1..layer4.
            in_channels: image channels.
            num_classes: output classes.
            width: channel multiplier (min 4 channels).

        Returns:
            None.

        Examples:
            >>> net = ResNet([2, 2, 2, 2], 3, 10)  # resnet18
        """
        super().__init__()
        w = [max(4, int(round(c * width))) for c in self.WIDTHS]
        self.stem = Stem(in_channels, w[0])
        self.layer1 = self._make_layer(w[0], w[0], blocks[0], stride=1)
        self.layer2 = self._make_layer(w[0], w[1], blocks[1], stride=2)
        self.layer3 = self._make_layer(w[1], w[2], blocks[2], stride=2)
        self.layer4 = self._make_layer(w[2], w[3], blocks[3], stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(w[3], num_classes)
        self.default_layers = {"last": "layer4", "middle": "layer2"}
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @staticmethod
    def _make_layer(in_channels: int, out_channels: int, n: int, stride: int) -> nn.Sequential:
        layers = [BasicBlock(in_channels, out_channels, stride)]
        layers += [BasicBlock(out_channels, out_channels, 1) for _ in range(n - 1)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(N, C, H, W)`` → logits ``(N, num_classes)``."""
        x = self.stem(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)
        x = self.pool(x)
        x = self.flatten(x)
        return self.fc(x)


@register_model("resnet10")
def resnet10(in_channels: int = 1, num_classes: int = 10, width: float = 1.0) -> ResNet:
    """ResNet-10: one basic block per stage (4.9M parameters at width 1).

    Args:
        in_channels: image channels.
        num_classes: output classes.
        width: channel multiplier.

    Returns:
        A :class:`ResNet`.

    Examples:
        >>> from cladec.models import create_model
        >>> create_model("resnet10", in_channels=3, width=0.25)(torch.rand(1, 3, 32, 32)).shape
        torch.Size([1, 10])
    """
    check_width(width)
    return ResNet([1, 1, 1, 1], in_channels=in_channels, num_classes=num_classes, width=width)


@register_model("resnet18")
def resnet18(in_channels: int = 1, num_classes: int = 10, width: float = 1.0) -> ResNet:
    """ResNet-18: two basic blocks per stage (11.2M parameters at width 1).

    Args:
        in_channels: image channels.
        num_classes: output classes.
        width: channel multiplier.

    Returns:
        A :class:`ResNet`.

    Examples:
        >>> from cladec.models import create_model
        >>> create_model("resnet18", in_channels=3, width=0.25)(torch.rand(1, 3, 32, 32)).shape
        torch.Size([1, 10])
    """
    check_width(width)
    return ResNet([2, 2, 2, 2], in_channels=in_channels, num_classes=num_classes, width=width)
