"""The explainers of the paper: :class:`ClaDec` and its control :class:`RefAE`.

Both decode a layer's activations back into images; :func:`fit_together` fits several of them on one pass
over the data. A :class:`CollapseWarning` says that a fitted decoder's output hardly varies across images.
"""

from __future__ import annotations

from .base import DEFAULT_CACHE_BUDGET
from .cladec import ClaDec
from .fitting import CollapseWarning
from .refae import RefAE
from .together import fit_together

__all__ = [
    "ClaDec",
    "RefAE",
    "CollapseWarning",
    "fit_together",
    "DEFAULT_CACHE_BUDGET",
]
