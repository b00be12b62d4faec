"""Hostile files (issue 15): malformed, damaged or redirected files cladec reads back — run.json, an explainer's
cladec.json and weights, a checkpoint's classifier.json and weights, a pickle offered as weights, symlinks out
of a run folder. Each is refused through the command line with one line ``cladec: error: ...`` naming the file
(and the field), exit status 2 and no traceback."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from cladec.cli import main
from helpers.core import DATA_ROOT

pytestmark = [
    pytest.mark.skipif(not (DATA_ROOT / "FashionMNIST" / "raw").is_dir(), reason=f"no data at {DATA_ROOT}"),
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.filterwarnings("ignore::cladec.CollapseWarning"),  # 1 epoch on 64 images: only files matter here
]

DATA = str(DATA_ROOT)


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    """A folder with ``clf/`` (an untrained vgg-paper checkpoint at width 0.25, Fashion-MNIST 28×28) and ``run/``
    (ClaDec and RefAE of its conv2, 1 epoch on 64 images) beside it, as ``cladec fit`` writes them."""
    from cladec.classifier import save_classifier
    from cladec.data import FASHION_MNIST_CLASSES
    from cladec.models import create_model
    from cladec.runs import fit_run

    base = tmp_path_factory.mktemp("hostile-files")
    torch.manual_seed(0)
    net = create_model("vgg-paper", in_channels=1, num_classes=10, width=0.25)
    save_classifier(base / "clf", net, dataset={"name": "fashion-mnist", "image_shape": [1, 28, 28],
                                                "classes": list(FASHION_MNIST_CLASSES)})
    fit_run(base / "run", classifier_dir=base / "clf", dataset="fashion-mnist", layer="conv2", epochs=1, limit=64,
            test_limit=16, data_root=DATA, device="cpu", seed=0, verbose=False)
    return base


@pytest.fixture
def copy(made, tmp_path) -> Path:
    """A fresh copy of ``clf/`` and ``run/`` side by side (the run finds ../clf) in the test's folder."""
    for name in ("clf", "run"):
        shutil.copytree(made / name, tmp_path / name)
    return tmp_path


def _one_line_error(capsys, argv, *, contains=()) -> str:
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err and err.count("\n") == 1 and err.startswith("cladec: error: "), err
    for c in contains:
        assert c in err, err
    return err


def _explain(run: Path, out: Path) -> list:
    return ["explain", "--run", run, "--n", "4", "--out", out / "x.png", "--data-root", DATA]


def _edit(path: Path, change) -> None:
    obj = json.loads(path.read_text())
    change(obj)
    path.write_text(json.dumps(obj))


def _set(key_path: str, value):
    """An edit that sets (or, with value _DEL, deletes) the dotted ``key_path``."""
    def change(obj):
        *parents, last = key_path.split(".")
        for p in parents:
            obj = obj[p]
        if value is _DEL:
            obj.pop(last, None)
        else:
            obj[last] = value
    return change


_DEL = object()


def test_explain_works_on_the_untouched_copy(copy, capsys):
    """The fixture's run, copied, explains (so every refusal below is the corruption's)."""
    assert main([str(a) for a in _explain(copy / "run", copy)]) == 0, capsys.readouterr().err


# --- 1. run.json -------------------------------------------------------------------------------------------------

_FACTORY = "helpers.user_model:make_net"


@pytest.mark.parametrize("key_path, value, field", [
    ("classifier", _DEL, "classifier"),
    ("classifier", [1], "classifier"),
    ("classifier", "../clf", "classifier"),
    ("classifier.path", _DEL, "classifier.path"),
    ("classifier.path", 5, "classifier.path"),
    ("classifier.path", "", "classifier.path"),
    ("classifier.type", "zip", "classifier.type"),
    ("classifier.weights_sha256", 7, "classifier.weights_sha256"),
    ("classifier", {"type": "factory"}, "classifier.factory"),
    ("classifier", {"type": "factory", "factory": _FACTORY, "weights": None, "kwargs": [1]}, "classifier.kwargs"),
    ("classifier", {"type": "factory", "factory": _FACTORY, "weights": 3, "kwargs": {}}, "classifier.weights"),
    ("dataset", "mnist", "dataset"),
    ("dataset.name", 5, "dataset.name"),
    ("dataset.size", "big", "dataset.size"),
    ("dataset.root", ["x"], "dataset.root"),
    ("dataset.classes", "abc", "dataset.classes"),
    ("layer", _DEL, "layer"),
    ("layer", 3, "layer"),
    ("image_shape", [1, -28, 28], "image_shape"),
    ("alpha", "x", "alpha"),
    ("neurons", "all", "neurons"),
    ("metrics", [1], "metrics"),
    ("collapsed", 1, "collapsed"),
    ("format_version", 2, "format_version"),
])
def test_malformed_run_json_is_one_line_naming_the_field(copy, capsys, key_path, value, field):
    _edit(copy / "run" / "run.json", _set(key_path, value))
    _one_line_error(capsys, _explain(copy / "run", copy), contains=("run.json", field))


