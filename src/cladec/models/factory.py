"""Building a user's model from an importable factory (``"package.module:function"``) and loading weights into
it strictly: :func:`load_user_model` (``--factory``, and the factories of :mod:`cladec.models.sources`)."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._errors import ConfigError, SaveFormatError
from .._io import load_state_dict_file

__all__ = ["load_user_model", "check_state_dict_fits"]


def check_state_dict_fits(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise a SaveFormatError naming the missing, unexpected and mismatched keys when ``state`` does not fit
    ``model`` strictly (``source``: where the weights came from)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s), e.g. {missing[:5]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s), e.g. {unexpected[:5]}")
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatch(es), e.g. {mismatched[:3]}")
        raise SaveFormatError(
            f"the weights in {source} do not fit the model: {'; '.join(parts)}. Build the model with the same "
            "architecture and arguments (e.g. in_channels, num_classes, width) as the one that was saved"
        )


def load_user_model(factory: str, weights: str | Path | None = None, **factory_kwargs: Any) -> nn.Module:
    """Build a model from any importable factory and optionally load weights into it.

    Args:
        factory: ``"package.module:function"`` (the attribute may be dotted, e.g. ``"mod:Class.build"``);
            for example ``"torchvision.models:resnet18"``.
        weights: optional ``.safetensors`` file or PyTorch state dict file (read with ``weights_only=True``,
            never a full pickle); a ``{"state_dict": ...}`` wrapper and a ``module.`` prefix (from
            ``DataParallel``) are accepted. Loading is strict.
        **factory_kwargs: keyword arguments for the factory (e.g. ``num_classes=10``).

    Returns:
        The model, in eval mode.

    Raises:
        ConfigError: malformed factory string, module not importable, attribute missing or not callable,
            factory failing or not returning an ``nn.Module``.
        SaveFormatError: unreadable weights, or weights that do not fit (missing/unexpected keys listed).

    Examples:
        >>> net = load_user_model("cladec.models.vgg:vgg_paper", in_channels=1, width=0.25)
        >>> net.training
        False
        >>> torch.save(classifier.state_dict(), "weights.pt")
        >>> net = load_user_model("cladec.models.vgg:vgg_paper", "weights.pt", in_channels=1, width=0.25)
        >>> torch.equal(net.fc.weight, classifier.fc.weight)
        True
        >>> net = load_user_model("torchvision.models:resnet18", num_classes=10)  # needs torchvision  # doctest: +SKIP
    """
    fmt = "factory must look like 'package.module:function' (e.g. 'torchvision.models:resnet18')"
    if not isinstance(factory, str) or factory.count(":") != 1:
        raise ConfigError(f"{fmt}, got {factory!r}")
    mod_name, attr_path = (s.strip() for s in factory.split(":"))
    if (
        not mod_name
        or not attr_path
        or not all(p.isidentifier() for p in attr_path.split("."))
        or not all(p.isidentifier() for p in mod_name.split("."))
    ):
        raise ConfigError(f"{fmt}, got {factory!r}")
    try:
        module = importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        raise ConfigError(
            f"cannot import module {mod_name!r} for factory {factory!r}: {e}; install the package or add its "
            "folder to PYTHONPATH"
        ) from None
    except Exception as e:  # noqa: BLE001 - the user's module failed while importing
        raise ConfigError(
            f"importing module {mod_name!r} for factory {factory!r} failed: {type(e).__name__}: {e}"
        ) from None
    obj: Any = module
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            names = sorted(n for n in dir(obj) if not n.startswith("_") and callable(getattr(obj, n, None)))
            raise ConfigError(
                f"{factory!r}: {getattr(obj, '__name__', mod_name)!r} has no attribute {part!r}; callables there "
                f"include: {', '.join(names[:15]) or 'none'}"
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"{factory!r} is a {type(obj).__name__}, not a callable that builds a model")
    try:
        model = obj(**factory_kwargs)
    except Exception as e:  # noqa: BLE001 - report any failure of the user's factory
        raise ConfigError(f"calling {factory}(**{factory_kwargs!r}) failed: {type(e).__name__}: {e}") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"{factory!r} returned a {type(model).__name__}, not a torch.nn.Module")
    if weights is not None:
        state = load_state_dict_file(weights)
        own = model.state_dict()
        if state and all(k.startswith("module.") for k in state) and not any(k.startswith("module.") for k in own):
            state = {k[len("module.") :]: v for k, v in state.items()}
        check_state_dict_fits(model, state, str(weights))
        model.load_state_dict(state, strict=True)
    return model.eval()
