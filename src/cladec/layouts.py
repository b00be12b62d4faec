"""Layouts of a layer's output, and how each becomes the ``(N, C, H, W)`` map a decoder sees.

* ``"nchw"``: feature maps ``(N, C, H, W)``, passed on as they are;
* ``"nhwc"``: channels-last maps ``(N, H, W, C)`` (Swin stages, the norm inside a ConvNeXt block), permuted once
  to ``(N, C, H, W)``;
* ``"tokens"``: ``(N, T, D)`` token sequences, the patch tokens laid on their ``g×g`` grid as ``(N, D, g, g)``
  (extra tokens in front — class, distillation, register tokens — are dropped or broadcast as channels);
* ``"flat"``: ``(N, D)`` vectors, passed on as they are.

A layout that is not given is detected once, when the capture first sees the layer's output, and never guessed
from which dimension is smallest:

1. ``(N, D)`` is ``flat`` and ``(N, T, D)`` is ``tokens`` (the only layouts of that rank);
2. a 4-D output is *declared* where the library tells: a torch 2-D convolution, pooling or batch norm returns
   ``nchw``; a module with timm's ``output_fmt`` says it; cladec's own models are ``nchw``; a timm model whose
   ``output_fmt`` is ``NHWC`` (Swin) and a torchvision Swin's ``features`` are ``nhwc``;
3. else it is *measured*: one more forward pass at twice the image size — the dimensions that grow are the
   spatial ones, the one that stays is the channels;
4. else the capture refuses with one line naming the shape and asking for ``layout=`` (``--layout``).

Examples:
    >>> measured_layout((8, 4, 4), (8, 8, 8)), measured_layout((4, 4, 8), (8, 8, 8))
    ('nchw', 'nhwc')
    >>> infer_prefix(197), infer_prefix(16)
    (1, 0)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from ._errors import ConfigError

__all__ = [
    "LAYOUTS",
    "RANK",
    "check_layout",
    "declared_layout",
    "measured_layout",
    "infer_prefix",
    "declared_prefix",
    "resolve_layout",
    "neuron_indices",
    "output_tensor",
    "to_map",
    "unsupported_output",
]

#: The layouts a layer's output may have.
LAYOUTS = ("nchw", "nhwc", "tokens", "flat")
#: Each layout's number of dimensions per image (without the batch).
RANK = {"nchw": 3, "nhwc": 3, "tokens": 2, "flat": 1}
_SHAPES = {"nchw": "(N, C, H, W)", "nhwc": "(N, H, W, C)", "tokens": "(N, T, D)", "flat": "(N, D)"}
SUPPORTED = ", ".join(f"{k} {v}" for k, v in _SHAPES.items())

# torch modules whose 4-D output is (N, C, H, W) by definition
_NCHW_TYPES: tuple[type, ...] = (
    nn.Conv2d,
    nn.ConvTranspose2d,
    nn.BatchNorm2d,
    nn.InstanceNorm2d,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
)


def check_layout(layout: str | None) -> str | None:
    """``layout`` checked: one of :data:`LAYOUTS` (any case) or None (detect).

    Examples:
        >>> check_layout("NHWC"), check_layout(None)
        ('nhwc', None)
    """
    if layout is None:
        return None
    if not isinstance(layout, str) or layout.lower() not in LAYOUTS:
        raise ConfigError(f"layout must be one of {', '.join(LAYOUTS)} (or None to detect it), got {layout!r}")
    return layout.lower()


def _fmt(obj: object) -> str | None:
    fmt = getattr(obj, "output_fmt", None)
    fmt = getattr(fmt, "value", fmt)  # timm's Format enum
    if isinstance(fmt, str) and fmt.upper() in ("NCHW", "NHWC"):
        return fmt.lower()
    return None


def declared_layout(model: nn.Module, layer: str, module: nn.Module) -> tuple[str, str] | None:
    """The layout the model family declares for a 4-D output of ``module`` (``model``'s ``layer``), and who
    declares it; None when nothing does."""
    if isinstance(module, _NCHW_TYPES):
        return "nchw", f"torch's {type(module).__name__}"
    own = _fmt(module)
    if own is not None:
        return own, f"its output_fmt ({type(module).__name__})"
    cls = type(model)
    if cls.__module__.startswith("cladec."):
        return "nchw", f"cladec's {cls.__name__}"
    if cls.__module__.startswith("timm.") and _fmt(model) == "nhwc":
        return "nhwc", f"timm's {cls.__name__} (output_fmt NHWC)"
    if cls.__module__.startswith("torchvision.models.swin") and layer.split(".")[0] == "features":
        return "nhwc", f"torchvision's {cls.__name__} (channels-last stages)"
    return None


def measured_layout(shape: Sequence[int], bigger: Sequence[int]) -> str | None:
    """The layout of a 4-D output from its shape at two image sizes (without the batch): the two dimensions that
    grow with the image are spatial; None when that does not tell (nothing grows, or one or three dimensions)."""
    if len(shape) != 3 or len(bigger) != 3:
        return None
    grew = [b != a for a, b in zip(shape, bigger, strict=True)]
    return "nchw" if grew == [False, True, True] else "nhwc" if grew == [True, True, False] else None


def infer_prefix(T: int) -> int | None:
    """The smallest k in 0..8 such that T - k tokens form a square grid (None if there is none)."""
    for k in range(9):
        if T - k > 0 and math.isqrt(T - k) ** 2 == T - k:
            return k
    return None


def to_map(out: torch.Tensor, layout: str, k: int, prefix_tokens: str) -> torch.Tensor:
    """A raw output of ``layout`` as the decoder sees it: ``(N, C, H, W)`` maps (``nhwc`` permuted, ``tokens``
    gridded with ``k`` prefix tokens dropped or broadcast as channels), ``(N, D)`` vectors unchanged."""
    if layout == "nhwc":
        return out.permute(0, 3, 1, 2)
    if layout != "tokens":
        return out
    n, T, D = out.shape
    prefix, patches = out[:, :k], out[:, k:]
    g = math.isqrt(T - k)
    grid = patches.transpose(1, 2).reshape(n, D, g, g)
    if prefix_tokens == "channels" and k > 0:
        extra = prefix.reshape(n, k * D, 1, 1).expand(n, k * D, g, g)
        grid = torch.cat([grid, extra], 1)
    return grid


def unsupported_output(layer: str, what: str) -> ConfigError:
    """The error for an output that has none of the layouts (``what``: its shape or type)."""
    return ConfigError(f"layer {layer!r} outputs {what}, which is none of the supported layouts: {SUPPORTED}")


#: torch modules that return ``(output, extras)`` by definition (attention weights, an RNN's hidden state): their
#: first element is the layer's output
_FIRST_IS_OUTPUT: tuple[type, ...] = (nn.MultiheadAttention, nn.RNNBase)


def output_tensor(layer: str, module: nn.Module, out: object, *, strict: bool = True) -> torch.Tensor | None:
    """The tensor a layer outputs: ``out`` itself, or the first element of what torch's ``MultiheadAttention`` and
    RNNs return. Any other tuple, list or object is refused (``strict``) or None: which element holds the layer's
    output cannot be told.

    Examples:
        >>> output_tensor("rnn", nn.GRU(2, 3), (torch.zeros(1, 3),)).shape
        torch.Size([1, 3])
        >>> output_tensor("pair", nn.Identity(), (torch.zeros(1, 3),), strict=False) is None
        True
    """
    if isinstance(out, torch.Tensor):
        return out
    seq = isinstance(out, (tuple, list)) and bool(out) and isinstance(out[0], torch.Tensor)
    if seq and isinstance(module, _FIRST_IS_OUTPUT):
        return out[0]  # type: ignore[index]  # a non-empty sequence
    if not strict:
        return None
    kind = f"{type(out).__name__} ({type(module).__name__})"
    if isinstance(out, (tuple, list)):
        parts = [str(tuple(t.shape[1:])) if isinstance(t, torch.Tensor) else type(t).__name__ for t in out]
        what = f"a {kind} of {len(out)} values, per image {', '.join(parts[:4])}{', ...' if len(parts) > 4 else ''}"
        what += "; pick a submodule that outputs one tensor"
    else:
        what = f"a {kind}, not a tensor"
    raise unsupported_output(layer, what)


def declared_prefix(model: nn.Module, T: int) -> int | None:
    """The number of tokens before the patch tokens a timm model declares (``num_prefix_tokens``: class,
    distillation and register tokens), where ``T`` less it is a square grid; None otherwise."""
    k = getattr(model, "num_prefix_tokens", None)
    if type(model).__module__.startswith("timm.") and isinstance(k, int) and 0 <= k < T:
        if math.isqrt(T - k) ** 2 == T - k:
            return k
    return None


def resolve_layout(
    model: nn.Module,
    layer: str,
    module: nn.Module,
    shape: tuple[int, ...],
    given: str | None,
    measure: Callable[[], tuple[int, ...] | None] | None,
) -> str:
    """The layout of ``layer``'s output of ``shape`` per image: ``given`` checked against the rank, the family's
    declaration and a measurement, or detected (see the module doc); ConfigError when it cannot be told or
    contradicts them.

    Args:
        model: The model the layer belongs to.
        layer: The layer's name (for messages).
        module: The layer's module.
        shape: Its output's shape without the batch.
        given: The layout the user gave, or None.
        measure: Returns the output's shape at twice the image size (None: it cannot be run there); None
            where no image is at hand.
    """
    rank = len(shape)
    if rank not in (1, 2, 3):
        raise unsupported_output(layer, f"shape {shape} per image ({rank + 1}-D with the batch)")
    if given is not None and RANK[given] != rank:
        raise ConfigError(
            f"layout={given!r} reads {_SHAPES[given]}, but layer {layer!r} outputs shape {shape} per image "
            f"({rank + 1}-D with the batch): give layout= one of "
            + ", ".join(k for k, r in RANK.items() if r == rank)
            + " or leave it to be detected"
        )
    if rank != 3:
        return "flat" if rank == 1 else "tokens"
    found = declared_layout(model, layer, module)
    if found is None and measure is not None:
        bigger = measure()
        seen = measured_layout(shape, bigger) if bigger is not None else None
        if seen is not None:
            found = seen, f"its shape {bigger} at twice the image size"
    if given is not None:
        if found is not None and found[0] != given:
            raise ConfigError(
                f"layout={given!r} contradicts layer {layer!r}'s output: shape {shape} per image is "
                f"{found[0]} {_SHAPES[found[0]]}, as {found[1]} tells; drop layout= or give layout={found[0]!r}"
            )
        return given
    if found is None:
        raise ConfigError(
            f"cannot tell whether layer {layer!r}'s output of shape {shape} per image is (C, H, W) or (H, W, C): "
            "give layout='nchw' or 'nhwc' (--layout nchw|nhwc)"
        )
    return found[0]


def neuron_indices(neurons, units: int, layer: str) -> list[int]:
    """``neurons`` (unit indices or a boolean mask over ``units`` units) checked, as a list of indices."""
    if isinstance(neurons, (str, bytes, set, frozenset, dict)):
        raise ConfigError(
            f"neurons must be a list of integer unit indices or a boolean mask, got a "
            f"{type(neurons).__name__} (order matters: use a list)"
        )
    if isinstance(neurons, (list, tuple)) and not neurons:
        raise ConfigError(f"the neuron selection for layer {layer!r} is empty")
    if (
        isinstance(neurons, (list, tuple))
        and any(isinstance(v, bool) for v in neurons)
        and not all(isinstance(v, bool) for v in neurons)
    ):
        raise ConfigError("neurons mixes booleans and integers; give integer indices or a boolean mask")
    try:
        t = torch.as_tensor(neurons)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ConfigError(f"neurons must be a list of integer unit indices or a boolean mask ({e})") from None
    if t.dtype == torch.bool:
        if t.dim() != 1 or t.numel() != units:
            raise ConfigError(
                f"a boolean neuron mask must have one entry per unit of layer {layer!r} ({units}), "
                f"got shape {tuple(t.shape)}"
            )
        idx = torch.nonzero(t).flatten().tolist()
    else:
        if t.dim() == 0:
            t = t.view(1)
        if t.dim() != 1 or t.is_floating_point():
            raise ConfigError("neurons must be a list of integer unit indices or a boolean mask")
        idx = t.tolist()
        bad = [i for i in idx if not -units <= i < units]
        if bad:
            raise ConfigError(
                f"neuron indices {bad[:8]} are out of range for layer {layer!r}, which has {units} "
                f"units (valid: 0..{units - 1})"
            )
        idx = [i % units for i in idx]
        if len(set(idx)) != len(idx):
            raise ConfigError("neuron indices contain duplicates")
    if not idx:
        raise ConfigError(f"the neuron selection for layer {layer!r} is empty")
    return idx
