"""The ``cladec`` command line: one module per command group, each parsing its arguments and calling the library.

Importing this package loads no torch, so ``cladec --help`` and usage errors are quick.
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
