"""Argument types shared by the ``cladec`` subcommand modules."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def pos_int(text: str) -> int:
    """argparse type: a positive integer."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def csv_list(conv: Callable[[str], Any], what: str) -> Callable[[str], list]:
    """argparse type: a comma-separated list, each item converted by ``conv`` (at least one item)."""

    def parse(text: str) -> list:
        items = [t.strip() for t in text.split(",") if t.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"{what}: give a comma-separated list, got {text!r}")
        try:
            return [conv(t) for t in items]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what}: cannot read {text!r} as a comma-separated list") from None

    return parse


def seed_int(text: str) -> int:
    """argparse type: a random seed, an integer from 0 to 2**63 - 1 (see :func:`cladec._checks.seed`)."""
    from ._checks import SEED_MAX

    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer from 0 to {SEED_MAX}, got {text!r}") from None
    if not 0 <= v <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"expected an integer from 0 to {SEED_MAX} (2**63 - 1), got {text}")
    return v


def learning_rate(text: str) -> float:
    """argparse type: a learning rate, a finite number in (0, 10] (see :func:`cladec._checks.learning_rate`)."""
    from ._checks import LR_MAX

    msg = f"expected a finite number in (0, {LR_MAX:g}] (Adam typically 1e-4 to 1e-2, SGD 0.01 to 0.1), got {text!r}"
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(msg) from None
    if not (0 < v <= LR_MAX):  # also nan and inf
        raise argparse.ArgumentTypeError(msg)
    return v
