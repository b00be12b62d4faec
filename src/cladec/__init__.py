"""cladec: explain what a layer of an image classifier has learned by decoding its activations.

Public API (everything else lives in private modules):

* :class:`ClaDec`, :class:`RefAE` — fit decoders for a layer; ``reconstruct``; ``save``;
  :func:`fit_together` fits a ClaDec and its RefAE at once (overlapped on a GPU); :class:`CollapseWarning`
  when a decoder's output hardly varies across images.
* :func:`load` — restore a saved explainer.
* :func:`explain` / :class:`Explanation` — triplets original | RefAE | ClaDec, with a PNG grid.
* :func:`list_layers`, :func:`resolve_layer`, :class:`LayerCapture`, :func:`build_decoder` — building blocks.
* :class:`CladecError` and its kinds :class:`ConfigError`, :class:`DataError`, :class:`SaveFormatError`,
  :class:`TrainingError` — what a wrong input raises.
* Subpackages: :mod:`cladec.data` (data sets), :mod:`cladec.models` (architectures; training, saving and loading
  classifiers), :mod:`cladec.runs` (run directories, as ``cladec fit`` writes), :mod:`cladec.evaluation`
  (metrics, evaluations, α sweeps), :mod:`cladec.saliency` (relevance maps and their scores), :mod:`cladec.report`
  (the HTML report and the user study).

Examples:
    >>> import cladec
    >>> from cladec.models import train_classifier
    >>> from cladec.data import load_dataset
    >>> from cladec.models import create_model
    >>> train = load_dataset("fashion-mnist-mini", limit=1000)  # embedded: no download
    >>> net = create_model("vgg-paper", in_channels=1, num_classes=10, width=0.25)
    >>> _ = train_classifier(net, train, epochs=1, verbose=False)
    >>> [(layer.name, layer.shape) for layer in cladec.list_layers(net, train.tensors()[0][:1])][12:14]
    [('conv2', (32, 4, 4)), ('conv2.conv', (32, 4, 4))]
    >>> exp = cladec.ClaDec(net, "conv2", alpha=0.001)
    >>> ref = cladec.RefAE.like(exp)
    >>> _ = cladec.fit_together([exp, ref], train, epochs=1, lr=3e-3, batch_size=32, verbose=False)
    >>> test_x, test_y = load_dataset("fashion-mnist-mini", split="test", limit=8).tensors()
    >>> e = cladec.explain(test_x, cladec=exp, refae=ref, labels=test_y, classes=train.classes)
    >>> e.save_grid("triplets.png")
    PosixPath('triplets.png')
    >>> exp.save("conv2-cladec")
    >>> cladec.load("conv2-cladec", net).layer
    'conv2'
    >>> all(hasattr(cladec, name) for name in cladec.__all__)
    True
    >>> issubclass(cladec.DataError, cladec.CladecError)
    True
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
    "ClaDec": "explainers",
    "CollapseWarning": "explainers",
    "RefAE": "explainers",
    "fit_together": "explainers",
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
