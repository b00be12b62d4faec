"""A small model registry: ``@register_model`` names a factory, :func:`create_model` builds it."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar, overload

from torch import nn

from .._checks import positive_int
from .._errors import ConfigError

__all__ = ["register_model", "create_model", "list_models", "model_kwargs"]

Factory = Callable[..., nn.Module]
F = TypeVar("F", bound=Factory)

_MODELS: dict[str, Factory] = {}


@overload
def register_model(name_or_fn: F) -> F: ...
@overload
def register_model(name_or_fn: str | None = None) -> Callable[[F], F]: ...


def register_model(name_or_fn: str | Factory | None = None) -> Any:
    """Register a model factory under a name (default: the function name with ``_`` replaced by ``-``).

    The factory must accept ``in_channels`` and ``num_classes`` keyword arguments and return an
    ``nn.Module``. Names are case-insensitive.

    Args:
        name_or_fn: the name, or the factory itself when used as a bare ``@register_model``.

    Returns:
        The factory unchanged (or a decorator that registers and returns it).

    Examples:
        >>> @register_model("tiny-mlp")
        ... def tiny_mlp(in_channels=1, num_classes=10, image_size=28):
        ...     return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size**2, num_classes))
        >>> "tiny-mlp" in list_models()
        True
    """

    def _register(fn: F, name: str | None) -> F:
        key = (name or fn.__name__.replace("_", "-")).lower()
        old = _MODELS.get(key)
        ident = _identity(fn)
        same = old is not None and (old is fn or (ident is not None and ident == _identity(old)))
        if old is not None and not same:  # the same function again (a module reloaded) replaces itself
            raise ConfigError(f"a model named {key!r} is already registered; pick another name")
        try:
            params = inspect.signature(fn).parameters.values()
        except (TypeError, ValueError):
            raise ConfigError(f"cannot register {fn!r}: its signature cannot be read") from None
        if not any(p.kind == p.VAR_KEYWORD for p in params) and not {"in_channels", "num_classes"} <= {
            p.name for p in params
        }:
            raise ConfigError(
                f"model factory {getattr(fn, '__qualname__', fn)!r} must accept in_channels and "
                "num_classes keyword arguments"
            )
        _MODELS[key] = fn
        return fn

    if callable(name_or_fn):
        return _register(name_or_fn, None)

    def decorator(fn: F) -> F:
        return _register(fn, name_or_fn)

    return decorator


def _identity(fn: Any) -> tuple[str, str] | None:
    """A module-level function's (module, qualified name): what stays the same when its module is reloaded.
    None for lambdas, closures, partials and instances, which are never taken for one another."""
    mod, qual = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    if not isinstance(mod, str) or not isinstance(qual, str) or "<lambda>" in qual or "<locals>" in qual:
        return None
    return mod, qual


def list_models() -> list[str]:
    """Names of all registered models, sorted.

    Returns:
        A sorted list of names, e.g. ``["resnet10", "resnet18", "vgg-paper"]``.

    Examples:
        >>> "vgg-paper" in list_models()
        True
    """
    return sorted(_MODELS)


def _lookup(name: str) -> tuple[str, Factory]:
    key = name.lower().strip() if isinstance(name, str) else None
    if key is None or key not in _MODELS:
        raise ConfigError(f"unknown model {name!r}; valid models: {', '.join(list_models())}")
    return key, _MODELS[key]


def model_kwargs(name: str) -> dict[str, Any]:
    """The keyword arguments a registered model accepts, with their defaults.

    Args:
        name: registered model name.

    Returns:
        ``{argument: default}`` (``inspect.Parameter.empty`` for required ones).

    Examples:
        >>> model_kwargs("vgg-paper")["width"]
        1.0
    """
    _, fn = _lookup(name)
    return {
        p.name: p.default
        for p in inspect.signature(fn).parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def create_model(name: str, in_channels: int = 1, num_classes: int = 10, **kwargs: Any) -> nn.Module:
    """Build a registered model.

    The returned module gets the attributes ``arch`` (the registered name) and ``arch_kwargs`` (every
    argument needed to build it again, for checkpoints) besides the model's own ``default_layers``.

    Args:
        name: registered name (case-insensitive), see :func:`list_models`.
        in_channels: image channels (1 grey, 3 colour).
        num_classes: number of output classes.
        **kwargs: model-specific options (e.g. ``width=0.25``).

    Returns:
        A freshly initialised ``nn.Module`` in train mode.

    Raises:
        ConfigError: unknown name, bad channel/class count or an option the model does not take.

    Examples:
        >>> m = create_model("vgg-paper", in_channels=1, num_classes=10, width=0.25)
        >>> m(torch.rand(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """
    key, fn = _lookup(name)
    positive_int("in_channels", in_channels)
    positive_int("num_classes", num_classes)
    accepted = model_kwargs(key)
    takes_any = any(p.kind == p.VAR_KEYWORD for p in inspect.signature(fn).parameters.values())
    unknown = [] if takes_any else sorted(set(kwargs) - set(accepted))
    if unknown:
        options = sorted(set(accepted) - {"in_channels", "num_classes"})
        raise ConfigError(
            f"model {key!r} does not take {', '.join(unknown)}; its options are: {', '.join(options) or 'none'}"
        )
    model = fn(in_channels=in_channels, num_classes=num_classes, **kwargs)
    if not isinstance(model, nn.Module):  # pragma: no cover - registry misuse
        raise ConfigError(f"the factory of {key!r} returned {type(model).__name__}, not an nn.Module")
    model.arch = key  # type: ignore[assignment]  # a plain attribute
    arch_kwargs = {"in_channels": in_channels, "num_classes": num_classes, **kwargs}
    model.arch_kwargs = arch_kwargs  # type: ignore[assignment]  # a plain attribute
    return model
