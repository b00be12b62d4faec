"""The ``cladec`` command line: one module per command group, each parsing its arguments and calling the library.

Each command module (``demo``, ``classifier``, ``fit``, ``explain``, ``evaluate``, ``sweep``, ``saliency``,
``report``, ``study``) has ``register(subparsers)``, which adds its parsers, and a handler ``cmd_*(args) -> int``
per command. At the top a command module imports only :mod:`cladec.cli._args`, ``cladec._checks``,
``cladec._errors`` and :mod:`cladec.defaults`, all torch-free; each handler imports the library it calls inside
itself. That is the one kind of deferred import here, and deliberate: importing this package and building the
parser (``cladec --help``, usage errors) loads no torch, so they are quick, and a Ctrl-C while torch loads reaches
:func:`main` (one line, exit status 130).
"""

from __future__ import annotations

from ._args import parse_image_shape, parse_input_norm, parse_neurons
from .main import build_parser, main

__all__ = [
    "main",
    "build_parser",
    "parse_neurons",
    "parse_input_norm",
    "parse_image_shape",
]
