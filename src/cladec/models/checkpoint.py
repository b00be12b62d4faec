"""Train, evaluate, save and load the image classifiers that cladec explains.

* :func:`train_classifier` -- SGD with momentum and the ClaDec authors' step decay, on in-memory tensors
  (fast path) or any data set / data loader.
* :func:`accuracy`, :func:`predict` -- batched inference.
* :func:`save_classifier` / :func:`load_classifier` -- a checkpoint directory::

      model.safetensors    the state dict (safetensors: never unpickled)
      classifier.json      {"format": "cladec-classifier", "version": 1, "arch", "arch_kwargs", "dataset",
                            "input_norm", "metrics", "history", "cladec_version"}

* :func:`load_user_model` -- any ``"package.module:function"`` factory plus optional weights.

Images are always in ``[0, 1]``; a classifier trained on normalised inputs gets ``input_norm=(mean, std)``
and every function here applies it before the model.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._errors import ConfigError, SaveFormatError
from .._io import check_inside, file_sha256, load_tensors, read_json, save_tensors, write_json
from .._limits import check_fits, weight_bytes_on_meta
from .._schema import CLASSIFIER, validate
from .._version import __version__
from ..data.dataset import ImageDataset
from ..data.lazy import LazyImageDataset
from ..data.recorded import recorded_dataset_name
from ..normalize import check_input_norm
from ..training import distributed
from ._registry import create_model, list_models
from .factory import check_state_dict_fits, load_user_model
from .sources import build_library_model, library_source, load_model

__all__ = [
    "save_classifier",
    "load_classifier",
    "load_user_model",
    "dataset_entry",
    "metrics_entry",
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
]

CHECKPOINT_FORMAT = "cladec-classifier"

CHECKPOINT_VERSION = 1

WEIGHTS_FILE = "model.safetensors"

INFO_FILE = "classifier.json"


def _dataset_info(dataset: Any) -> dict | None:
    if dataset is None:
        return None
    if isinstance(dataset, (ImageDataset, LazyImageDataset)):
        d = dataset.describe()
        # "size" is the resize applied when loading (as `cladec train-classifier --size` records it)
        size = getattr(dataset, "resized_to", None)
        return {
            "name": d["name"],
            "image_shape": d["image_shape"],
            "classes": d["classes"],
            "n_images": d["size"],
            "size": list(size) if size is not None else None,
        }
    if isinstance(dataset, Mapping):
        return dict(dataset)
    raise ConfigError(f"dataset must be an ImageDataset, a dict or None, got {type(dataset).__name__}")


def save_classifier(
    directory: str | Path,
    model: nn.Module,
    *,
    arch: str | None = None,
    arch_kwargs: Mapping[str, Any] | None = None,
    dataset: Any = None,
    input_norm: Any = None,
    metrics: Mapping[str, Any] | None = None,
    history: Mapping[str, Any] | None = None,
) -> Path:
    """Save a registered-architecture classifier as a checkpoint directory (atomic file writes).

    Args:
        directory: the checkpoint directory (created if needed); ``model.safetensors`` and
            ``classifier.json`` are written into it, each atomically, weights first; ``classifier.json``
            records the weights' SHA-256, so a pair left mismatched by an interrupted re-save is refused on
            loading instead of read as one checkpoint.
        model: the classifier.
        arch: registered model name (see :func:`cladec.models.list_models`); default ``model.arch``
            (set by :func:`cladec.models.create_model`).
        arch_kwargs: the arguments that rebuild it (``in_channels``, ``num_classes``, ``width``, ...);
            default ``model.arch_kwargs``.
        dataset: an ImageDataset or a dict ``{name, image_shape, classes, size}`` describing the training data.
        input_norm: ``(mean, std)`` the classifier expects, or ``None``.
        metrics: e.g. ``{"train_acc": 0.93, "test_acc": 0.91}``.
        history: the dict returned by :func:`train_classifier`.

    Returns:
        The checkpoint directory as a ``Path``. Under ``torch.distributed`` only rank 0 writes; every rank returns
        once the files are complete.

    Examples:
        >>> from cladec.models import create_model
        >>> net = create_model("vgg-paper", in_channels=1, num_classes=10, width=0.25)
        >>> save_classifier("clf", net, dataset=train, metrics={"test_acc": 0.9})
        PosixPath('clf')
        >>> sorted(p.name for p in Path("clf").iterdir())
        ['classifier.json', 'model.safetensors']
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    arch = arch if arch is not None else getattr(model, "arch", None)
    arch_kwargs = arch_kwargs if arch_kwargs is not None else getattr(model, "arch_kwargs", None)
    if not isinstance(arch, str) or not (library_source(arch) or arch.lower() in list_models()):
        raise ConfigError(
            "arch must name a registered model so the checkpoint can be loaded again "
            f"({', '.join(list_models())}) or a torchvision:NAME / timm:NAME source, "
            f"got {arch!r}; models built with cladec.models.create_model() carry it"
        )
    if not isinstance(arch_kwargs, Mapping):
        raise ConfigError(
            "arch_kwargs must be a dict of the arguments that rebuild the model, e.g. "
            "{'in_channels': 1, 'num_classes': 10}"
        )
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"{directory} exists and is not a directory; give a directory for the checkpoint")
    info = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "arch": arch if library_source(arch) else arch.lower(),
        "arch_kwargs": dict(arch_kwargs),
        "dataset": _dataset_info(dataset),
        "input_norm": list(check_input_norm(input_norm)) if input_norm is not None else None,
        "metrics": dict(metrics) if metrics is not None else {},
        "history": dict(history) if history is not None else {},
        "cladec_version": __version__,
    }

    def write() -> None:
        directory.mkdir(parents=True, exist_ok=True)
        save_tensors(directory / WEIGHTS_FILE, model.state_dict())
        info["weights_sha256"] = file_sha256(directory / WEIGHTS_FILE)
        write_json(directory / INFO_FILE, info)

    distributed.write_on_main(write)  # data-parallel: rank 0 writes, the others wait for it
    return directory


