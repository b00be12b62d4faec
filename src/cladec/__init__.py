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
from .capture import LayerCapture, list_layers, resolve_layer
from .decoder import build_decoder
from .explainer import ClaDec, CollapseWarning, RefAE, fit_together
from .explanation import Explanation, explain
from .persistence import load

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
