"""Helpers that several modules share, one implementation each (issue 16): the class-balanced sampler and the
meta-device build."""

from __future__ import annotations

import math
import random

import pytest
import torch
from torch import nn

from cladec._limits import build_on_meta, weight_bytes_on_meta
from cladec._sampling import balanced_indices

LABELS = [0, 0, 1, 2, 1, 0, 2, 2]


def _old_demo_pick(labels: torch.Tensor, n: int) -> list[int]:
    """The demo's own copy before the merge (demo._balanced_indices), kept here as the reference."""
    per_class = {c: (labels == c).nonzero().flatten().tolist() for c in sorted(set(labels.tolist()))}
    picked: list[int] = []
    rank = 0
    while len(picked) < n and any(rank < len(v) for v in per_class.values()):
        for v in per_class.values():
            if rank < len(v) and len(picked) < n:
                picked.append(int(v[rank]))
        rank += 1
    return sorted(picked, key=lambda i: (int(labels[i]), i))


def test_balanced_indices_orders():
    assert balanced_indices(LABELS, 5) == [0, 2, 3, 1, 4]  # round-robin: one of each class in turn
    assert balanced_indices(LABELS, 5, order="index") == [0, 1, 2, 3, 4]
    assert balanced_indices(LABELS, 4, order="class") == [0, 1, 2, 3]  # the demo's expectations (test_demo.py)
    assert balanced_indices(LABELS, 100, order="class") == [0, 1, 5, 2, 4, 3, 6, 7]
    assert balanced_indices(LABELS, 0) == [] and balanced_indices([], 3) == []


def test_balanced_indices_takes_a_tensor_and_matches_the_demo_pick():
    rnd = random.Random(0)
    for _ in range(200):
        y = torch.tensor([rnd.randrange(5) for _ in range(rnd.randrange(1, 40))])
        n = rnd.randrange(0, 45)
        assert balanced_indices(y, n, order="class") == _old_demo_pick(y, n)
        assert balanced_indices(y, n) == balanced_indices(y.tolist(), n)
        # the gallery's order, as it was: sorted(balanced_indices(labels.tolist(), n))
        assert balanced_indices(y, n, order="index") == sorted(balanced_indices(y.tolist(), n))


def test_balanced_indices_random_order_is_the_studys():
    """order="random" shuffles the choice with the same generator, as report/study.py did by hand."""
    labels = [i % 4 for i in range(30)]
    rng = random.Random(7)
    want = balanced_indices(labels, 10, rng)
    rng.shuffle(want)
    assert balanced_indices(labels, 10, random.Random(7), order="random") == want
    with pytest.raises(ValueError, match="needs rng"):
        balanced_indices(labels, 3, order="random")
    with pytest.raises(ValueError, match="order must be one of"):
        balanced_indices(labels, 3, order="sorted")  # type: ignore[arg-type]  # a wrong order, on purpose


def test_meta_build_keeps_the_overflow_distinction():
    huge = lambda: nn.Linear(2**40, 2**40)  # noqa: E731 - a builder, as the callers pass
    assert weight_bytes_on_meta(huge) == math.inf  # even the sizes overflow: too big, certainly
    assert build_on_meta(huge) is None  # no model to estimate from
    bad = lambda: nn.Linear(-1, 2)  # noqa: E731 - a builder, as the callers pass
    assert weight_bytes_on_meta(bad) is None and build_on_meta(bad) is None  # the real build reports it
    assert weight_bytes_on_meta(lambda: nn.Linear(3, 2)) == 32.0  # (6 + 2) float32
    assert weight_bytes_on_meta(lambda: "not a module") is None
    m = build_on_meta(lambda: nn.Linear(3, 2))
    assert isinstance(m, nn.Linear) and m.weight.device.type == "meta"
