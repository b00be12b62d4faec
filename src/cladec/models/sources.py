"""Classifiers by name: ``torchvision:NAME``, ``timm:NAME`` and the project's own registry (``vgg-paper``, ...).

:func:`load_model` builds one (random init, ``pretrained=True`` for the library's own download, or your
``weights``), takes its input normalisation from the model's metadata (timm's ``pretrained_cfg``, torchvision's
weights transforms) and names its default layers (:func:`cladec.models.roles.default_layers`). A run records the
source (``run.json``'s classifier entry of type ``source``) and rebuilds the model from it.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._errors import ConfigError
from ._registry import list_models
from .factory import load_user_model
from .roles import default_layers

__all__ = [
    "LIBRARIES",
    "is_model_source",
    "library_source",
    "library_channels",
    "check_source",
    "build_library_model",
    "load_model",
    "source_names",
]

#: The libraries a source may name, with the factory each one builds its models with.
LIBRARIES = {"torchvision": "torchvision.models:get_model", "timm": "timm:create_model"}


def is_model_source(text: Any) -> bool:
    """Whether ``text`` names a model source (``torchvision:NAME``, ``timm:NAME`` or a registered name) rather than
    a checkpoint folder: an existing path is always a folder.

    Examples:
        >>> is_model_source("torchvision:resnet18"), is_model_source("vgg-paper"), is_model_source("clf/")
        (True, True, False)
    """
    if not isinstance(text, (str, os.PathLike)) or Path(text).exists():
        return False
    text = str(text)
    return text.split(":", 1)[0] in LIBRARIES and ":" in text or text.lower().strip() in list_models()


def library_source(text: Any) -> bool:
    """Whether ``text`` is a ``torchvision:NAME`` or ``timm:NAME`` source (a checkpoint's ``arch`` may be one).

    Examples:
        >>> library_source("timm:convnext_atto"), library_source("vgg-paper"), library_source(None)
        (True, False, False)
    """
    return isinstance(text, str) and text.partition(":")[0] in LIBRARIES and bool(text.partition(":")[2].strip())


def build_library_model(source: str, weights: Any = None, *, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """The bare model a ``torchvision:``/``timm:`` source names, from the library's factory (no metadata, no
    roles: :func:`load_model` adds them); ``kwargs`` go to the factory (``num_classes``, ``img_size``, ...).

    Examples:
        >>> type(build_library_model("timm:convnext_atto", num_classes=3)).__name__  # doctest: +SKIP
        'ConvNeXt'
    """
    library, name = _split(str(source))
    if library == "torchvision":
        classes = kwargs.pop("num_classes", None) if pretrained else None
        if pretrained:
            kwargs["weights"] = "DEFAULT"
        model = load_user_model(LIBRARIES[library], weights, name=name, **kwargs)
        if classes is not None:  # torchvision's weights come with their 1000-class head: a new one, untrained
            _new_head(model, int(classes))
        return model
    return load_user_model(LIBRARIES[library], weights, model_name=name, pretrained=pretrained, **kwargs)


def _new_head(model: nn.Module, classes: int) -> None:
    """Replace the last ``nn.Linear`` of a pretrained model by a fresh one with ``classes`` outputs."""
    last = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not last or last[-1][1].out_features == classes:
        return
    name, old = last[-1]
    parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
    setattr(parent, name.rpartition(".")[2], nn.Linear(old.in_features, classes, bias=old.bias is not None))


def library_channels(source: str, channels: int) -> dict[str, Any]:
    """The factory argument that builds a library model for images of ``channels`` channels: ``{}`` for 3,
    ``{"in_chans": C}`` for timm.

    Raises:
        ConfigError: A torchvision model for images that are not RGB (its models take 3 channels).

    Examples:
        >>> library_channels("timm:resnet18", 1), library_channels("torchvision:resnet18", 3)
        ({'in_chans': 1}, {})
    """
    if channels == 3:
        return {}
    if str(source).startswith("timm:"):
        return {"in_chans": int(channels)}
    raise ConfigError(
        f"{source} takes RGB images (3 channels), but the data set's have {channels}: use a timm:NAME model "
        "(built with in_chans for them) or an RGB data set"
    )


def check_arch(
    arch: str, *, width: Any = None, arch_kwargs: Any = None, pretrained: bool = False, names: Any = None
) -> bool:
    """Whether a classifier to train (``cladec train-classifier --arch``) is a library model, with its name and
    the options checked: ``width`` only for cladec's own, ``arch_kwargs`` and ``pretrained`` only for a library's.

    Examples:
        >>> check_arch("timm:convnext_atto"), check_arch("vgg-paper", width=0.5)
        (True, False)
    """
    shown = {k: k for k in ("width", "arch_kwargs", "pretrained")} | dict(names or {})
    if library_source(arch):
        check_source(arch)  # an unknown name, before any data is loaded
        if width is not None:
            raise ConfigError(f"{shown['width']} scales cladec's own architectures, not {arch}: drop it")
        return True
    if arch_kwargs or pretrained:
        given = " and ".join(shown[k] for k, v in (("arch_kwargs", arch_kwargs), ("pretrained", pretrained)) if v)
        raise ConfigError(f"{given}: only for a torchvision:NAME or timm:NAME model, not {arch!r}; drop it")
    return False


def check_source(source: str) -> tuple[str, str]:
    """``(library, name)`` of a model source, checked before anything is built (``"cladec"`` for the project's
    own names).

    Raises:
        ConfigError: An unknown library or name (the closest names are listed), or a library not installed.

    Examples:
        >>> check_source("vgg-paper")
        ('cladec', 'vgg-paper')
    """
    library, name = _split(str(source))
    _check_name(library, name)
    return library, name


def source_names(library: str) -> list[str]:
    """The model names a library's registry knows (``"torchvision"``, ``"timm"``, ``"cladec"``).

    Raises:
        ConfigError: The library is not installed (``pip install "cladec[vision]"``).
    """
    if library == "cladec":
        return list_models()
    try:
        if library == "torchvision":
            import torchvision.models as tvm

            return sorted(tvm.list_models(module=tvm))  # the classifiers (not detection, ...)
        import timm

        return sorted(timm.list_models())
    except ImportError:
        raise ConfigError(
            f"{library} is not installed: `pip install {library}` (or cladec[vision]) to use {library}: models"
        ) from None


def _split(source: str) -> tuple[str, str]:
    """``(library, name)`` of a source; the project's own names are ``("cladec", name)``."""
    library, sep, name = source.partition(":")
    if sep and library in LIBRARIES:
        if not name.strip():
            raise ConfigError(f"model source {source!r} names no model: give {library}:NAME, e.g. {library}:resnet18")
        return library, name.strip()
    if sep:
        raise ConfigError(
            f"unknown model library {library!r} in {source!r}; give torchvision:NAME, timm:NAME or one of "
            f"cladec's models ({', '.join(list_models())})"
        )
    return "cladec", source.lower().strip()


