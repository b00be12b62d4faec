"""Mean and spread over repeated runs (seeds), shared by the sweep and the saliency comparison."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable


def mean_std(values: Iterable[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation of the finite values (``None`` and NaN are skipped).

    Returns ``(None, None)`` without values, and ``(mean, None)`` for one value: one seed has no spread to
    report (it is not "± 0").
    """
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else None)
