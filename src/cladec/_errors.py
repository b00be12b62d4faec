"""Errors raised by cladec for bad input. The command line prints them as one message."""


class CladecError(Exception):
    """Base class of every error cladec raises for input it cannot use.

    The message always says what was wrong and what would be valid.
    """


class ConfigError(CladecError, ValueError):
    """An argument or setting is invalid (unknown layer, α out of range, ...)."""


class DataError(CladecError, ValueError):
    """A data set is missing, empty or has the wrong shape."""


class MissingDataError(DataError):
    """A data set's files are not where it was looked for (as opposed to files that are there but unusable)."""


class TrainingError(CladecError, RuntimeError):
    """Training diverged (NaN/inf loss) or cannot proceed."""


class SaveFormatError(CladecError, ValueError):
    """A file or directory is not a cladec save, or does not fit the model."""


def out_of_memory_types() -> tuple[type[BaseException], ...]:
    """The exception types of running out of device memory (``torch.OutOfMemoryError`` from torch 2.5 on)."""
    import torch

    return (getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError),)


def caller_level() -> int:
    """``stacklevel`` for a warning that points at the first frame outside the cladec package (the user's code)."""
    import os
    import sys
    import types

    pkg = os.path.dirname(os.path.abspath(__file__))
    frame: types.FrameType | None = sys._getframe(2)  # 1 is the function that warns
    level = 2
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(pkg + os.sep):
        frame, level = frame.f_back, level + 1
    return level