@pytest.mark.parametrize("text", ["", "{", "[1, 2]", "null", "\xff\xfe", "[" * 100_000, '{"a":' * 100_000])
def test_run_json_that_is_no_json_object_is_one_line(copy, capsys, text):
    (copy / "run" / "run.json").write_bytes(text.encode("latin-1"))
    _one_line_error(capsys, _explain(copy / "run", copy), contains=("run.json",))


# --- 2. cladec.json ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("key_path, value, field", [
    ("image_shape", [1, -28, 28], "image_shape"),
    ("image_shape", "abc", "image_shape"),
    ("image_shape", [1, 28], "image_shape"),
    ("image_shape", [1, 100_000, 100_000], "image_shape"),
    ("layer_shape", _DEL, "layer_shape"),
    ("layer", ["conv2"], "layer"),
    ("base_width", -4, "base_width"),
    ("base_width", 1e9, "base_width"),
    ("base_width", 10**9, "base_width"),
    ("base_width", "64", "base_width"),
    ("alpha", "x", "alpha"),
    ("alpha", 7, "alpha"),
    ("history", 5, "history"),
    ("history", [1], "history"),
    ("fit_config", [1, 2, 3], "fit_config"),
    ("neurons", [-1], "neurons"),
    ("neurons", "x", "neurons"),
    ("decoder_norm", "layer", "decoder_norm"),
    ("decoder", 3, "decoder"),
    ("input_norm", "x", "input_norm"),
    ("fitted", "yes", "fitted"),
    ("num_prefix_tokens", -1, "num_prefix_tokens"),
    ("weights_sha256", 5, "weights_sha256"),
    ("kind", "pca", "kind"),
])
def test_malformed_cladec_json_is_one_line_naming_the_field(copy, capsys, key_path, value, field):
    _edit(copy / "run" / "cladec" / "cladec.json", _set(key_path, value))
    _one_line_error(capsys, _explain(copy / "run", copy), contains=("cladec.json", field))


# --- 3. classifier.json ------------------------------------------------------------------------------------------

def _layers(clf: Path) -> list:
    return ["layers", "--model", clf]


@pytest.mark.parametrize("key_path, value, field", [
    ("arch_kwargs.width", 1e12, "arch_kwargs"),
    ("arch_kwargs.num_classes", 10**12, "arch_kwargs"),
    ("arch_kwargs", [1], "arch_kwargs"),
    ("dataset.image_shape", "1,28,28", "dataset.image_shape"),
    ("dataset.image_shape", [28, 28], "dataset.image_shape"),
    ("dataset.image_shape", [1, 0, 28], "dataset.image_shape"),
    ("dataset.classes", 10, "dataset.classes"),
    ("dataset", "fashion-mnist", "dataset"),
    ("input_norm", [[0.5], [-1]], "input_norm"),
    ("weights_sha256", 5, "weights_sha256"),
    ("arch", 5, "arch"),
])
def test_malformed_classifier_json_is_one_line_naming_the_field(copy, capsys, key_path, value, field):
    _edit(copy / "clf" / "classifier.json", _set(key_path, value))
    _one_line_error(capsys, _layers(copy / "clf"), contains=("classifier.json", field))


@pytest.mark.parametrize("text", ["[" * 100_000, '{"a":' * 100_000, "[" * 1000 + "]" * 1000])
def test_deeply_nested_classifier_json_is_one_line(copy, capsys, text):
    (copy / "clf" / "classifier.json").write_text(text)
    _one_line_error(capsys, _layers(copy / "clf"), contains=("classifier.json",))


def test_the_untouched_checkpoint_lists_its_layers(copy, capsys):
    assert main(["layers", "--model", str(copy / "clf")]) == 0, capsys.readouterr().err
