"""Decoder builder: from any activation shape to any image shape, in two architectures.

``arch="paper"`` follows the authors' decoder: a dense head for vectors and 1×1 maps (``Linear`` to
``max(D, base_width)`` features on a 1×1 seed, capped at ``max_width``) or a 3×3 conv head for spatial maps, then
stride-2 transposed convolutions (kernel 4, ReLU) that double the size at each stage, widths ``base_width ·
2^k`` halving towards the image, a last transposed conv to the image channels and a sigmoid, so
outputs lie in [0, 1]. Exact output sizes are reached for any H×W: each stage maps ``h → 2h`` or
``h → 2h − 1`` (padding/output padding chosen per stage); a seed whose size does not fit the chain
is resized once after the head. Its head keeps the layer's full width: 57.3M parameters for torchvision
ResNet-50 ``layer4`` (2048×7×7) to 224 px, most of them one 3×3 2048→2048 convolution.

``arch="scaled"`` grows gently with the layer's width and the image size: a 1×1 convolution reduces the
layer's channels to a start width ``min(C, max_width, base_width·2^(n−1))`` for ``n`` stages (vectors and 1×1
maps: a ``Linear`` to a seed grid of about 4×4 with ``min(that, 2·base_width)`` channels), then the same exact-size
transposed-convolution stages, each halving the width down to ``base_width``, the last one to the image channels,
sigmoid (``scaled_layers`` in ``cladec/_decoder_arch.py``). ResNet-50 ``layer2``/``layer3``/``layer4`` and
ViT-B/16 blocks to 224 px: 0.79M / 3.28M / 3.87M / 3.15M parameters (paper: 3.54M / 14.29M / 57.28M / 9.11M).
Transposed stages beat nearest-upsample + 3×3 convolution stages per training second on CPU (CIFAR-10 at 64 px,
ResNet-18 ``layer3``/``layer4``, 40 s each: test MSE 0.0183 vs 0.0217 and 0.0265 vs 0.0337).

``arch="auto"`` (the default of :func:`build_decoder` and the explainers) picks with :func:`choose_arch`: the
paper decoder for images of at most 32 px a side from vectors, 1×1 maps or maps of at most 512 channels — the
paper's settings, built bit for bit as before, so reproductions do not change — and the scaled decoder for
anything larger, where it reconstructed better per training second in every setting measured
(``benchmarks/decoder_quality.py``, ``benchmarks/RESULTS.md`` "Decoders that scale (issue 17)": CIFAR-10, a
random-init ResNet-18, 60 s of training each on a 2-core CPU; test MSE paper vs scaled 0.0201 vs 0.0153 at 64 px
``layer3``, 0.0459 vs 0.0439 at 64 px ``layer4``, 0.0583 vs 0.0470 at 128 px and 0.0570 vs 0.0407 at 224 px
``layer4``, mean-image baseline 0.059–0.060). The 32-px bound keeps the paper's settings unchanged; it is not a measured
crossover (sizes from 33 to 63 px and ResNet-50 / ViT quality were not measured). A save records the
architecture built (``DecoderSpec.arch``); one without it holds a paper decoder.

Two changes make small-data training reliable (see ``FINDINGS.md``: a plain setup collapses to a
black image for 1×1 layers): the output bias starts at the logit of the data's mean pixel value per
channel (set by :meth:`Decoder.init_output_bias`), and hidden stages may use BatchNorm
(``norm="batch"``; the authors' choice, ``norm=None``, is the default).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import torch
from torch import nn

from ._decoder_arch import ARCHS, choose_arch, scaled_layers, size_chain, up_stages
from ._errors import ConfigError

__all__ = ["ARCHS", "DecoderSpec", "Decoder", "build_decoder", "choose_arch"]


@dataclass
class DecoderSpec:
    """Everything needed to rebuild a decoder (stored in a save's JSON).

    Attributes:
        in_shape: Activation shape without batch, ``(D,)`` or ``(C, H, W)``.
        out_shape: Image shape ``(C, H, W)``.
        base_width: Channels of the last hidden stage (authors: 64).
        max_width: Cap on hidden channels (keeps large images affordable).
        norm: ``None`` (authors) or ``"batch"``.
        kind: ``"cladec"`` (the built decoder; ``"custom"`` marks a user's module in a save).
        arch: ``"paper"`` (the authors' decoder) or ``"scaled"``; a save without it holds a paper decoder.
    """

    in_shape: tuple[int, ...]
    out_shape: tuple[int, int, int]
    base_width: int = 64
    max_width: int = 512
    norm: str | None = None
    kind: str = field(default="cladec")
    arch: str = "paper"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["in_shape"] = list(self.in_shape)
        d["out_shape"] = list(self.out_shape)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DecoderSpec:
        return cls(
            in_shape=tuple(d["in_shape"]),
            out_shape=tuple(d["out_shape"]),
            base_width=int(d.get("base_width", 64)),
            max_width=int(d.get("max_width", 512)),
            norm=d.get("norm"),
            kind=d.get("kind", "cladec"),
            arch=d.get("arch", "paper"),
        )


def _hooked(*mods: nn.Module) -> bool:
    """Whether calling these modules would run hooks (their own forward/backward hooks, or global ones)."""
    from torch.nn.modules import module as _m

    glob = (
        _m._global_forward_hooks,
        _m._global_forward_pre_hooks,
        _m._global_backward_hooks,
        _m._global_backward_pre_hooks,
    )
    return any(glob) or any(
        m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks for m in mods
    )


def _up_from_point(h: torch.Tensor, conv: nn.ConvTranspose2d, out_hw: tuple[int, int]) -> torch.Tensor:
    """``conv`` applied to ``h`` viewed as ``(N, C, 1, 1)``, as a matrix product.

    On a single input pixel a transposed convolution with padding ``p`` writes output pixel ``(y, x)``
    from kernel tap ``(y + p, x + p)``: ``out[n, o, y, x] = b[o] + Σ_c h[n, c] · W[c, o, y + p, x + p]``.
    """
    (ph, pw), (oh, ow) = cast(tuple[int, int], conv.padding), out_hw  # up_conv gives a pair, not a padding mode
    w = conv.weight[:, :, ph : ph + oh, pw : pw + ow].reshape(conv.weight.shape[0], -1)  # (C, O·oh·ow)
    if conv.bias is not None:  # the bias goes in the GEMM's epilogue (one rounding, as in the convolution)
        y = torch.addmm(conv.bias.repeat_interleave(oh * ow), h, w)
    else:
        y = h @ w
    return y.view(h.shape[0], conv.weight.shape[1], oh, ow)


class Decoder(nn.Module):
    """The decoder network built from a :class:`DecoderSpec` (use :func:`build_decoder`)."""

    def __init__(self, spec: DecoderSpec) -> None:
        super().__init__()
        self.spec = spec
        in_shape, (C, H, W) = tuple(spec.in_shape), spec.out_shape
        if len(in_shape) not in (1, 3) or any(int(s) <= 0 for s in in_shape):
            raise ConfigError(f"decoder input shape must be (D,) or (C, H, W), got {in_shape}")
        if C not in (1, 3) or H < 1 or W < 1:
            raise ConfigError(f"image shape must be (C, H, W) with C in 1 or 3, got {spec.out_shape}")
        if spec.norm not in (None, "batch"):
            raise ConfigError(f"norm must be None or 'batch', got {spec.norm!r}")
        if spec.arch not in ARCHS:
            raise ConfigError(f"decoder arch must be one of {', '.join(map(repr, ARCHS))}, got {spec.arch!r}")
        if spec.arch == "scaled":
            self.dense, self._dense_ch, self._first_out = False, 0, None  # its head ends on a grid
            self.head, self.resize, self.up = scaled_layers(spec)
            self.out = nn.Sigmoid()
            return
        self.dense = len(in_shape) == 1 or (in_shape[1] == 1 and in_shape[2] == 1)
        flat = int(math.prod(in_shape))
        if self.dense:
            head_ch = min(max(flat, spec.base_width), max(spec.max_width, spec.base_width))
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(flat, head_ch), nn.ReLU(inplace=True))
            seed = (1, 1)
            n = max(math.ceil(math.log2(max(H, W))), 1)
        else:
            head_ch = in_shape[0]
            self.head = nn.Sequential(nn.Conv2d(head_ch, head_ch, 3, padding=1), nn.ReLU(inplace=True))
            seed = (in_shape[1], in_shape[2])
            ratio = max(H / seed[0], W / seed[1])
            n = max(round(math.log2(ratio)), 0) if ratio > 1 else 0
        hs, ws = size_chain(H, n), size_chain(W, n)
        self._dense_ch = head_ch
        self._first_out = (hs[1], ws[1]) if n else None
        # a spatial seed that does not sit on the size chain is resized once after the head
        self.resize = (hs[0], ws[0]) if (hs[0], ws[0]) != seed else None
        widths = [min(spec.base_width * 2 ** (n - 2 - i), spec.max_width) for i in range(n - 1)]
        self.up = up_stages(head_ch, widths, C, hs, ws, spec.norm)
        self.out = nn.Sigmoid()

    @property
    def output_layer(self) -> nn.Module:
        return self.up[-1]

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        x = self.head(a)
        first = self.up[0]
        if (
            self.dense
            and isinstance(first, nn.ConvTranspose2d)
            and self._first_out is not None  # set wherever there is a transposed convolution
            and not _hooked(first, self.up)
        ):
            # the first transposed convolution sees a 1×1 seed: computed as the matrix product it is
            # (same weights, same result) — one GEMM instead of a cuDNN call on an N×C×1×1 tensor,
            # whose memory format is ambiguous (it breaks torch.compile's stride checks in torch 2.11);
            # with hooks on these modules or global module hooks (user hooks, weight/spectral norm, profilers)
            # the modules are called as usual
            x = _up_from_point(x, first, self._first_out)
            for m in list(self.up)[1:]:
                x = m(x)
            return self.out(x)
        if self.dense:
            x = x.view(x.shape[0], self._dense_ch, 1, 1)
        if self.resize is not None:
            x = nn.functional.interpolate(x, size=self.resize, mode="bilinear", align_corners=False)
        return self.out(self.up(x))

    @torch.no_grad()
    def init_output_bias(self, mean_pixel: torch.Tensor | float) -> None:
        """Start the output at the data's mean pixel value (per channel) instead of 0.5.

        Args:
            mean_pixel: A float or a tensor of ``C`` values in (0, 1).
        """
        bias = self.output_layer.bias
        if not isinstance(bias, torch.Tensor):  # None: an output layer without bias
            return
        m = torch.as_tensor(mean_pixel, dtype=torch.float32).clamp(1e-3, 1 - 1e-3)
        bias.copy_(torch.logit(m).expand_as(bias).to(bias))


def build_decoder(
    in_shape: tuple[int, ...],
    out_shape: tuple[int, int, int],
    *,
    base_width: int = 64,
    max_width: int = 512,
    norm: str | None = None,
    arch: str = "auto",
) -> Decoder:
    """Build a decoder from an activation shape to an image shape.

    Args:
        in_shape: Activation shape without the batch dimension: ``(D,)`` or ``(C, H, W)``.
        out_shape: Image shape ``(C, H, W)``, ``C`` in {1, 3}, any ``H×W``.
        base_width: Channels of the last hidden stage (authors' default 64); earlier stages double it.
        max_width: Upper bound on hidden channels.
        norm: ``None`` (authors) or ``"batch"`` for BatchNorm after each hidden stage.
        arch: ``"paper"`` (the authors' decoder), ``"scaled"`` (a 1×1 reduction, then stages that halve the
            width while doubling the size) or ``"auto"``: :func:`choose_arch` picks one from the shapes (the paper
            decoder for the paper's small images and layers).

    Returns:
        A :class:`Decoder` whose output has shape ``(N, *out_shape)`` with values in [0, 1].

    Examples:
        >>> d = build_decoder((512,), (1, 28, 28))
        >>> tuple(d(torch.zeros(2, 512)).shape), d.spec.arch
        ((2, 1, 28, 28), 'paper')
        >>> d = build_decoder((2048, 7, 7), (3, 224, 224))
        >>> d.spec.arch, sum(p.numel() for p in d.parameters()) < 10_000_000
        ('scaled', True)
    """
    in_shape = tuple(int(s) for s in in_shape)
    if arch == "auto":
        if len(in_shape) not in (1, 3) or len(out_shape) != 3:  # refused below, with the reason
            arch = "paper"
        else:
            arch = choose_arch(in_shape, out_shape)
    elif arch not in ARCHS:
        raise ConfigError(f"decoder arch must be 'auto' or one of {', '.join(map(repr, ARCHS))}, got {arch!r}")
    return Decoder(
        DecoderSpec(
            in_shape,
            tuple(int(s) for s in out_shape),  # type: ignore[arg-type]  # an image shape (C, H, W)
            base_width=base_width,
            max_width=max_width,
            norm=norm,
            arch=arch,
        )
    )
