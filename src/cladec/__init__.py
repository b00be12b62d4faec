"""cladec: explain what a layer of an image classifier has learned by decoding its activations.

Public API (everything else lives in private modules):

* :class:`ClaDec`, :class:`RefAE` — fit decoders for a layer; ``reconstruct``; ``save``;
  :func:`fit_together` fits a ClaDec and its RefAE at once (overlapped on a GPU).
* :func:`load` — restore a saved explainer.
* :func:`explain` / :class:`Explanation` — triplets original | RefAE | ClaDec, with a PNG grid.
* :func:`list_layers`, :class:`LayerCapture`, :func:`build_decoder` — building blocks.
* :mod:`cladec.data`, :mod:`cladec.models` — data sets and classifiers; :func:`train_classifier`.
"""

import os as _os

# On a CPU that other programs keep busy, OpenMP threads that spin while waiting make small
# convolutions many times slower; sleeping waiters cost little when the machine is idle. Set before
# torch is first imported; a value set by the user wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from ._errors import CladecError, ConfigError, DataError, SaveFormatError, TrainingError
from ._version import __version__

# The names that need torch are imported on first use (PEP 562), so that `import cladec` -- and with it the
# `cladec` command's start -- is quick and a Ctrl-C while torch loads reaches cladec.cli.main (one line, exit 130)
_LAZY = {
    "LayerCapture": "capture",
    "list_layers": "capture",
    "resolve_layer": "capture",
    "build_decoder": "decoder",
    "ClaDec": "explainer",
    "CollapseWarning": "explainer",
    "RefAE": "explainer",
    "fit_together": "explainer",
    "Explanation": "explanation",
    "explain": "explanation",
    "load": "persistence",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "__version__",
    "ClaDec",
    "RefAE",
    "fit_together",
    "CollapseWarning",
    "explain",
    "Explanation",
    "load",
    "list_layers",
    "resolve_layer",
    "LayerCapture",
    "build_decoder",
    "CladecError",
    "ConfigError",
    "DataError",
    "SaveFormatError",
    "TrainingError",
]
