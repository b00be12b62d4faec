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
