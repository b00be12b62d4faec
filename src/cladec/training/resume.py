"""Epoch checkpoints of a fit, so that an interrupted fit resumes from its last complete epoch.

With ``EngineConfig(checkpoint=PATH)`` the engine writes, after every epoch, the state that the next epoch starts
from -- each task's trained modules, optimiser state (Adam's moments, the learning rate), history and step count,
the generator of the batch order and the global random state -- to ``PATH`` (atomically; only rank 0 writes when
data-parallel). A run with the same ``PATH`` and the same settings starts from there: on in-memory data its result
equals that of the uninterrupted fit (up to the order of float sums); streamed data draws the resumed epochs' order
afresh. The file is written with ``torch.save`` and read with ``torch.load(weights_only=True)`` (tensors, numbers,
strings, lists and dicts only: never arbitrary objects).

A checkpoint of other settings (epochs, batch size, number of images, the tasks) is refused with the difference,
not silently continued. The number of ranks may differ: the batch order is global (see
:mod:`cladec.training.distributed`), so a fit interrupted on 2 ranks resumes in one process and the reverse.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._errors import ConfigError, SaveFormatError
from .._io import atomic_path, not_rank_0
from . import distributed

__all__ = ["save_checkpoint", "load_checkpoint", "FORMAT"]

FORMAT = "cladec-fit-state"


def save_checkpoint(
    path: str | os.PathLike,
    key: Mapping[str, Any],
    epoch: int,
    generator: torch.Generator,
    tasks: list[tuple[list[nn.Module], torch.optim.Optimizer, list[dict], int]],
) -> None:
    """Write the state after ``epoch`` complete epochs (rank 0 only; atomically).

    Args:
        path: The checkpoint file.
        key: The fit's settings that a resumed fit must repeat (JSON-like).
        epoch: Epochs done.
        generator: The batch order's generator (its state: the next epoch's order).
        tasks: Per task ``(trained modules, optimiser, history so far, steps so far)``.
    """
    if not_rank_0():
        return
    state = {
        "format": FORMAT,
        "version": 1,
        "key": dict(key),
        "epoch": int(epoch),
        "generator": generator.get_state(),
        "rng": torch.get_rng_state(),
        "tasks": [
            {
                "modules": [{k: v.detach().cpu() for k, v in m.state_dict().items()} for m in mods],
                "optimizer": opt.state_dict(),
                "history": [dict(h) for h in hist],
                "steps": int(steps),
            }
            for mods, opt, hist, steps in tasks
        ],
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | os.PathLike, key: Mapping[str, Any]) -> dict[str, Any] | None:
    """The state saved at ``path`` (read on rank 0 and shared with every rank), or None when there is none.

    Raises:
        ConfigError: It was written by a fit of other settings (the differences are named).
        SaveFormatError: The file is not such a checkpoint (damaged, or another kind of file).
    """
    path = Path(path)
    state = None
    error = None
    if distributed.is_main() and path.is_file():
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unreadable file: one message
            error = f"{path} is not a readable cladec fit checkpoint ({type(e).__name__}); delete it to start afresh"
        if state is not None and (not isinstance(state, dict) or state.get("format") != FORMAT):
            error, state = f"{path} is not a cladec fit checkpoint; delete it to start afresh", None
    error, state = distributed.from_main((error, state))
    if error:
        raise SaveFormatError(error)
    if state is None:
        return None
    diffs = [f"{k} {state['key'].get(k)!r} there, {v!r} now" for k, v in key.items() if state["key"].get(k) != v]
    if diffs:
        raise ConfigError(
            f"the checkpoint {path} is of a fit with other settings ({'; '.join(diffs)}): repeat those settings to "
            "resume it, or delete it to start afresh"
        )
    return state


def restore(state: Mapping[str, Any], tasks: list[tuple[list[nn.Module], torch.optim.Optimizer]]) -> None:
    """Load a checkpoint's modules and optimiser states into ``tasks`` (``(trained modules, optimiser)`` each)."""
    for saved, (mods, opt) in zip(state["tasks"], tasks, strict=True):
        for m, sd in zip(mods, saved["modules"], strict=True):
            m.load_state_dict(sd)
        opt.load_state_dict(saved["optimizer"])
