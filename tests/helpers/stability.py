"""Margins of the tests that assert a *learned* outcome, and how their spread is measured.

A test that asserts what training achieved (a claim of the paper, "fit beats untrained", an ordering of
saliency maps, a path that equals another within a tolerance) states its statistic through :func:`margin`::

    margin("claim: RefAE/ClaDec test MSE", s["mse_refae"] / s["mse_cladec"], "<", 0.97)

which asserts ``value < 0.97`` and, when ``$CLADEC_STABILITY_LOG`` names a file, appends the value to it (one
JSON line). ``tests/stability/measure.py`` runs those tests over seeds (``$CLADEC_STABILITY_SEED``, added to
every seed the tests fix through :func:`seed`), torch thread counts and bf16 autocast on and off, and prints
each statistic's min and max beside its threshold; ``tests/STABILITY.md`` records the result.
"""

from __future__ import annotations

import json
import operator
import os

#: Offset added to the seeds the learned-outcome tests and their fixtures fix (0 in a normal test run).
SEED = int(os.environ.get("CLADEC_STABILITY_SEED", "0"))

_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


def seed(base: int = 0) -> int:
    """The seed a test fixes, shifted by ``$CLADEC_STABILITY_SEED`` while its spread is measured."""
    return base + SEED


def margin(name: str, value: float, op: str, threshold: float) -> None:
    """Assert ``value <op> threshold`` for a learned outcome, recording ``value`` while the spread is measured.

    Args:
        name: The statistic, as ``tests/STABILITY.md`` lists it (unique across the suite).
        value: What this run measured.
        op: One of ``<``, ``<=``, ``>``, ``>=``.
        threshold: The bound the value must keep (set from the measured worst case, with room).
    """
    value = float(value)
    log = os.environ.get("CLADEC_STABILITY_LOG")
    if log:
        import torch

        rec = {
            "name": name,
            "value": value,
            "op": op,
            "threshold": float(threshold),
            "seed": SEED,
            "threads": torch.get_num_threads(),
            "bf16": os.environ.get("CLADEC_STABILITY_BF16", ""),
        }
        with open(log, "a") as f:
            f.write(json.dumps(rec) + "\n")
    assert _OPS[op](value, threshold), f"{name}: {value:.4g} is not {op} {threshold:g}"


#: The torch thread count the session started with (set by conftest; fixtures shared across modules use it).
SESSION_THREADS = 2
