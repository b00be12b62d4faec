"""The training engine shared by the explainers and the classifiers.

:class:`Engine` runs the epochs of one or more :class:`Task` objects (a model, its optimiser and its loss) over
batches: on a GPU with the data on the device, optionally through CUDA graphs and ``torch.compile``; on a CPU
through a plain loop. :mod:`cladec.training.options` checks the options a user passes (compile modes, mixed
precision) and builds optimisers; :mod:`cladec.training.schedule` holds the training recipes (``"paper"``,
``"fast"``) and the per-step learning-rate schedule.
"""

from __future__ import annotations

from .engine import Engine, EngineConfig, EngineResult, Task
from .options import check_amp, check_compile, compile_mode, make_optimizer, step_decay_epochs
from .schedule import RECIPES, LrSchedule, Recipe, resolve_recipe

__all__ = [
    "Engine",
    "EngineConfig",
    "EngineResult",
    "LrSchedule",
    "RECIPES",
    "Recipe",
    "Task",
    "check_amp",
    "check_compile",
    "compile_mode",
    "make_optimizer",
    "resolve_recipe",
    "step_decay_epochs",
]
