"""The resumable store of a comparison's units of work (one file per unit, written atomically)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .._io import write_json

__all__ = ["UnitStore"]


class UnitStore:
    """Finished units of a comparison, one atomic JSON file each under ``<dir>/units/``.

    Args:
        directory: The comparison's output directory.

    Examples:
        >>> import tempfile
        >>> s = UnitStore(tempfile.mkdtemp())
        >>> s.put(("gradcam", "roar", 50, 0), {"accuracy": 0.6})
        >>> s.get(("gradcam", "roar", 50, 0))
        {'accuracy': 0.6}
        >>> s.get(("gradcam", "roar", 70, 0)) is None
        True
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.dir = Path(directory) / "units"

    @staticmethod
    def key_name(key: Sequence[Any]) -> str:
        """File name of a unit key.

        Args:
            key: ``(method, score, k, seed)`` or any sequence of simple values.

        Returns:
            The parts joined by ``__`` with unsafe characters replaced, plus ``.json``.

        Examples:
            >>> UnitStore.key_name(("gradcam", "roar", 50, 0))
            'gradcam__roar__50__0.json'
        """
        parts = [re.sub(r"[^A-Za-z0-9.+-]", "_", str(p)) for p in key]
        return "__".join(parts) + ".json"

    def path(self, key: Sequence[Any]) -> Path:
        """Where a unit is stored.

        Args:
            key: The unit key.

        Returns:
            ``<directory>/units/<key_name(key)>``.

        Examples:
            >>> UnitStore("cmp").path(("random", "deletion", 0, 0)).name
            'random__deletion__0__0.json'
        """
        return self.dir / self.key_name(key)

    def get(self, key: Sequence[Any]) -> Any | None:
        """The stored result of a finished unit.

        Args:
            key: The unit key.

        Returns:
            The result, or None if the unit is not finished (or its file is unreadable).

        Examples:
            >>> UnitStore("cmp").get(("never", "run", 0, 0)) is None
            True
        """
        p = self.path(key)
        if not p.is_file():
            return None
        try:
            return json.loads(p.read_text())["result"]
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def put(self, key: Sequence[Any], result: Any) -> None:
        """Store a unit's result atomically (written to a temporary file, then renamed).

        Args:
            key: The unit key.
            result: A JSON-serialisable result.

        Returns:
            None.

        Examples:
            >>> store = UnitStore("cmp")
            >>> store.put(("a", "deletion", 0, 0), {"auc": 0.2})
            >>> store.get(("a", "deletion", 0, 0)), store.path(("a", "deletion", 0, 0)).is_file()
            ({'auc': 0.2}, True)
        """

        write_json(self.path(key), {"key": list(key), "result": result})

    def run(self, key: Sequence[Any], fn: Callable[[], Any]) -> Any:
        """Return the stored result for ``key``, or compute it with ``fn()`` and store it.

        Args:
            key: The unit key.
            fn: Computes the result when the unit is not finished.

        Returns:
            The (stored or new) result.

        Examples:
            >>> store = UnitStore("cmp")
            >>> store.run(("gradcam", "roar", 50, 0), lambda: {"accuracy": 0.6})  # computed and stored
            {'accuracy': 0.6}
            >>> store.run(("gradcam", "roar", 50, 0), lambda: {"accuracy": 0.0})  # the stored result
            {'accuracy': 0.6}
        """
        got = self.get(key)
        if got is not None:
            return got
        res = fn()
        self.put(key, res)
        return res