def _check_name(library: str, name: str) -> None:
    names = source_names(library)
    if name in names:
        return
    close = difflib.get_close_matches(name, names, n=8, cutoff=0.5)
    where = f"{library}:" if library != "cladec" else ""
    hint = f"close matches: {', '.join(where + c for c in close)}" if close else f"{len(names)} names are valid"
    listing = "torchvision.models.list_models()" if library == "torchvision" else "timm.list_models()"
    listing = "cladec.models.list_models()" if library == "cladec" else listing
    raise ConfigError(f"unknown {library} model {name!r}; {hint} (all: {listing})")


def _build(library: str, name: str, weights: str | None, pretrained: bool, kw: dict[str, Any]) -> nn.Module:
    if library == "cladec":
        if pretrained:
            raise ConfigError(f"cladec's own models have no pretrained weights: {name!r}")
        return load_user_model("cladec.models:create_model", weights, name=name, **kw)
    return build_library_model(f"{library}:{name}", weights, pretrained=pretrained, **kw)


def _metadata(library: str, name: str, model: nn.Module, kwargs: dict[str, Any]) -> tuple[Any, Any]:
    """The ``(input_norm, image_shape)`` the model's own metadata gives (None where it gives none)."""
    norm: Any = None
    shape: Any = None
    if library == "timm":
        cfg = getattr(model, "pretrained_cfg", None) or {}
        if cfg.get("mean") is not None and cfg.get("std") is not None:
            norm = [list(map(float, cfg["mean"])), list(map(float, cfg["std"]))]
        shape = list(cfg["input_size"]) if cfg.get("input_size") else None
    elif library == "torchvision":
        import torchvision.models as tvm

        try:
            t = tvm.get_model_weights(name).DEFAULT.transforms()
            norm = [list(map(float, t.mean)), list(map(float, t.std))]
            crop = int(t.crop_size[0])
            shape = [3, crop, crop]
        except Exception:  # noqa: BLE001 - a model without registered weights has no metadata
            norm, shape = None, [3, 224, 224]
    else:
        shape = None
    size = kwargs.get("img_size", kwargs.get("image_size"))  # a ViT built for another size
    if shape is not None and size is not None:
        hw = [int(size), int(size)] if isinstance(size, int) else [int(s) for s in size]
        shape = [shape[0], *hw]
    if shape is not None and kwargs.get("in_chans") is not None:
        shape = [int(kwargs["in_chans"]), *shape[1:]]
    return norm, shape


