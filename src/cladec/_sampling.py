"""Class-balanced choice of image indices (for galleries and user studies)."""

from __future__ import annotations

import random
from collections.abc import Sequence


def balanced_indices(labels: Sequence[int], n: int, rng: random.Random | None = None) -> list[int]:
    """Up to ``n`` indices spread evenly over the classes: round-robin over the classes in label order.

    Args:
        labels: The class label of each image.
        n: How many indices to choose.
        rng: ``None`` takes each class's images in data order; a ``random.Random`` shuffles each class first.

    Returns:
        The chosen indices, in round-robin order.
    """
    per: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        per.setdefault(int(y), []).append(i)
    queues = [per[k][:] for k in sorted(per)]
    if rng is not None:
        for q in queues:
            rng.shuffle(q)
    out: list[int] = []
    r = 0
    while len(out) < n and any(r < len(q) for q in queues):
        for q in queues:
            if r < len(q) and len(out) < n:
                out.append(q[r])
        r += 1
    return out
