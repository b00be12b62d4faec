"""Evaluate a run directory: how well ClaDec and its RefAE reconstruct, and what the classifier sees.

:func:`evaluate_run` computes, on one split of the run's data set (the test split by default):

* reconstruction errors of ClaDec and RefAE: MSE, PSNR, SSIM (:mod:`cladec.evaluation.metrics`);
* the explained classifier's accuracy on the originals and on each set of reconstructions, and its
  *agreement* (same predicted class) on reconstructions with its own predictions on the originals;
* the **evaluation classifier** (the paper's check that reconstructions keep class information): for each
  image set (originals, ClaDec, RefAE reconstructions) a fresh classifier of the same architecture is
  trained on that set made from the *training* split and tested on the same set made from the evaluation
  split (and, for reference, on the original images of the evaluation split);
* a per-class breakdown of all of the above.

Output directory (``out``, default ``<run>/eval``; written atomically, replaced as a whole)::

    eval/
      metrics.json        {"format": "cladec-eval", "sets": {"original"|"cladec"|"refae": {...}},
                           "eval_classifier": {...} | null, "per_class": {...}, "summary": {...}, ...}
      metrics.csv         one row per image set (original, cladec, refae), one column per metric
      per_class.csv       one row per (image set, class)
      per_class_accuracy.png, errors.png
"""

from __future__ import annotations

from ..defaults import DEFAULT_ALPHAS
from . import metrics
from .evaluate import EVAL_FORMAT, evaluate_run
from .outputs import METRIC_COLUMNS, format_eval_table
from .stats import mean_std, paired_comparison
from .sweep import cell_name, run_sweep
from .sweep_summary import SWEEP_FORMAT, format_summary_table, summarize_sweep

__all__ = [
    "evaluate_run",
    "EVAL_FORMAT",
    "METRIC_COLUMNS",
    "format_eval_table",
    "run_sweep",
    "summarize_sweep",
    "format_summary_table",
    "cell_name",
    "DEFAULT_ALPHAS",
    "SWEEP_FORMAT",
    "mean_std",
    "paired_comparison",
    "metrics",
]
