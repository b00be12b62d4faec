"""The VGG-style classifier of the ClaDec paper (Schneider & Vlachos), as in the authors' ``models.py``.

Eight conv blocks (3×3 conv without bias → BatchNorm → ReLU), stride 2 in the un-suffixed blocks::

    conv0   32  /2      32×32 → 16×16     28×28 → 14×14
    conv1   64  /2      → 8×8             → 7×7
    conv2a  128         → 8×8             → 7×7
    conv2   128 /2      → 4×4             → 4×4
    conv3a  256         → 4×4             → 4×4
    conv3   256 /2      → 2×2             → 2×2
    conv4a  512         → 2×2             → 2×2
    conv4   512 /2      → 1×1             → 1×1
    pool (adaptive average to 1×1) → flatten → dropout(0.5) → fc (512 → classes)

The authors' net flattens right after ``conv4``; ``pool`` is the identity at 1×1 and lets larger inputs
(e.g. 64×64) work too.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .._errors import ConfigError
from ._registry import register_model

__all__ = ["ConvBlock", "VGGPaper", "vgg_paper"]


class ConvBlock(nn.Module):
    """3×3 convolution (no bias, padding 1) → BatchNorm2d → ReLU.

    Examples:
        >>> ConvBlock(1, 32, stride=2)(torch.rand(1, 1, 28, 28)).shape
        torch.Size([1, 32, 14, 14])
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        """Build the block.

        Args:
            in_channels: input channels.
            out_channels: output channels.
            stride: 1 (keep the size) or 2 (halve it).

        Returns:
            None.

        Examples:
            >>> block = ConvBlock(3, 32, stride=2)
        """
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply conv, batch norm and ReLU."""
        return self.relu(self.bn(self.conv(x)))


def _scaled(channels: int, width: float) -> int:
    return max(4, int(round(channels * width)))


class VGGPaper(nn.Module):
    """The ClaDec paper's classifier. See the module docstring for the layer table.

    Attributes:
        default_layers: ``{"last": "conv4", "middle": "conv2"}`` -- the layers the paper explains.

    Examples:
        >>> VGGPaper(in_channels=3, num_classes=10)(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    CHANNELS = (32, 64, 128, 128, 256, 256, 512, 512)

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: float = 1.0, dropout: float = 0.5):
        """Build the net.

        Args:
            in_channels: image channels.
            num_classes: output classes.
            width: channel multiplier (each block keeps at least 4 channels); 1.0 is the paper's net.
            dropout: dropout probability before the final linear layer.

        Returns:
            None.

        Examples:
            >>> tiny = VGGPaper(1, 10, width=0.25)
        """
        super().__init__()
        c = [_scaled(ch, width) for ch in self.CHANNELS]
        self.conv0 = ConvBlock(in_channels, c[0], stride=2)
        self.conv1 = ConvBlock(c[0], c[1], stride=2)
        self.conv2a = ConvBlock(c[1], c[2], stride=1)
        self.conv2 = ConvBlock(c[2], c[3], stride=2)
        self.conv3a = ConvBlock(c[3], c[4], stride=1)
        self.conv3 = ConvBlock(c[4], c[5], stride=2)
        self.conv4a = ConvBlock(c[5], c[6], stride=1)
        self.conv4 = ConvBlock(c[6], c[7], stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(c[7], num_classes)
        self.default_layers = {"last": "conv4", "middle": "conv2"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(N, C, H, W)`` → logits ``(N, num_classes)``."""
        x = self.conv0(x)
        x = self.conv1(x)
        x = self.conv2a(x)
        x = self.conv2(x)
        x = self.conv3a(x)
        x = self.conv3(x)
        x = self.conv4a(x)
        x = self.conv4(x)
        x = self.pool(x)
        x = self.flatten(x)
        x = self.dropout(x)
        return self.fc(x)


@register_model("vgg-paper")
def vgg_paper(in_channels: int = 1, num_classes: int = 10, width: float = 1.0, dropout: float = 0.5) -> VGGPaper:
    """The ClaDec paper's VGG-style classifier (4.7M parameters at width 1).

    Args:
        in_channels: image channels.
        num_classes: output classes.
        width: channel multiplier (min 4 channels per block).
        dropout: dropout before ``fc``.

    Returns:
        A :class:`VGGPaper`.

    Examples:
        >>> from cladec.models import create_model
        >>> create_model("vgg-paper", in_channels=1, width=0.25).eval()(torch.rand(1, 1, 28, 28)).shape
        torch.Size([1, 10])
    """
    check_width(width)
    check_dropout(dropout)
    return VGGPaper(in_channels=in_channels, num_classes=num_classes, width=width, dropout=dropout)


def check_width(width: float) -> None:

    if isinstance(width, bool) or not isinstance(width, (int, float)) or not 0 < width < math.inf:
        raise ConfigError(f"width must be a positive finite number (1.0 = the paper's net), got {width!r}")


def check_dropout(p: float) -> None:

    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
        raise ConfigError(f"dropout must be a probability in [0, 1), got {p!r}")