def load_model(
    source: str,
    *,
    weights: str | os.PathLike | None = None,
    num_classes: int | None = None,
    pretrained: bool = False,
    input_norm: Any = None,
    init_seed: int | None = 0,
    **kwargs: Any,
) -> nn.Module:
    """Build a classifier from a source: ``"torchvision:NAME"``, ``"timm:NAME"`` or a registered name.

    Args:
        source: ``torchvision:NAME`` (any name of ``torchvision.models.list_models()``, built with
            ``torchvision.models.get_model``), ``timm:NAME`` (``timm.create_model``), or one of
            :func:`cladec.models.list_models`.
        weights: Optional ``.safetensors`` file or state dict, read with ``weights_only=True`` (never unpickled);
            loading is strict.
        num_classes: Output classes (default: the library's, 1000 for ImageNet models).
        pretrained: Download the library's pretrained weights (online; not with ``weights``).
        input_norm: ``(mean, std)`` the model expects; default: from the model's metadata (timm's
            ``pretrained_cfg``, the transforms of torchvision's default weights), else none.
        init_seed: Without ``weights`` and ``pretrained``, the random initial weights are drawn from this seed (the
            global random state is left as it was), so a run of an untrained model reloads the same network;
            None draws them from the global random state.
        **kwargs: Passed to the library's factory (e.g. ``img_size=64`` for a timm ViT, ``in_channels=1``).

    Returns:
        The model in eval mode, with ``default_layers`` (the roles ``"last"``/``"middle"``) and ``source_info``:
        ``{"source", "input_norm", "image_shape"}`` (``image_shape`` ``[C, H, W]`` from the metadata, or None).

    Raises:
        ConfigError: An unknown library or name (the closest names are listed), a library that is not installed,
            or ``pretrained`` with ``weights``.
        SaveFormatError: Weights that cannot be read or do not fit the model (missing/unexpected keys, shapes).

    Examples:
        >>> net = load_model("vgg-paper", num_classes=10, in_channels=1, width=0.25)
        >>> net.default_layers, net.training
        ({'last': 'conv4', 'middle': 'conv2'}, False)
        >>> load_model("vgg-papr")
        Traceback (most recent call last):
            ...
        cladec._errors.ConfigError: unknown cladec model 'vgg-papr'; close matches: vgg-paper (all: ...)
    """
    from ..normalize import check_input_norm

    library, name = check_source(source)
    weights = None if weights is None else str(weights)
    if pretrained and weights is not None:
        raise ConfigError("give either pretrained weights (--pretrained) or a weights file (--weights), not both")
    kw = dict(kwargs)
    if num_classes is not None:
        kw["num_classes"] = int(num_classes)
    seeded = weights is None and not pretrained and init_seed is not None
    with torch.random.fork_rng(devices=[], enabled=seeded):
        if seeded:
            torch.manual_seed(int(init_seed))  # type: ignore[arg-type]  # not None when seeded
        model = _build(library, name, weights, pretrained, kw)
    norm, shape = _metadata(library, name, model, kw)
    if input_norm is not None:
        check_input_norm(input_norm)
        norm = [list(map(float, v)) if isinstance(v, (list, tuple)) else float(v) for v in input_norm]
    marked: Any = model  # plain attributes on the module, read by cladec.capture and models.spec
    if shape is not None:
        marked.default_layers = default_layers(model, torch.zeros(1, *shape))
    elif not getattr(model, "default_layers", None):
        marked.default_layers = default_layers(model)
    marked.source_info = {"source": str(source), "input_norm": norm, "image_shape": shape}
    return model.eval()
