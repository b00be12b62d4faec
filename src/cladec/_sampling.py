"""Class-balanced choice of image indices (for galleries, user studies and the demo's pictures)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any, Literal

Order = Literal["round-robin", "index", "class", "random"]
_ORDERS = ("round-robin", "index", "class", "random")


def balanced_indices(
    labels: Sequence[int] | Any, n: int, rng: random.Random | None = None, *, order: Order = "round-robin"
) -> list[int]:
    """Up to ``n`` indices spread evenly over the classes: round-robin over the classes in label order.

    Args:
        labels: The class label of each image: a sequence of integers, or a 1-D tensor or array (anything with
            ``tolist()``).
        n: How many indices to choose.
        rng: ``None`` takes each class's images in data order; a ``random.Random`` shuffles each class first.
        order: How the chosen indices are returned: ``"round-robin"`` (as chosen: one of each class in turn),
            ``"index"`` (ascending), ``"class"`` (by label, then index) or ``"random"`` (shuffled with ``rng``,
            after the choice; needs ``rng``).

    Returns:
        The chosen indices.

    Examples:
        >>> balanced_indices([0, 0, 1, 2, 1, 0, 2, 2], 5)
        [0, 2, 3, 1, 4]
        >>> balanced_indices([0, 0, 1, 2, 1, 0, 2, 2], 5, order="class")
        [0, 1, 2, 4, 3]
    """
    if order not in _ORDERS:
        raise ValueError(f"order must be one of {', '.join(_ORDERS)}, got {order!r}")
    if order == "random" and rng is None:
        raise ValueError('order="random" needs rng')
    if hasattr(labels, "tolist"):  # a tensor or an array
        labels = labels.tolist()
    ys = [int(y) for y in labels]
    per: dict[int, list[int]] = {}
    for i, y in enumerate(ys):
        per.setdefault(y, []).append(i)
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
    if order == "index":
        out.sort()
    elif order == "class":
        out.sort(key=lambda i: (ys[i], i))
    elif order == "random":
        assert rng is not None  # checked above
        rng.shuffle(out)
    return out
