"""The names of the saliency methods (ClaDec relevance variants and baselines) and their aliases."""

from __future__ import annotations

import difflib

from .._errors import ConfigError
from ..defaults import BASELINE_METHODS

__all__ = ["VARIANTS", "DEFAULT_VARIANT", "available_methods", "canonical_method"]

VARIANTS = ("kept", "evidence", "swap", "roundtrip")

DEFAULT_VARIANT = "roundtrip"

_ALIASES = {
    "gradient": "saliency",
    "grad": "saliency",
    "ixg": "input-x-gradient",
    "inputxgradient": "input-x-gradient",
    "input_x_gradient": "input-x-gradient",
    "ig": "integrated-gradients",
    "integratedgradients": "integrated-gradients",
    "integrated_gradients": "integrated-gradients",
    "gbp": "guided-backprop",
    "guidedbackprop": "guided-backprop",
    "guided_backprop": "guided-backprop",
    "grad-cam": "gradcam",
    "layergradcam": "gradcam",
    "guidedgradcam": "guided-gradcam",
    "guided_gradcam": "guided-gradcam",
    "edge": "sobel",
    "edges": "sobel",
}

_NEEDS_LAYER = ("gradcam", "guided-gradcam")


def _cladec_names() -> list[str]:

    return ["cladec"] + [f"cladec-{v}" for v in VARIANTS]


def available_methods() -> list[str]:
    """The canonical method names :func:`saliency_maps` accepts.

    Returns:
        A list: the captum baselines, ``random``, ``sobel``, ``cladec`` and each ``cladec-<variant>``.

    Examples:
        >>> "gradcam" in available_methods() and "cladec" in available_methods()
        True
    """
    return list(BASELINE_METHODS) + _cladec_names()


def canonical_method(name: str) -> str:
    """Map a method name or alias (case-insensitive) to its canonical name.

    Args:
        name: e.g. ``"IG"``, ``"guidedbackprop"``, ``"cladec-kept"``.

    Returns:
        The canonical name, e.g. ``"integrated-gradients"``.

    Raises:
        ConfigError: for an unknown name; the message lists every valid name.

    Examples:
        >>> canonical_method("IG")
        'integrated-gradients'
    """
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"a saliency method name must be a non-empty string; valid: {', '.join(available_methods())}")
    key = name.strip().lower().replace(" ", "")
    key = _ALIASES.get(key, key)
    valid = available_methods()
    if key in valid:
        return key
    close = difflib.get_close_matches(key, valid + list(_ALIASES), n=3, cutoff=0.6)
    hint = f" (did you mean {', '.join(repr(_ALIASES.get(c, c)) for c in close)}?)" if close else ""
    raise ConfigError(f"unknown saliency method {name!r}{hint}; valid methods: {', '.join(valid)}")


def stored_name(method: str) -> str:
    """Name under which a method's maps and units are stored: ``cladec`` is stored as its variant, so a
    changed default never reuses another variant's results."""
    if method == "cladec":
        return f"cladec-{DEFAULT_VARIANT}"
    return method
