"""End-to-end tests of the ``cladec`` command line on small real data subsets.

A quarter-width VGG classifier is trained once per session (``cladec train-classifier``) and shared.
Everything runs with one torch thread: on the 2-core test machine that is as fast for these tiny
models and does not fight other processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cladec import ConfigError
from cladec.cli._args import parse_image_shape, parse_input_norm, parse_neurons
from cladec.cli.main import build_parser, main
from helpers.core import DATA_ROOT, png_size

DATA = DATA_ROOT

pytestmark = pytest.mark.skipif(
    not (DATA / "FashionMNIST" / "raw").is_dir(), reason=f"real data sets not found at {DATA}"
)


@pytest.fixture(scope="session")
def cli_threads():
    """One torch thread for the whole CLI test session (restored afterwards)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def clf_dir(tmp_path_factory, cli_threads) -> Path:
    """A vgg-paper (width 0.25) checkpoint trained by the CLI on 2,000 Fashion-MNIST images (28×28)."""
    out = tmp_path_factory.mktemp("cli") / "clf"
    rc = main(
        [
            "train-classifier",
            "--dataset",
            "fashion-mnist",
            "--data-root",
            str(DATA),
            "--arch",
            "vgg-paper",
            "--width",
            "0.25",
            "--epochs",
            "2",
            "--limit",
            "2000",
            "--test-limit",
            "500",
            "--out",
            str(out),
            "-q",
        ]
    )
    assert rc == 0
    return out


@pytest.fixture(scope="session")
def run_dir(clf_dir, tmp_path_factory) -> Path:
    """A run (ClaDec + RefAE) of the shared classifier's middle layer on a subset of its units."""
    out = tmp_path_factory.mktemp("cli") / "run"
    rc = main(
        [
            "fit",
            "--model",
            str(clf_dir),
            "--dataset",
            "fashion-mnist",
            "--data-root",
            str(DATA),
            "--layer",
            "conv2",
            "--neurons",
            "0,1,5-9",
            "--alpha",
            "0.001",
            "--epochs",
            "1",
            "--limit",
            "1000",
            "--test-limit",
            "200",
            "--out",
            str(out),
            "-q",
        ]
    )
    assert rc == 0
    return out


def _error_of(capsys, argv) -> str:
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err
    assert err.startswith("cladec: error: ") or "error:" in err
    return err


# -- parsing helpers ----------------------------------------------------------------------------


