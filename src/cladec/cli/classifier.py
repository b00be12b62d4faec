"""`cladec train-classifier` and `cladec layers`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .._errors import ConfigError
from ._args import importable_cwd, parse_device, parse_image_shape, parse_input_norm


def _classifier_spec(args: argparse.Namespace) -> dict[str, Any]:
    """The run-style classifier entry for --model or --factory/--weights."""
    if args.model is not None and args.factory is not None:
        raise ConfigError("give the classifier either as --model DIR or as --factory PKG.MOD:FN, not both")
    if args.model is not None:
        if args.weights is not None:
            raise ConfigError("--weights goes with --factory; a --model checkpoint holds its own weights")
        if args.factory_kwargs is not None:
            raise ConfigError(
                "--factory-kwargs goes with --factory; a --model checkpoint records the arguments that rebuild it"
            )
        return {"type": "checkpoint", "path": str(Path(args.model).resolve())}
    if args.factory is not None:
        importable_cwd()
        if args.weights is not None and not Path(args.weights).is_file():
            raise ConfigError(f"--weights: file not found: {args.weights}")
        return {
            "type": "factory",
            "factory": args.factory,
            "weights": str(Path(args.weights).resolve()) if args.weights else None,
            "kwargs": dict(args.factory_kwargs or {}),
            "input_norm": parse_input_norm(getattr(args, "input_norm", None)),
        }
    raise ConfigError(
        "give the classifier: --model DIR (a checkpoint from `cladec train-classifier`) "
        "or --factory PKG.MOD:FN [--weights FILE]"
    )


def load_model_arg(args: argparse.Namespace, device=None):
    from ..models.spec import load_classifier_spec

    spec = _classifier_spec(args)
    model, info = load_classifier_spec(spec, Path.cwd(), device=device or "cpu")
    return spec, model, info


def _default_layer_marks(model) -> dict[str, list[str]]:
    marks: dict[str, list[str]] = {}
    dl = getattr(model, "default_layers", None)
    if isinstance(dl, dict):
        for k, v in dl.items():
            marks.setdefault(str(v), []).append(str(k))
    return marks


def cmd_train_classifier(args: argparse.Namespace) -> int:
    """Handler of ``cladec train-classifier``: train and save a classifier checkpoint.

    Args:
        args: The parsed arguments.

    Returns:
        0 on success (user errors are raised as :class:`cladec.CladecError`).

    Examples:
        >>> from cladec.cli import main
        >>> main(["train-classifier", "--dataset", "fashion-mnist-mini", "--width", "0.25", "--epochs", "1",
        ...       "--limit", "1000", "--test-limit", "200", "--out", "clf", "-q"])
        test accuracy ... on 200 fashion-mnist-mini test images (chance 0.10); trained in ... s
        wrote classifier checkpoint clf
        0
    """
    import time

    import torch

    from .._io import check_replaceable
    from .._limits import build_on_meta, check_model_fits
    from ..data.load import load_dataset
    from ..data.recorded import recorded_dataset_name
    from ..data.sizes import check_dataset_fits
    from ..models import create_model
    from ..models.checkpoint import save_classifier
    from ..models.training import train_classifier

    dev = parse_device(args.device)
    norm = parse_input_norm(args.input_norm)
    # before loading data or training: refuse a file or a folder of other things (a checkpoint is replaced)
    # files are written into --out (never replaced as a folder), so it may be the current directory
    check_replaceable(args.out, "classifier.json", "cladec classifier checkpoint", in_place=True)
    check_dataset_fits(
        args.dataset, [("train", args.limit), ("test", args.test_limit)], args.size, what=f"--size {args.size}"
    )
    train = load_dataset(
        args.dataset, root=args.data_root, split="train", size=args.size, limit=args.limit, download=args.download
    )
    test = load_dataset(
        args.dataset, root=args.data_root, split="test", size=args.size, limit=args.test_limit, download=args.download
    )
    kw = {} if args.width is None else {"width": args.width}
    # before the model is built (a --width of 1e6 asks for petabytes of weights) or a batch is run
    meta = build_on_meta(
        lambda: create_model(args.arch, in_channels=train.image_shape[0], num_classes=train.num_classes, **kw)
    )
    if meta is not None:
        batch = min(args.batch_size, len(train))
        check_model_fits(
            meta,
            train.image_shape,
            batch,
            device=dev,
            what=f"training {args.arch}"
            + (f" at --width {args.width:g}" if args.width else "")
            + f" on batches of {batch} {'×'.join(map(str, train.image_shape))} images (--batch-size)",
            hint="use a smaller --width, --batch-size or --size",
        )
        del meta
    torch.manual_seed(args.seed)
    model = create_model(args.arch, in_channels=train.image_shape[0], num_classes=train.num_classes, **kw).to(dev)
    if not args.quiet:
        print(
            f"training {model.arch} on {train.name} ({len(train)} training / {len(test)} test images, "
            f"{'×'.join(map(str, train.image_shape))}) for {args.epochs} epoch(s) on {dev}",
            file=sys.stderr,
        )
    t0 = time.perf_counter()
    hist = train_classifier(
        model,
        train,
        args.epochs,
        test_data=test,
        batch_size=args.batch_size,
        lr=args.lr,
        input_norm=norm,
        seed=args.seed,
        device=dev,
        verbose=not args.quiet,
    )
    seconds = time.perf_counter() - t0
    test_acc = float(hist["test_acc"][-1])
    dataset = {
        "name": recorded_dataset_name(train.name),  # imagefolder: absolute, valid from any folder
        "size": args.size,
        "image_shape": list(train.image_shape),
        "classes": list(train.classes),
        "num_classes": train.num_classes,
        "root": str(Path(args.data_root).resolve()) if args.data_root else None,
        "limit": args.limit,
        "n_train": len(train),
        "n_test": len(test),
    }
    metrics = {
        "test_acc": test_acc,
        "train_acc": float(hist["train_acc"][-1]),
        "test_images": len(test),
        "train_seconds": round(seconds, 2),
    }
    save_classifier(args.out, model.cpu(), dataset=dataset, input_norm=norm, metrics=metrics, history=hist)
    print(
        f"test accuracy {test_acc:.4f} on {len(test)} {train.name} test images "
        f"(chance {1 / train.num_classes:.2f}); trained in {seconds:.0f} s"
    )
    print(f"wrote classifier checkpoint {args.out}")
    return 0


def cmd_layers(args: argparse.Namespace) -> int:
    """Handler of ``cladec layers``: print the classifier's layers, types and output shapes.

    Args:
        args: The parsed arguments.

    Returns:
        0 on success.

    Examples:
        >>> from cladec.cli import main
        >>> main(["layers", "--model", str(clf_dir)])  # clf_dir: a checkpoint of vgg-paper at width 0.25
        /...clf: input 1×28×28, 36 layers
        layer        type               output shape  default
        -----------  -----------------  ------------  -------
        conv0        ConvBlock          8×14×14
        ...
        conv4        ConvBlock          128×1×1       last
        ...
        fc           Linear             10
        <BLANKLINE>
        default layers: last = conv4, middle = conv2  (use them as `cladec fit --layer NAME`)
        0
    """
    import torch

    from ..capture import list_layers

    spec, model, info = load_model_arg(args)
    if args.image_shape is not None:
        shape = parse_image_shape(args.image_shape)
    else:
        ds = info.get("dataset") if isinstance(info, dict) else None
        shape_l = ds.get("image_shape") if isinstance(ds, dict) else None
        if not shape_l:
            raise ConfigError(
                "give the input shape with --image-shape C,H,W (e.g. 1,28,28): the model does not record it"
            )
        shape = tuple(int(s) for s in shape_l)  # type: ignore[assignment]  # the recorded [C, H, W]
    try:
        layers = list_layers(model, torch.zeros(1, *shape))
    except RuntimeError as e:
        raise ConfigError(f"the model does not accept input of shape {shape} (C, H, W): {e}") from None
    marks = _default_layer_marks(model)
    if args.json:
        print(
            json.dumps(
                [
                    {"name": L.name, "type": L.type, "shape": list(L.shape), "default": marks.get(L.name, [])}
                    for L in layers
                ],
                indent=2,
            )
        )
        return 0
    rows = [
        (L.name, L.type, "×".join(map(str, L.shape)) if L.shape else "-", ", ".join(marks.get(L.name, [])))
        for L in layers
    ]
    head = ("layer", "type", "output shape", "default")
    widths = [max(len(head[i]), *(len(r[i]) for r in rows)) if rows else len(head[i]) for i in range(4)]
    src = args.model if spec["type"] == "checkpoint" else args.factory
    print(f"{src}: input {'×'.join(map(str, shape))}, {len(rows)} layers")
    print("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip())
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    if marks:
        print(
            "\ndefault layers: "
            + ", ".join(f"{k} = {n}" for n, ks in marks.items() for k in ks)
            + "  (use them as `cladec fit --layer NAME`)"
        )
    return 0
