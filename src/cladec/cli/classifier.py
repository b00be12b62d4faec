"""``cladec train-classifier`` and ``cladec layers``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .._errors import ConfigError
from ._args import (
    OPTION_NAMES,
    add_common,
    add_model_source,
    classifier_source,
    learning_rate,
    parse_image_shape,
    parse_input_norm,
    pos_float,
    pos_int,
)
from ._data_args import add_lazy_options

__all__ = ["register", "cmd_train_classifier", "cmd_layers"]


def register(subparsers: Any) -> None:
    """Add ``train-classifier`` and ``layers`` to ``ArgumentParser.add_subparsers()`` (``func``: their handlers).

    Examples:
        >>> p = argparse.ArgumentParser(prog="cladec"); register(p.add_subparsers(dest="command"))
        >>> p.parse_args(["layers", "--model", "clf"]).func.__name__
        'cmd_layers'
    """
    t = subparsers.add_parser(
        "train-classifier",
        help="train a classifier (vgg-paper, resnet10, resnet18) and save a checkpoint directory",
        description="Train a registered architecture with SGD + momentum and step decay (the ClaDec authors' "
        "recipe) and save it as a checkpoint directory (model.safetensors + classifier.json) that records the "
        "data set, its image size and classes, and the test accuracy.",
    )
    t.add_argument(
        "--dataset", required=True, help="fashion-mnist, mnist, cifar10, fashion-mnist-mini, imagefolder:PATH"
    )
    t.add_argument("--arch", default="vgg-paper", help="architecture (default: vgg-paper; see also resnet10, resnet18)")
    t.add_argument("--epochs", type=pos_int, default=5, help="epochs (default: 5)")
    t.add_argument("--out", required=True, metavar="DIR", help="checkpoint directory to write")
    t.add_argument("--size", type=pos_int, default=None, help="resize images to SIZE×SIZE (the paper uses 32)")
    t.add_argument("--limit", type=pos_int, default=None, help="use the first N training images")
    t.add_argument("--test-limit", type=pos_int, default=None, help="use the first N test images")
    t.add_argument("--batch-size", type=pos_int, default=128, help="batch size (default: 128)")
    t.add_argument("--lr", type=learning_rate, default=0.1, help="initial SGD learning rate (default: 0.1)")
    t.add_argument("--width", type=pos_float, default=None, help="channel width multiplier (default: 1.0)")
    t.add_argument(
        "--input-norm", metavar="MEAN,STD", help="normalise images before the model, e.g. '0.286,0.353' (default: none)"
    )
    t.add_argument("--download", action="store_true", help="download a missing MNIST / Fashion-MNIST / CIFAR-10")
    add_lazy_options(t)
    add_common(t)
    t.set_defaults(func=cmd_train_classifier)

    lay = subparsers.add_parser(
        "layers",
        help="list a classifier's layers with their types and output shapes",
        description="Run one zero image through the classifier and print every layer it reaches with the "
        "module type and output shape. The architecture's default layers ('last', 'middle') are marked.",
    )
    add_model_source(lay)
    lay.add_argument(
        "--image-shape",
        metavar="C,H,W",
        help="input shape, e.g. 1,28,28 (default: the checkpoint's; required with --factory)",
    )
    lay.add_argument("--json", action="store_true", help="print JSON instead of a table")
    lay.set_defaults(func=cmd_layers)


def cmd_train_classifier(args: argparse.Namespace) -> int:
    """Handler of ``cladec train-classifier`` (:func:`cladec.models.training.train_checkpoint`).

    Examples:
        >>> from cladec.cli import main
        >>> main(["train-classifier", "--dataset", "fashion-mnist-mini", "--width", "0.25", "--epochs", "1",
        ...       "--limit", "1000", "--test-limit", "200", "--out", "clf", "-q"])
        test accuracy ... on 200 fashion-mnist-mini test images (chance 0.10); trained in ... s
        wrote classifier checkpoint clf
        0
    """
    from ..models.training import train_checkpoint

    settings = "dataset arch epochs size limit test_limit batch_size lr width data_root download seed device".split()
    res = train_checkpoint(
        args.out,
        **{k: getattr(args, k) for k in [*settings, "lazy", "workers"]},
        input_norm=parse_input_norm(args.input_norm),
        verbose=not args.quiet,
        names=OPTION_NAMES,
    )
    print(f"{res['summary']}\nwrote classifier checkpoint {args.out}")
    return 0


def cmd_layers(args: argparse.Namespace) -> int:
    """Handler of ``cladec layers``: print the classifier's layers, types and output shapes.

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

    from ..capture import default_layer_roles, list_layers
    from ..models.spec import load_classifier_spec, recorded_image_shape

    model, info = load_classifier_spec(classifier_source(args), Path.cwd())
    shape = parse_image_shape(args.image_shape) if args.image_shape is not None else recorded_image_shape(info)
    if shape is None:
        raise ConfigError("give the input shape with --image-shape C,H,W (e.g. 1,28,28): the model does not record it")
    try:
        layers = list_layers(model, torch.zeros(1, *shape))
    except RuntimeError as e:
        raise ConfigError(f"the model does not accept input of shape {shape} (C, H, W): {e}") from None
    marks = default_layer_roles(model)
    if args.json:
        rows = [dict(name=L.name, type=L.type, shape=list(L.shape), default=marks.get(L.name, [])) for L in layers]
        print(json.dumps(rows, indent=2))
        return 0
    table: list[tuple[str, ...]] = [("layer", "type", "output shape", "default")]
    table += [(L.name, L.type, "×".join(map(str, L.shape)) or "-", ", ".join(marks.get(L.name, []))) for L in layers]
    widths = [max(len(r[i]) for r in table) for i in range(4)]
    table.insert(1, tuple("-" * w for w in widths))
    print(f"{args.model or args.factory}: input {'×'.join(map(str, shape))}, {len(layers)} layers")
    for line in table:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
    if marks:
        roles = ", ".join(f"{k} = {n}" for n, ks in marks.items() for k in ks)
        print(f"\ndefault layers: {roles}  (use them as `cladec fit --layer NAME`)")
    return 0