def load_classifier(directory: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Load a checkpoint written by :func:`save_classifier` (or ``cladec train-classifier``).

    Args:
        directory: the checkpoint directory (or its ``classifier.json``).
        device: where to put the model.

    Returns:
        ``(model, info)``: the model in eval mode and the parsed ``classifier.json`` (``info["input_norm"]``
        is ``None`` or ``[mean, std]``; ``info["dataset"]["classes"]`` names the classes).

    Raises:
        SaveFormatError: not such a checkpoint, a newer format, or weights that do not fit.

    Examples:
        >>> from cladec.models import load_classifier, predict
        >>> model, info = load_classifier(clf_dir)  # clf_dir: a saved vgg-paper checkpoint
        >>> info["arch"], info["arch_kwargs"]["width"], model.training
        ('vgg-paper', 0.25, False)
        >>> torch.equal(predict(model, x), predict(classifier, x))
        True
    """
    path = Path(directory)
    if path.is_file() and path.name == INFO_FILE:
        path = path.parent
    hint = "make one with `cladec train-classifier` or save_classifier()"
    if not path.exists():
        raise SaveFormatError(f"{path} does not exist; expected a cladec classifier checkpoint directory ({hint})")
    if not path.is_dir() or not (path / INFO_FILE).is_file():
        raise SaveFormatError(f"{path} is not a cladec classifier checkpoint: missing {INFO_FILE}; {hint}")
    info_file = check_inside(path / INFO_FILE, path, "the checkpoint's description")
    info = read_json(info_file, what="cladec classifier checkpoint")
    if info.get("format") != CHECKPOINT_FORMAT:
        raise SaveFormatError(
            f"{path / INFO_FILE} is not a cladec classifier checkpoint: format is {info.get('format')!r}, "
            f"expected {CHECKPOINT_FORMAT!r}; {hint}"
        )
    version = info.get("version")
    if not isinstance(version, int) or version < 1:
        raise SaveFormatError(f"{path / INFO_FILE} has an invalid version {version!r}; expected 1")
    if version > CHECKPOINT_VERSION:
        raise SaveFormatError(
            f"{path} was written by a newer cladec (checkpoint version {version}; this cladec "
            f"{__version__} reads up to {CHECKPOINT_VERSION}); upgrade cladec"
        )
    arch, kwargs = info.get("arch"), info.get("arch_kwargs")
    source = library_source(arch)
    if not isinstance(arch, str) or not (source or arch.lower() in list_models()):
        raise SaveFormatError(
            f"{path / INFO_FILE} names the architecture {arch!r}, which this cladec does not know "
            f"(known: {', '.join(list_models())}, or torchvision:NAME / timm:NAME)"
        )
    if not isinstance(kwargs, dict):
        raise SaveFormatError(f"{path / INFO_FILE}: 'arch_kwargs' must be a JSON object, got {kwargs!r}")
    validate(
        info, CLASSIFIER, info_file, "save the classifier again with `cladec train-classifier` or save_classifier()"
    )
    # an absurd width or class count would ask the allocator for terabytes: estimate on the meta device first
    name: str = arch
    nbytes = weight_bytes_on_meta(
        lambda: build_library_model(name, **kwargs) if source else create_model(name, **kwargs)
    )
    if nbytes is not None:
        try:
            check_fits(
                nbytes,
                f"{info_file}: the {arch!r} model of 'arch_kwargs' {kwargs} (its weights)",
                hint="the file is damaged or was edited by hand; save the classifier again",
            )
        except ConfigError as e:
            raise SaveFormatError(str(e)) from None
    try:
        # a library model records its source as arch: rebuilt with the library's factory, its roles and metadata
        model = load_model(arch, **kwargs) if source else create_model(arch, **kwargs)
    except (ConfigError, TypeError) as e:
        raise SaveFormatError(f"{path / INFO_FILE}: cannot rebuild {arch!r} from arch_kwargs {kwargs}: {e}") from None
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise SaveFormatError(f"{path} is an incomplete cladec classifier checkpoint: {WEIGHTS_FILE} is missing")
    check_inside(weights, path, "the checkpoint's weights")
    state = load_tensors(weights)  # a truncated or damaged file is named as such before the digest is compared
    recorded = info.get("weights_sha256")  # absent in checkpoints of earlier cladec versions: not checked
    if recorded is not None and file_sha256(weights) != recorded:
        raise SaveFormatError(
            f"{weights} is not the weights file {path / INFO_FILE} was saved with (SHA-256 differs): the two "
            "files of this checkpoint do not belong together (an interrupted save, or the weights replaced by "
            "hand); save the classifier again with save_classifier() / `cladec train-classifier`"
        )
    check_state_dict_fits(model, state, str(weights))
    model.load_state_dict(state, strict=True)
    model.to(device).eval()
    return model, info


def dataset_entry(
    train: ImageDataset | LazyImageDataset,
    test: ImageDataset | LazyImageDataset,
    *,
    size: Any = None,
    root: Any = None,
    limit: Any = None,
) -> dict[str, Any]:
    """The ``dataset`` entry of a checkpoint's ``classifier.json`` for a classifier trained on ``train``.

    Args:
        train: The training images, as loaded (name, image shape, classes).
        test: The test images it was measured on.
        size: The resize they were loaded with (``None``: their own size).
        root: The data root they were loaded from (recorded as an absolute path; ``None``: the default).
        limit: The training-image limit they were loaded with.

    Returns:
        ``{"name", "size", "image_shape", "classes", "num_classes", "root", "limit", "n_train", "n_test"}``; an
        ``imagefolder:`` name is recorded with its path absolute (valid from any folder).

    Examples:
        >>> entry = dataset_entry(train, test, limit=2000)
        >>> entry["name"], entry["image_shape"], entry["n_train"], entry["n_test"]
        ('fashion-mnist-mini', [1, 28, 28], 2000, 200)
    """
    return {
        "name": recorded_dataset_name(train.name),
        "size": size,
        "image_shape": list(train.image_shape),
        "classes": list(train.classes),
        "num_classes": train.num_classes,
        "root": str(Path(root).expanduser().resolve()) if root else None,
        "limit": limit,
        "n_train": len(train),
        "n_test": len(test),
    }


def metrics_entry(history: Mapping[str, Any], test: Any, seconds: float) -> dict[str, Any]:
    """The ``metrics`` entry of a checkpoint's ``classifier.json``: the accuracies after the last epoch.

    Args:
        history: What :func:`train_classifier` returned (with ``test_data``).
        test: The test images (their number is recorded).
        seconds: How long the training took.

    Returns:
        ``{"test_acc", "train_acc", "test_images", "train_seconds"}``.

    Examples:
        >>> metrics_entry({"test_acc": [0.5, 0.75], "train_acc": [0.5, 0.8]}, test, 12.345)
        {'test_acc': 0.75, 'train_acc': 0.8, 'test_images': 200, 'train_seconds': 12.35}
    """
    return {
        "test_acc": float(history["test_acc"][-1]),
        "train_acc": float(history["train_acc"][-1]),
        "test_images": len(test),
        "train_seconds": round(seconds, 2),
    }