def test_parse_helpers():
    assert parse_neurons("0,1,5-9") == [0, 1, 5, 6, 7, 8, 9]
    assert parse_neurons(" 3 ") == [3]
    for bad in ("", "a", "5-2", "1,1", "-1"):
        with pytest.raises(ConfigError):
            parse_neurons(bad)
    assert parse_input_norm("0.5,0.5") == ([0.5], [0.5])
    assert parse_input_norm("1,2,3,4,5,6") == ([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    assert parse_input_norm("1,2;3,4") == ([1.0, 2.0], [3.0, 4.0])
    assert parse_input_norm(None) is None
    for bad in ("0.5", "a,b", "0.5,0", "1,2;3"):
        with pytest.raises(ConfigError):
            parse_input_norm(bad)
    for bad in ("nan,0.5", "0.5,nan", "inf,1", "0.5,inf", "0.1,-inf;1,1"):  # would train to a NaN loss
        with pytest.raises(ConfigError, match="finite|std > 0"):
            parse_input_norm(bad)
    assert parse_image_shape("3,32,32") == (3, 32, 32)
    with pytest.raises(ConfigError):
        parse_image_shape("32,32")


def test_help_on_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for cmd in ("demo", "train-classifier", "layers", "fit", "explain"):
        assert cmd in out
    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    for cmd in sub.choices:
        assert main([cmd, "--help"]) == 0, cmd
        assert "usage: cladec " + cmd in capsys.readouterr().out
    assert main([]) == 2  # no command: usage on stderr
    assert main(["fit"]) == 2  # argparse usage error (missing required options)
    assert main(["--version"]) == 0


# -- train-classifier / layers ------------------------------------------------------------------


def test_train_classifier_records_dataset_and_accuracy(clf_dir):
    info = json.loads((clf_dir / "classifier.json").read_text())
    assert info["format"] == "cladec-classifier"
    assert info["arch"] == "vgg-paper" and info["arch_kwargs"]["width"] == 0.25
    ds = info["dataset"]
    assert ds["name"] == "fashion-mnist" and ds["size"] is None and ds["image_shape"] == [1, 28, 28]
    assert ds["classes"][0] == "T-shirt/top" and len(ds["classes"]) == 10
    assert ds["n_train"] == 2000
    acc = info["metrics"]["test_acc"]
    assert 0.2 < acc <= 1.0  # clearly above chance (0.1) after 2 epochs
    assert (clf_dir / "model.safetensors").is_file()


def test_layers_table_marks_default_layers(clf_dir, capsys):
    assert main(["layers", "--model", str(clf_dir)]) == 0
    out = capsys.readouterr().out
    lines = {ln.split()[0]: ln for ln in out.splitlines() if ln.strip() and not ln.startswith(("-", "layer"))}
    assert "128×1×1" in lines["conv4"] and "last" in lines["conv4"]
    assert "32×4×4" in lines["conv2"] and "middle" in lines["conv2"]
    assert "Linear" in lines["fc"]
    assert main(["layers", "--model", str(clf_dir), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by = {r["name"]: r for r in rows}
    assert by["conv4"]["shape"] == [128, 1, 1] and by["conv4"]["default"] == ["last"]
    assert by["conv0.conv"]["type"] == "Conv2d"


# -- fit / explain ------------------------------------------------------------------------------


def test_fit_neuron_subset_and_explain(run_dir, tmp_path, capsys):
    cfg = json.loads((run_dir / "run.json").read_text())
    assert cfg["format"] == "cladec-run" and cfg["layer"] == "conv2"
    assert cfg["neurons"] == [0, 1, 5, 6, 7, 8, 9] and cfg["alpha"] == 0.001
    assert cfg["dataset"]["name"] == "fashion-mnist" and cfg["dataset"]["limit"] == 1000
    for key in ("mse_cladec", "mse_refae", "accuracy_original", "accuracy_cladec", "accuracy_refae"):
        assert 0.0 <= cfg["metrics"][key] <= 1.0
    assert (run_dir / "cladec" / "cladec.json").is_file() and (run_dir / "refae" / "weights.safetensors").is_file()

    png = tmp_path / "triplets.png"
    rc = main(["explain", "--run", str(run_dir), "--n", "12", "--columns", "4", "--out", str(png), "--seed", "1"])
    assert rc == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "12 fashion-mnist test images" in out and str(png) in out
    w, h = png_size(png)
    assert w >= 600 and 200 <= h <= w  # 4 triplets (12 panels) across, 3 rows


def test_fit_default_layer_alias_without_refae_compiled(clf_dir, tmp_path, capsys):
    out = tmp_path / "run-last"
    rc = main(
        [
            "fit",
            "--model",
            str(clf_dir),
            "--layer",
            "last",
            "--no-refae",
            "--epochs",
            "1",
            "--limit",
            "500",
            "--test-limit",
            "100",
            "--data-root",
            str(DATA),
            "--out",
            str(out),
            "-q",
            "--compile",
        ]
    )  # data set from checkpoint
    assert rc == 0, capsys.readouterr().err
    cfg = json.loads((out / "run.json").read_text())
    assert cfg["layer"] == "conv4" and cfg["neurons"] is None and cfg["dataset"]["name"] == "fashion-mnist"
    assert cfg["compile"] == "default" and cfg["fast"] is True
    assert not (out / "refae").exists() and "mse_refae" not in cfg["metrics"]
    png = tmp_path / "two.png"
    assert main(["explain", "--run", str(out), "--n", "4", "--out", str(png), "--data-root", str(DATA)]) == 0
    w, h = png_size(png)  # original | ClaDec only
    assert w > h > 50


def test_fit_holds_out_validation_images_and_stops_at_until_mse(clf_dir, tmp_path, capsys):
    """`--validation 0.2 --until-mse 0.2`: any fit that learns at all is below 0.2 after its first epoch (the
    mean image's MSE on Fashion-MNIST is about 0.1), so both fits stop there; run.json says so and loads."""
    from cladec.runs import load_run

    out = tmp_path / "run-stop"
    argv = ["fit", "--model", str(clf_dir), "--layer", "conv2", "--epochs", "5", "--limit", "600", "--test-limit"]
    argv += ["100", "--data-root", str(DATA), "--lr", "3e-3", "--batch-size", "32", "--out", str(out), "-q"]
    err = _error_of(capsys, [*argv, "--until-mse", "0.2"])
    assert "until_mse stops on the MSE of held-out images: also give validation=" in err
    assert "between 0 and 1" in _error_of(capsys, [*argv, "--validation", "2"])
    assert main([*argv, "--validation", "0.2", "--until-mse", "0.2"]) == 0
    printed = capsys.readouterr().out
    assert "cladec stopped after 1 epoch(s): val_mse" in printed and "refae stopped after 1 epoch(s)" in printed
    run = load_run(out)  # run.json's new fields pass the schema
    assert run.config["validation"] == 0.2 and run.config["until_mse"] == 0.2
    assert run.config["epochs_run"] == {"cladec": 1, "refae": 1} and run.config["dataset"]["n_train"] == 600
    assert run.cladec.fit_config["n_train"] == 480 and run.cladec.fit_config["n_val"] == 120
    assert [sorted(h) for h in run.refae.history] == [["epoch", "loss", "lr", "mse", "seconds", "val_mse"]]


def test_mnist_resized_to_32(tmp_path, cli_threads, capsys):
    clf = tmp_path / "clf32"
    assert (
        main(
            [
                "train-classifier",
                "--dataset",
                "mnist",
                "--data-root",
                str(DATA),
                "--size",
                "32",
                "--width",
                "0.125",
                "--epochs",
                "1",
                "--limit",
                "500",
                "--test-limit",
                "100",
                "--out",
                str(clf),
                "-q",
            ]
        )
        == 0
    )
    info = json.loads((clf / "classifier.json").read_text())
    assert info["dataset"]["size"] == 32 and info["dataset"]["image_shape"] == [1, 32, 32]
    capsys.readouterr()
    assert main(["layers", "--model", str(clf)]) == 0
    assert "input 1×32×32" in capsys.readouterr().out
    run = tmp_path / "run32"
    assert (
        main(
            [
                "fit",
                "--model",
                str(clf),
                "--dataset",
                "mnist",
                "--data-root",
                str(DATA),
                "--layer",
                "middle",
                "--epochs",
                "1",
                "--refae-epochs",
                "1",
                "--limit",
                "300",
                "--test-limit",
                "50",
                "--out",
                str(run),
                "-q",
            ]
        )
        == 0
    )
    cfg = json.loads((run / "run.json").read_text())
    assert cfg["dataset"]["size"] == 32 and cfg["image_shape"] == [1, 32, 32] and cfg["layer"] == "conv2"


def test_resnet10_on_cifar10_colour(tmp_path, cli_threads, capsys):
    clf = tmp_path / "resnet"
    assert (
        main(
            [
                "train-classifier",
                "--dataset",
                "cifar10",
                "--data-root",
                str(DATA),
                "--arch",
                "resnet10",
                "--width",
                "0.125",
                "--epochs",
                "1",
                "--limit",
                "400",
                "--test-limit",
                "100",
                "--out",
                str(clf),
                "-q",
            ]
        )
        == 0
    )
    info = json.loads((clf / "classifier.json").read_text())
    assert info["arch"] == "resnet10" and info["dataset"]["image_shape"] == [3, 32, 32]
    assert info["dataset"]["classes"][0] == "airplane"
    run = tmp_path / "run"
    assert (
        main(
            [
                "fit",
                "--model",
                str(clf),
                "--dataset",
                "cifar10",
                "--data-root",
                str(DATA),
                "--layer",
                "layer2",
                "--neurons",
                "0-3",
                "--epochs",
                "1",
                "--limit",
                "300",
                "--test-limit",
                "50",
                "--out",
                str(run),
                "-q",
            ]
        )
        == 0
    )
    png = tmp_path / "cifar.png"
    assert main(["explain", "--run", str(run), "--n", "6", "--out", str(png), "--data-root", str(DATA)]) == 0
    w, h = png_size(png)
    assert w > h > 50
    from PIL import Image

    with Image.open(png) as im:
        assert im.mode in ("RGB", "RGBA")


def test_user_model_from_factory(tmp_path, cli_threads, capsys):
    from safetensors.torch import save_file

    from cladec.data.load import load_dataset
    from cladec.models.checkpoint import load_user_model
    from cladec.models.training import train_classifier

    factory = "helpers.user_model:make_net"
    net = load_user_model(factory)
    train = load_dataset("mnist", root=DATA, split="train", limit=500)
    train_classifier(net, train, 1, input_norm=((0.5,), (0.5,)), seed=0, verbose=False)
    weights = tmp_path / "net.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(weights))

    assert main(["layers", "--factory", factory, "--weights", str(weights), "--image-shape", "1,28,28"]) == 0
    out = capsys.readouterr().out
    assert "input 1×28×28" in out and "BatchNorm2d" in out and "8×28×28" in out

    run = tmp_path / "run"
    rc = main(
        [
            "fit",
            "--factory",
            factory,
            "--weights",
            str(weights),
            "--input-norm",
            "0.5,0.5",
            "--dataset",
            "mnist",
            "--data-root",
            str(DATA),
            "--layer",
            "bn",
            "--neurons",
            "0-3",
            "--epochs",
            "1",
            "--limit",
            "300",
            "--test-limit",
            "50",
            "--out",
            str(run),
            "-q",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    cfg = json.loads((run / "run.json").read_text())
    assert cfg["classifier"]["type"] == "factory" and cfg["classifier"]["factory"] == factory
    assert cfg["input_norm"] == [[0.5], [0.5]] and cfg["neurons"] == [0, 1, 2, 3]
    assert json.loads((run / "cladec" / "cladec.json").read_text())["layout"] == "nchw"  # BatchNorm2d: declared
    # --layout is checked against what the layer is: a BatchNorm2d's output is not channels-last
    fit_args = ["fit", "--factory", factory, "--weights", str(weights), "--input-norm", "0.5,0.5", "--dataset", "mnist"]
    fit_args += ["--data-root", str(DATA), "--layer", "bn", "--limit", "100", "--out", str(tmp_path / "r2"), "-q"]
    err = _error_of(capsys, [*fit_args, "--layout", "nhwc"])
    assert "layout='nhwc' contradicts layer 'bn'" in err and "torch's BatchNorm2d" in err
    png = tmp_path / "user.png"
    assert main(["explain", "--run", str(run), "--n", "4", "--out", str(png)]) == 0
    png_size(png)
    assert cfg["classifier"]["weights_sha256"]  # the identity of the weights the run was fitted with
    # other weights written over the file: the run's decoders do not belong to that model
    save_file(
        {k: (v + 1 if v.is_floating_point() else v).contiguous() for k, v in net.state_dict().items()}, str(weights)
    )
    err = _error_of(capsys, ["explain", "--run", str(run), "--n", "4", "--out", str(png)])
    assert "not the one the run" in err and "SHA-256" in err

    # a factory needs the input shape; a factory without weights is fine for `layers`
    err = _error_of(capsys, ["layers", "--factory", factory])
    assert "--image-shape" in err
    err = _error_of(capsys, ["layers", "--factory", "helpers.user_model:nope", "--image-shape", "1,28,28"])
    assert "has no attribute 'nope'" in err
    err = _error_of(capsys, ["layers", "--model", "x", "--factory", factory])
    assert "not both" in err


# -- errors -------------------------------------------------------------------------------------


def test_errors_are_one_message_and_exit_2(clf_dir, run_dir, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    # unknown data set
    err = _error_of(capsys, ["train-classifier", "--dataset", "nope", "--out", str(tmp_path / "c")])
    assert "unknown data set 'nope'" in err and "fashion-mnist" in err
    # missing data: the paths tried and how to get it
    err = _error_of(
        capsys, ["train-classifier", "--dataset", "mnist", "--data-root", str(empty), "--out", str(tmp_path / "c")]
    )
    assert str(empty) in err and "download" in err
    # a bad layer lists valid names
    err = _error_of(capsys, ["fit", "--model", str(clf_dir), "--layer", "conv9", "--out", str(tmp_path / "r")])
    assert "unknown layer 'conv9'" in err and "conv4" in err
    # neurons: malformed, out of range
    err = _error_of(
        capsys, ["fit", "--model", str(clf_dir), "--layer", "conv4", "--neurons", "0,x", "--out", str(tmp_path / "r")]
    )
    assert "--neurons" in err
    # a model dir that is not a checkpoint
    err = _error_of(capsys, ["layers", "--model", str(empty)])
    assert "not a cladec classifier checkpoint" in err
    err = _error_of(capsys, ["fit", "--model", str(tmp_path / "missing"), "--layer", "conv4", "--out", str(empty)])
    assert "does not exist" in err
    # not a run directory
    err = _error_of(capsys, ["explain", "--run", str(empty), "--out", str(tmp_path / "t.png")])
    assert "not a cladec run directory" in err
    err = _error_of(capsys, ["explain", "--run", str(run_dir), "--out", str(tmp_path / "t.jpg")])
    assert ".png" in err
    # a run explained on a data set of another shape
    err = _error_of(
        capsys,
        [
            "explain",
            "--run",
            str(run_dir),
            "--dataset",
            "cifar10",
            "--data-root",
            str(DATA),
            "--n",
            "2",
            "--out",
            str(tmp_path / "t.png"),
        ],
    )
    assert "shape" in err
    # bad option values are usage errors (exit 2)
    assert main(["fit", "--model", str(clf_dir), "--layer", "conv4", "--alpha", "2", "--out", "r"]) == 2
    assert main(["train-classifier", "--dataset", "mnist", "--epochs", "0", "--out", "c"]) == 2
    capsys.readouterr()


def test_python_dash_m_subprocess(clf_dir, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    ok = subprocess.run(
        [sys.executable, "-m", "cladec", "layers", "--model", str(clf_dir)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert ok.returncode == 0, ok.stderr
    assert "conv4" in ok.stdout and "last" in ok.stdout
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "cladec",
            "fit",
            "--model",
            str(clf_dir),
            "--layer",
            "conv9",
            "--out",
            str(tmp_path / "r"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert bad.returncode == 2
    assert bad.stderr.startswith("cladec: error: unknown layer 'conv9'") and "Traceback" not in bad.stderr


# -- options checked before any work; options that would be ignored ----------------------------------


def test_train_classifier_refuses_a_foreign_out_before_loading_data(tmp_path, capsys, monkeypatch):
    # the data root is empty: had the data been loaded first, the error would be about missing data
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    argv = ["train-classifier", "--dataset", "mnist", "--data-root", str(tmp_path / "no-data"), "--epochs", "1"]
    err = _error_of(capsys, [*argv, "--out", str(mine)])
    assert "not a cladec classifier checkpoint" in err and "classifier.json" in err
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    afile = tmp_path / "afile"
    afile.write_text("x")
    err = _error_of(capsys, [*argv, "--out", str(afile)])
    assert "not a directory" in err and afile.read_text() == "x"
    # the checkpoint's files are written into --out, never replacing it: the current folder is a valid --out
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    err = _error_of(capsys, [*argv, "--out", "."])
    assert "current directory" not in err and "not found" in err  # past the --out check, at the (missing) data


def test_device_is_checked_for_every_kind(monkeypatch):
    from cladec.cli._args import parse_device

    assert parse_device("cpu") == torch.device("cpu") and parse_device(None).type in ("cpu", "cuda")
    for bad, msg in (("nope", "is not a device"), ("meta", "not supported"), ("cuda:x", "is not a device")):
        with pytest.raises(ConfigError, match=msg):
            parse_device(bad)
    # as on a machine without CUDA, and on one with a single GPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="CUDA is not available"):
        parse_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError, match="has 1 CUDA device"):
        parse_device("cuda:1")
    assert parse_device("cuda:0") == torch.device("cuda", 0)


def test_options_that_would_be_ignored_are_refused(clf_dir, tmp_path, capsys):
    err = _error_of(capsys, ["layers", "--model", str(clf_dir), "--factory-kwargs", '{"num_classes": 3}'])
    assert "--factory-kwargs goes with --factory" in err
    err = _error_of(
        capsys,
        [
            "fit",
            "--model",
            str(clf_dir),
            "--factory-kwargs",
            '{"num_classes": 3}',
            "--layer",
            "conv2",
            "--out",
            str(tmp_path / "r"),
        ],
    )
    assert "--factory-kwargs goes with --factory" in err
    err = _error_of(
        capsys,
        [
            "fit",
            "--model",
            str(clf_dir),
            "--layer",
            "conv2",
            "--no-refae",
            "--refae-epochs",
            "3",
            "--out",
            str(tmp_path / "r"),
        ],
    )
    assert "--refae-epochs" in err and "--no-refae" in err
    assert not (tmp_path / "r").exists()


def test_a_diverging_fit_is_one_message_with_one_prefix(clf_dir, tmp_path, capsys, monkeypatch):
    # --lr 1e30 diverges at once; the command line refuses it (above cladec._checks.LR_MAX), so lift the limit
    monkeypatch.setattr("cladec._checks.LR_MAX", 1e31)
    err = _error_of(
        capsys,
        [
            "fit",
            "--model",
            str(clf_dir),
            "--layer",
            "conv2",
            "--no-refae",
            "--lr",
            "1e30",
            "--epochs",
            "1",
            "--limit",
            "256",
            "--test-limit",
            "32",
            "--data-root",
            str(DATA),
            "--out",
            str(tmp_path / "r"),
            "-q",
        ],
    )
    assert err.startswith("cladec: error: ClaDec: the loss became") and "cladec: error: cladec:" not in err
    assert not (tmp_path / "r").exists()


# -- explain: the run's classes and data ------------------------------------------------------------------------


def test_explain_on_another_label_space_names_the_classifiers_classes(run_dir, tmp_path, capsys, monkeypatch):
    from cladec.explanation import Explanation

    seen = {}
    save_grid = Explanation.save_grid

    def spy(self, path, *a, **kw):
        seen.update(classes=self.classes, labels=self.labels)
        return save_grid(self, path, *a, **kw)

    monkeypatch.setattr(Explanation, "save_grid", spy)
    png = tmp_path / "mnist.png"
    # a Fashion-MNIST classifier's run explained on MNIST digits (same image shape, other classes)
    rc = main(
        [
            "explain",
            "--run",
            str(run_dir),
            "--dataset",
            "mnist",
            "--data-root",
            str(DATA),
            "--n",
            "4",
            "--out",
            str(png),
        ]
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert seen["classes"][0] == "T-shirt/top" and seen["labels"] is None  # predictions named as the classifier's
    assert "accuracy" not in captured.out and "agrees" in captured.out
    assert "not the classifier's" in captured.err
    png_size(png)
    # its own data set: true classes and accuracy as before
    assert main(["explain", "--run", str(run_dir), "--n", "4", "--out", str(png), "--data-root", str(DATA)]) == 0
    assert "accuracy originals" in capsys.readouterr().out and seen["labels"] is not None


def test_explain_finds_moved_data_through_cladec_data(run_dir, tmp_path, capsys, monkeypatch):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    cfg = json.loads((run / "run.json").read_text())
    cfg["dataset"]["root"] = str(tmp_path / "moved-away")  # the run was fitted on data that is no longer there
    (run / "run.json").write_text(json.dumps(cfg))
    monkeypatch.setenv("CLADEC_DATA", str(DATA))  # ... and the error for missing data advises setting this
    rc = main(["explain", "--run", str(run), "--n", "4", "--out", str(tmp_path / "t.png")])
    assert rc == 0, capsys.readouterr().err
    assert "4 fashion-mnist test images" in capsys.readouterr().out


def test_relative_imagefolder_is_recorded_absolute(tmp_path, cli_threads, capsys, monkeypatch):
    from PIL import Image

    from cladec.data.load import load_dataset

    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    elsewhere.mkdir()
    for split, n in (("train", 12), ("test", 3)):  # real Fashion-MNIST images as PNG files, 3 classes
        ds = load_dataset("fashion-mnist", root=DATA, split=split, limit=200)
        for c in (0, 1, 7):
            d = work / "imgs" / split / ds.classes[c].replace("/", "-")
            d.mkdir(parents=True)
            for k, i in enumerate((ds.labels == c).nonzero().flatten()[:n].tolist()):
                Image.fromarray((ds.images[i, 0] * 255).round().byte().numpy()).save(d / f"{k}.png")
    monkeypatch.chdir(work)
    assert (
        main(
            [
                "train-classifier",
                "--dataset",
                "imagefolder:imgs",
                "--width",
                "0.125",
                "--epochs",
                "1",
                "--out",
                "clf",
                "-q",
            ]
        )
        == 0
    )
    absolute = f"imagefolder:{(work / 'imgs').resolve()}"
    assert json.loads((work / "clf" / "classifier.json").read_text())["dataset"]["name"] == absolute
    assert (
        main(
            [
                "fit",
                "--model",
                "clf",
                "--dataset",
                "imagefolder:imgs",
                "--layer",
                "conv2",
                "--epochs",
                "1",
                "--no-refae",
                "--out",
                "run",
                "-q",
            ]
        )
        == 0
    )
    assert json.loads((work / "run" / "run.json").read_text())["dataset"]["name"] == absolute
    capsys.readouterr()
    # from another folder the run still finds its images (a relative path would name nothing there)
    monkeypatch.chdir(elsewhere)
    assert main(["explain", "--run", str(work / "run"), "--n", "3", "--out", "t.png"]) == 0, capsys.readouterr().err
    assert "3 imagefolder:" in capsys.readouterr().out and (elsewhere / "t.png").is_file()
