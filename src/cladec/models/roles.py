"""The default layers of a classifier (the roles ``"last"`` and ``"middle"``), chosen from the model's structure.

The project's own models name theirs (``model.default_layers``). For torchvision and timm models a rule per family
picks them from the stages the model is built of: ResNet's ``layer1`` … ``layer4``; the stage containers of
ConvNeXt, EfficientNet, Swin and ViT (``stages``, ``layers``, ``blocks``, ``encoder.layers``, ``features``). A model
none of the rules fits is probed with one forward pass: the last and the middle module whose output is a spatial map
``(N, C, H, W)`` or a token grid ``(N, T, D)``, among the outermost such modules.
"""

from __future__ import annotations

import re

import torch
from torch import nn

__all__ = ["ROLES", "default_layers", "family_layers"]

#: The roles a layer may be named by (``cladec fit --layer last``).
ROLES = ("last", "middle")

#: Stage containers, most specific first: timm ConvNeXt/RegNet (``stages``), timm Swin (``layers``), timm ViT and
#: EfficientNet (``blocks``), torchvision ViT (``encoder.layers``), torchvision ConvNeXt/EfficientNet/Swin/VGG/
#: MobileNet (``features``).
STAGE_CONTAINERS = ("stages", "layers", "blocks", "encoder.layers", "features")


def _pick(stages: list[str]) -> dict[str, str]:
    """``last`` = the last stage; ``middle`` = the one before the middle (``layer2`` of four, ``blocks.5`` of 12)."""
    if not stages:
        return {}
    roles = {"last": stages[-1]}
    if len(stages) >= 2:
        roles["middle"] = stages[(len(stages) - 1) // 2]
    return roles


def family_layers(model: nn.Module) -> dict[str, str]:
    """The default layers a family rule finds in the model's structure, without running it.

    Args:
        model: A classifier.

    Returns:
        ``{"last": name, "middle": name}`` (``middle`` missing for a model of one stage), empty when no rule fits.

    Examples:
        >>> from cladec.models import create_model
        >>> family_layers(create_model("resnet10"))  # stages layer1 ... layer4
        {'last': 'layer4', 'middle': 'layer2'}
        >>> family_layers(nn.Sequential(nn.Linear(2, 2)))
        {}
    """
    children = dict(model.named_children())
    numbered = sorted((int(n[5:]), n) for n in children if re.fullmatch(r"layer\d+", n))
    if len(numbered) >= 2:  # ResNet, ResNeXt, Wide ResNet (torchvision and timm)
        return _pick([n for _, n in numbered])
    modules = dict(model.named_modules())
    for name in STAGE_CONTAINERS:
        box = modules.get(name)
        if isinstance(box, (nn.Sequential, nn.ModuleList)) and len(box) >= 2:
            return _pick([f"{name}.{n}" for n, _ in box.named_children()])
    return {}


def _probed(model: nn.Module, example_input: torch.Tensor) -> dict[str, str]:
    """The last and middle of the outermost modules whose output is a spatial map or a token grid."""
    found: list[str] = []
    handles = []

    def hook(name: str):
        def record(_mod, _inp, out):
            if isinstance(out, torch.Tensor) and name not in found:
                spatial = out.dim() == 4 and out.shape[-1] * out.shape[-2] > 1
                tokens = out.dim() == 3 and out.shape[1] > 1
                if spatial or tokens:
                    found.append(name)

        return record

    for name, mod in model.named_modules():
        if name:
            handles.append(mod.register_forward_hook(hook(name)))
    try:
        with torch.no_grad():
            model(example_input)
    finally:
        for h in handles:
            h.remove()
    for depth in sorted({n.count(".") for n in found}):
        level = [n for n in found if n.count(".") == depth]
        if len(level) >= 2 or depth == max(n.count(".") for n in found):
            return _pick(level)
    return {}


def default_layers(model: nn.Module, example_input: torch.Tensor | None = None) -> dict[str, str]:
    """The roles ``"last"`` and ``"middle"`` of a classifier's layers.

    Args:
        model: A classifier.
        example_input: One batch of valid input; used only when neither the model (``model.default_layers``) nor a
            family rule (:func:`family_layers`) names the layers: then one forward pass finds them.

    Returns:
        ``{"last": name, "middle": name}``; empty when nothing is found (or nothing names them and no
        ``example_input`` is given).

    Examples:
        >>> from cladec.models import create_model
        >>> default_layers(create_model("vgg-paper"))  # the model names its own
        {'last': 'conv4', 'middle': 'conv2'}
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.Flatten(), nn.LazyLinear(2))
        >>> default_layers(net, torch.zeros(1, 1, 8, 8))  # probed: modules with a spatial output
        {'last': '2', 'middle': '1'}
    """
    named = getattr(model, "default_layers", None)
    if isinstance(named, dict) and named:
        return {str(k): str(v) for k, v in named.items()}
    rules = family_layers(model)
    if rules or example_input is None:
        return rules
    return _probed(model, example_input)
