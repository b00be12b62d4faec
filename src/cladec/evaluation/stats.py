"""Statistics over seeds and images: mean and spread, paired comparisons with bootstrap intervals, Wilcoxon tests
and Holm's correction."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from typing import Any

from .._errors import ConfigError

__all__ = ["paired_comparison"]


def mean_std(values: Iterable[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation of the finite values (``None`` and NaN are skipped).

    Returns ``(None, None)`` without values, and ``(mean, None)`` for one value: one seed has no spread to
    report (it is not "± 0").
    """
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else None)


def per_image_mean(units: Sequence[dict], n: int) -> list[float] | None:
    """Per-image AUCs averaged over the seeds' units, or None when a unit has none (written by an older cladec)."""
    import numpy as np

    rows = [u.get("auc_per_image") for u in units]
    if not rows or any(not isinstance(r, list) or len(r) != n for r in rows):
        return None
    return np.asarray(rows, dtype=float).mean(0).tolist()


def image_spread(per_image: list[float] | None) -> dict[str, Any]:
    """The per-image part of a deletion / insertion entry: the AUCs, their std and interquartile range."""
    import numpy as np

    if per_image is None:
        return {"auc_per_image": None, "auc_image_std": None, "auc_image_q25": None, "auc_image_q75": None}
    a = np.asarray(per_image, dtype=float)
    q25, q75 = np.quantile(a, [0.25, 0.75])
    return {
        "auc_per_image": per_image,
        "auc_image_std": float(a.std(ddof=1)) if a.size > 1 else 0.0,
        "auc_image_q25": float(q25),
        "auc_image_q75": float(q75),
    }


def paired_comparison(
    reference: Sequence[float],
    other: Sequence[float],
    *,
    lower_is_better: bool,
    names: tuple[str, str] = ("reference", "other"),
    confidence: float = 0.95,
    n_resamples: int = 9999,
    seed: int = 0,
) -> dict[str, Any]:
    """Paired comparison of two methods' scores on the same images.

    The per-image difference ``reference − other`` is summarised by its mean, a bootstrap confidence interval
    of that mean (BCa, :func:`scipy.stats.bootstrap`, seeded; a constant difference gets the zero-width interval)
    and the p-value of a two-sided Wilcoxon signed-rank test (:func:`scipy.stats.wilcoxon`, zero differences
    dropped; 1.0 when all differences are zero).

    Args:
        reference: One score per image for the reference method (e.g. ClaDec's per-image deletion AUCs).
        other: The other method's scores on the same images, in the same order.
        lower_is_better: True when a lower score is better (deletion AUC), False when higher is (insertion AUC).
        names: Names of the two methods, used in ``better``.
        confidence: Confidence level of the interval, in (0, 1).
        n_resamples: Bootstrap resamples.
        seed: Bootstrap seed.

    Returns:
        ``{"mean_diff", "ci_low", "ci_high", "p_value", "n", "better", "median_diff"}``: ``better`` is the name
        of the method the mean difference favours (``"tie"`` when it is 0); ``n`` is the number of images. The
        Wilcoxon test concerns the location of the differences (closer to the median than to the mean), so with
        skewed differences it can disagree with the interval of the mean: both are reported.

    Raises:
        DataError: The two are not equally long 1-D sequences of finite numbers (at least one each).
        ConfigError: ``confidence`` outside (0, 1) or ``n_resamples`` not a positive integer.

    Examples:
        >>> r = paired_comparison([0.2, 0.3, 0.25, 0.4], [0.3, 0.35, 0.3, 0.5], lower_is_better=True,
        ...                       names=("cladec", "gradcam"))
        >>> r["better"], round(r["mean_diff"], 4), r["n"]
        ('cladec', -0.075, 4)
    """
    import inspect
    import warnings

    import numpy as np
    from scipy import stats

    from .._errors import DataError

    a = np.asarray(reference, dtype=float)
    b = np.asarray(other, dtype=float)
    if a.ndim != 1 or b.ndim != 1 or a.shape != b.shape or a.size == 0:
        raise DataError(
            f"a paired comparison needs two equally long 1-D sequences with one score per image, got "
            f"shapes {a.shape} and {b.shape}"
        )
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise DataError("a paired comparison needs finite scores; got NaN or infinite values")
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must be in (0, 1), e.g. 0.95, got {confidence!r}")
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int) or n_resamples < 1:
        raise ConfigError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    d = a - b
    mean = float(d.mean())
    with warnings.catch_warnings():
        # degenerate resamples (BCa on few images) and small-sample notes are handled below, not printed
        warnings.simplefilter("ignore")
        if np.ptp(d) == 0:
            lo = hi = mean
        else:
            # scipy >= 1.15 names the seed argument rng, older versions random_state
            rng_kw = "rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state"
            lo = hi = float("nan")
            for method in ("BCa", "percentile"):  # BCa fails (NaN) on some degenerate samples
                ci = stats.bootstrap(
                    (d,),
                    np.mean,
                    n_resamples=n_resamples,
                    confidence_level=confidence,
                    method=method,
                    batch=max(1, 5_000_000 // d.size),
                    **{rng_kw: np.random.default_rng(seed)},
                ).confidence_interval
                lo, hi = float(ci.low), float(ci.high)
                if math.isfinite(lo) and math.isfinite(hi):
                    break
        p = 1.0 if not np.any(d != 0) else float(stats.wilcoxon(d).pvalue)
    better = "tie" if mean == 0 else names[0] if (mean < 0) == lower_is_better else names[1]
    return {
        "mean_diff": mean,
        "ci_low": lo,
        "ci_high": hi,
        "p_value": p,
        "n": int(d.size),
        "better": better,
        "median_diff": float(np.median(d)),
    }


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values (step-down, family-wise error rate), in the given order."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    out = [1.0] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - rank) * pvalues[i]))
        out[i] = running
    return out
