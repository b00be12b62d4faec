"""Static HTML report of ClaDec explanations (``cladec report``).

:func:`build_report` turns a run, evaluation, sweep or demo directory into a self-contained static site
(``index.html`` with ``img/``, ``assets/`` and ``static/`` beside it; no network, opens from ``file://``):

* a header with the configuration of the run(s): model, layer, neurons, α, data set, epochs, seed, version;
* a gallery of test images, each as original | RefAE | ClaDec plus difference maps ``|x − x̂|``, with the
  classifier's prediction on each, filterable by class and by correct/incorrect prediction and sortable by
  reconstruction error; for several α (sweeps) a slider moves through α for the same images, and several
  layers (sweeps, demos) are shown side by side;
* the tables and figures of the evaluation, the sweep and, when present, the saliency comparison.
"""

from __future__ import annotations

from .answers import format_summary, read_answers, summarize_answers
from .build import build_report
from .study import ANSWER_COLUMNS, CONCEPTS, ORDERS, build_study, participant_order

__all__ = [
    "build_report",
    "build_study",
    "participant_order",
    "read_answers",
    "summarize_answers",
    "format_summary",
    "ANSWER_COLUMNS",
    "CONCEPTS",
    "ORDERS",
]
