"""The data set a run or checkpoint recorded: its name, its root, loading it again."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .._errors import DataError, MissingDataError
from .load import load_dataset
from .names import ALIASES

__all__ = ["recorded_dataset_name", "data_root_for", "load_recorded_dataset"]


def recorded_dataset_name(name: Any) -> Any:
    """A data set name as it is recorded in checkpoints and runs: ``imagefolder:PATH`` with PATH absolute.

    A relative ``imagefolder:`` path would name another folder (or none) when the run is used from another
    working directory; every other name is returned as given.

    Args:
        name: A data set name for :func:`cladec.data.load_dataset`.

    Returns:
        The name, with an ``imagefolder:`` path made absolute.

    Examples:
        >>> recorded_dataset_name("mnist")
        'mnist'
        >>> recorded_dataset_name("imagefolder:pets") == f"imagefolder:{Path('pets').resolve()}"
        True
    """
    if isinstance(name, str) and name.strip().lower().startswith("imagefolder:"):
        path = name.strip()[len("imagefolder:") :]
        if path:
            return f"imagefolder:{Path(path).expanduser().resolve()}"
    return name


def data_root_for(given: Any, recorded: Any, *, env_first: bool = False) -> Any:
    """The data root to load a recorded data set from.

    ``given`` (an explicit ``--data-root`` / ``data_root=``) wins; else the recorded root while that folder
    exists (where a run's data was when it was fitted: every command that reads a run finds the same data);
    else None, which :func:`cladec.data.load_dataset` reads as ``$CLADEC_DATA`` or the user cache — so a
    moved data folder is found through ``$CLADEC_DATA``, as the error for missing data advises. With
    ``env_first`` a set ``$CLADEC_DATA`` goes before the recorded root (for a new fit, where a checkpoint's
    recorded root is only a hint).

    Args:
        given: The root the caller gave, or None.
        recorded: The root recorded in a run or checkpoint, or None.
        env_first: Prefer ``$CLADEC_DATA`` (when set) to the recorded root.

    Returns:
        The root to pass to :func:`cladec.data.load_dataset` (None for its default).

    Examples:
        >>> data_root_for("/data", "/old")
        '/data'
    """
    if given is not None:
        return given
    if env_first and os.environ.get("CLADEC_DATA"):
        return None
    if isinstance(recorded, str) and recorded and Path(recorded).is_dir():
        return recorded
    return None


def load_recorded_dataset(name: str, given_root: Any, recorded_root: Any, **kwargs: Any):
    """Load a data set for a run: from ``given_root`` if given; else from the root recorded in the run while that
    folder exists and holds the data set; else from ``$CLADEC_DATA`` or the user cache. Files that are in the
    recorded folder but damaged are an error (not silently replaced by another copy).

    Args:
        name: The data set's name (:func:`cladec.data.load_dataset`).
        given_root: An explicit ``--data-root`` / ``data_root=``, or None.
        recorded_root: The root recorded in the run, or None.
        **kwargs: ``split``, ``size``, ``limit`` for :func:`cladec.data.load_dataset`.

    Returns:
        A :class:`cladec.data.ImageDataset`.

    Raises:
        DataError: The data set is in none of these places (the message names them).

    Examples:
        >>> test = load_recorded_dataset("fashion-mnist-mini", None, "/data", split="test", limit=10)
        >>> test.name, len(test)
        ('fashion-mnist-mini', 10)
    """

    root = data_root_for(given_root, recorded_root)
    if root is None or given_root is not None:
        return load_dataset(name, root=root, **kwargs)
    try:
        return load_dataset(name, root=root, **kwargs)
    except MissingDataError as first:  # the recorded folder no longer holds it (or never held this one): look further
        try:
            return load_dataset(name, root=None, **kwargs)
        except DataError as e:
            raise DataError(
                f"{e}\n(the folder recorded in the run, {root}, did not have it either: {str(first).splitlines()[0]})"
            ) from None


def same_dataset(a: Any, b: Any) -> bool:
    """Whether two data set names mean the same data set (aliases such as 'fmnist' normalised)."""

    if not isinstance(a, str) or not isinstance(b, str):
        return False
    # an image folder recorded relative (earlier versions) and absolute (now) is the same folder
    na, nb = recorded_dataset_name(a.strip()), recorded_dataset_name(b.strip())
    return ALIASES.get(na.lower(), na) == ALIASES.get(nb.lower(), nb)
