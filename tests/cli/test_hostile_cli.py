"""Hostile inputs through the command line (issue 15): each is refused with one line ``cladec: error: ...`` and
exit status 2 (130 for Ctrl-C, 141 for a closed output pipe), no traceback and nothing half-written on disk."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from cladec import ClaDec, ConfigError, DataError
from cladec.cli.main import main
from helpers.core import DATA_ROOT, QUICK, fmnist, png_size, tiny_vgg

pytestmark = [
    pytest.mark.skipif(not (DATA_ROOT / "FashionMNIST" / "raw").is_dir(), reason=f"no data at {DATA_ROOT}"),
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.filterwarnings("ignore::cladec.CollapseWarning"),
]

DATA = str(DATA_ROOT)
_SCRIPT = Path(sys.executable).parent / "cladec"
#: the console script (what `pip install` makes from pyproject's [project.scripts]), else `python -m cladec`
CLADEC = [str(_SCRIPT)] if _SCRIPT.is_file() else [sys.executable, "-m", "cladec"]


@pytest.fixture(scope="module")
def clf(tmp_path_factory) -> Path:
    """An untrained vgg-paper (width 0.25) checkpoint for Fashion-MNIST 28×28 (training does not matter here)."""
    from cladec.data.names import FASHION_MNIST_CLASSES
    from cladec.models import create_model
    from cladec.models.checkpoint import save_classifier

    torch.manual_seed(0)
    net = create_model("vgg-paper", in_channels=1, num_classes=10, width=0.25)
    out = tmp_path_factory.mktemp("hostile") / "clf"
    save_classifier(
        out, net, dataset={"name": "fashion-mnist", "image_shape": [1, 28, 28], "classes": list(FASHION_MNIST_CLASSES)}
    )
    return out


@pytest.fixture(scope="module")
def run(clf, tmp_path_factory) -> Path:
    """A run (ClaDec only, 1 epoch on 128 images) of the checkpoint's conv2."""
    from cladec.runs import fit_run

    out = tmp_path_factory.mktemp("hostile") / "run"
    fit_run(
        out,
        classifier_dir=clf,
        dataset="fashion-mnist",
        layer="conv2",
        epochs=1,
        refae=False,
        limit=128,
        test_limit=32,
        data_root=DATA,
        device="cpu",
        verbose=False,
    )
    return out


def _one_line_error(capsys, argv, *, contains=()) -> str:
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err and err.count("\n") == 1 and err.startswith("cladec: error: "), err
    for c in contains:
        assert c in err, err
    return err


def _fit(clf, out, *extra) -> list[str]:
    return [
        "fit",
        "--model",
        str(clf),
        "--layer",
        "conv2",
        "--no-refae",
        "--epochs",
        "1",
        "--limit",
        "64",
        "--test-limit",
        "32",
        "--data-root",
        DATA,
        "--out",
        str(out),
        "-q",
        *extra,
    ]


def _train(out, *extra) -> list[str]:
    return [
        "train-classifier",
        "--dataset",
        "fashion-mnist",
        "--data-root",
        DATA,
        "--width",
        "0.25",
        "--epochs",
        "1",
        "--limit",
        "64",
        "--test-limit",
        "32",
        "--out",
        str(out),
        "-q",
        *extra,
    ]


def _nothing_at(path: Path) -> None:
    assert not path.exists(), path
    assert not [p for p in path.parent.iterdir() if p.name.startswith(f".{path.name}.")], "temporary files left"


# -- 1. sizes, widths and batches that cannot fit in memory -----------------------------------------------------


def test_sizes_beyond_memory_are_refused_before_loading(clf, tmp_path, capsys):
    # 64 + 32 images of 100000×100000 float32: about 3.8 TB (the allocator was asked for 2.5 TB)
    err = _one_line_error(capsys, _fit(clf, tmp_path / "r", "--size", "100000"), contains=("--size 100000", "TB"))
    assert "more than the" in err and "smaller size" in err
    _nothing_at(tmp_path / "r")
    _one_line_error(capsys, _train(tmp_path / "c", "--size", "100000"), contains=("--size 100000", "TB"))
    _nothing_at(tmp_path / "c")


def test_widths_and_batches_beyond_memory_are_refused_before_building(tmp_path, capsys, monkeypatch):
    err = _one_line_error(capsys, _train(tmp_path / "c", "--width", "1e5"), contains=("--width 100000", "PB"))
    assert "smaller --width" in err
    _nothing_at(tmp_path / "c")
    # on a machine with 300 MB: 96 images of 300×300 (35 MB) fit, the full-width network's activations for a
    # batch of 64 of them (~0.7 GB) do not
    monkeypatch.setattr("cladec._limits.memory_limit", lambda device=None: 300_000_000)
    _one_line_error(
        capsys,
        _train(tmp_path / "c", "--width", "1", "--size", "300", "--batch-size", "64"),
        contains=("batches of 64 1×300×300 images (--batch-size)", "more than the 300 MB"),
    )
    _nothing_at(tmp_path / "c")


def test_a_run_recording_an_absurd_size_is_refused_by_explain_and_evaluate(run, tmp_path, capsys):
    bad = tmp_path / "bad_run"
    shutil.copytree(run, bad)
    cfg = json.loads((bad / "run.json").read_text())
    cfg["dataset"]["size"] = 100000
    (bad / "run.json").write_text(json.dumps(cfg))
    _one_line_error(
        capsys,
        ["explain", "--run", str(bad), "--data-root", DATA, "--out", str(tmp_path / "t.png")],
        contains=("dataset.size", "TB"),
    )
    _nothing_at(tmp_path / "t.png")
    _one_line_error(
        capsys,
        [
            "evaluate",
            "--run",
            str(bad),
            "--data-root",
            DATA,
            "--limit",
            "8",
            "--no-eval-classifier",
            "--out",
            str(tmp_path / "ev"),
            "-q",
        ],
        contains=("dataset.size",),
    )
    _nothing_at(tmp_path / "ev")


# -- 2. an output path below a file, or in a read-only folder ---------------------------------------------------


def test_an_output_below_a_file_is_refused(clf, run, tmp_path, capsys):
    f = tmp_path / "a_file"
    f.write_text("keep")
    _one_line_error(capsys, _fit(clf, f / "x"), contains=(f"{f} is a file, not a folder",))
    _one_line_error(
        capsys,
        ["explain", "--run", str(run), "--data-root", DATA, "--out", str(f / "t.png")],
        contains=("is a file, not a folder",),
    )
    assert f.read_text() == "keep"


def test_a_read_only_output_folder_is_named(run, tmp_path, capsys, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if os.geteuid() == 0:  # root writes anywhere: the folder is reported read-only as on a read-only mount
            access = os.access
            monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == ro else access(p, mode, **kw))
        _one_line_error(
            capsys,
            ["explain", "--run", str(run), "--data-root", DATA, "--out", str(ro / "t.png")],
            contains=(f"the folder {ro} is not writable",),
        )
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)


# -- 3. and 6. seeds and learning rates that are no such thing --------------------------------------------------


@pytest.mark.parametrize(
    "opt,value",
    [
        ("--seed", "99999999999999999999999"),
        ("--seed", "-1"),
        ("--lr", "1e30"),
        ("--lr", "1e308"),
        ("--lr", "nan"),
        ("--lr", "inf"),
    ],
)
def test_seeds_and_learning_rates_are_checked_on_the_command_line(clf, tmp_path, capsys, opt, value):
    for argv in (_fit(clf, tmp_path / "r", opt, value), _train(tmp_path / "c", opt, value)):
        _one_line_error(capsys, argv, contains=(f"argument {opt}:", "expected"))
    _nothing_at(tmp_path / "r")
    _nothing_at(tmp_path / "c")
    if opt == "--seed":
        _one_line_error(
            capsys,
            [
                "sweep",
                "--model",
                str(clf),
                "--dataset",
                "fashion-mnist",
                "--layers",
                "conv2",
                "--seeds",
                f"0,{value}",
                "--out",
                str(tmp_path / "s"),
            ],
            contains=("--seeds",),
        )


def test_learning_rates_and_seeds_are_checked_by_the_python_api(fmnist_small):
    from cladec import ClaDec
    from cladec.models import create_model
    from cladec.models.training import train_classifier
    from cladec.training.engine import EngineConfig

    x, y = fmnist_small[0].subset(range(64)).tensors()
    net = create_model("vgg-paper", in_channels=1, num_classes=10, width=0.25)
    for lr in (1e30, 1e308):
        with pytest.raises(ConfigError, match=r"lr must be a finite number in \(0, 10\]"):
            ClaDec(net, "conv2").fit((x, y), epochs=1, lr=lr, verbose=False)
        with pytest.raises(ConfigError, match=r"lr must be a finite number in \(0, 10\]"):
            train_classifier(net, (x, y), 1, lr=lr, verbose=False)
    with pytest.raises(ConfigError, match=r"seed must be an integer from 0 to"):
        EngineConfig(epochs=1, seed=2**80)


# -- 4. Ctrl-C, from the first moment of the entry point --------------------------------------------------------


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # a background job of a shell starts with SIGINT ignored


def _interrupt(argv: list[str], *, after: float | None = None, when_stderr: bool = False) -> tuple[int, str]:
    """Start ``cladec argv``, send SIGINT ``after`` seconds or once it first writes to stderr; (status, stderr)."""
    p = subprocess.Popen(CLADEC + argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=_default_sigint)
    err: list[bytes] = []
    started = threading.Event()

    def read() -> None:
        for chunk in iter(lambda: p.stderr.read1(4096), b""):  # type: ignore[union-attr]
            err.append(chunk)
            started.set()

    t = threading.Thread(target=read, daemon=True)
    t.start()
    if when_stderr:
        assert started.wait(120), "no progress output"
    else:
        time.sleep(after or 0)
    p.send_signal(signal.SIGINT)
    rc = p.wait(120)
    t.join(10)
    return rc, b"".join(err).decode(errors="replace")


def test_ctrl_c_while_the_command_starts_is_one_line(clf, tmp_path):
    # `import cladec` loads no torch (its torch-based names are imported on first use), so the interrupt
    # during the start reaches cladec.cli.main
    code = "import sys, cladec.cli; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
    rc, err = _interrupt(_fit(clf, tmp_path / "r"), after=0.3)
    assert rc == 130 and err == "cladec: interrupted\n", err
    _nothing_at(tmp_path / "r")


def test_ctrl_c_while_fitting_is_one_line_and_leaves_nothing(clf, tmp_path):
    argv = _fit(clf, tmp_path / "r", "--epochs", "50", "--limit", "2000")
    argv.remove("-q")  # the progress bar says when training runs
    rc, err = _interrupt(argv, when_stderr=True)
    assert rc == 130 and err.rstrip().endswith("cladec: interrupted") and "Traceback" not in err, err
    _nothing_at(tmp_path / "r")


# -- 5. output into a closed pipe --------------------------------------------------------------------------------


def test_a_closed_output_pipe_ends_quietly(clf):
    p = subprocess.Popen(CLADEC + ["layers", "--model", str(clf)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()  # type: ignore[union-attr]  # the reader is gone before anything is written (`| head -0`)
    err = p.stderr.read().decode()  # type: ignore[union-attr]
    assert p.wait(60) == 141 and err == "", err


def test_every_printing_command_survives_a_closed_pipe_in_process(clf, run, capsys, monkeypatch):
    class Closed:
        def write(self, s):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", Closed())
    assert main(["layers", "--model", str(clf)]) == 141
    assert main(["layers", "--model", str(clf), "--json"]) == 141
    assert main(["--version"]) in (0, 141)
    assert capsys.readouterr().err == ""


# -- 7. NaN, infinite and empty tensors through the Python API --------------------------------------------------


def test_nan_inf_and_empty_images_are_data_errors(fmnist_small):
    from cladec import ClaDec, explain
    from cladec.models import create_model

    x, y = fmnist_small[0].subset(range(64)).tensors()
    net = create_model("vgg-paper", in_channels=1, num_classes=10, width=0.25).eval()
    e = ClaDec(net, "conv2").fit((x, y), epochs=1, verbose=False)
    for bad in (float("nan"), float("inf"), -float("inf")):
        xb = x.clone()
        xb[3, 0, 5, 5] = bad
        with pytest.raises(DataError, match="NaN or infinite values"):
            ClaDec(net, "conv2").fit((xb, y), epochs=1, verbose=False)
        with pytest.raises(DataError, match="NaN or infinite values"):
            explain(xb, cladec=e)
    with pytest.raises(DataError, match="empty"):
        ClaDec(net, "conv2").fit((x[:0], y[:0]), epochs=1, verbose=False)
    with pytest.raises(DataError, match="empty"):
        explain(x[:0], cladec=e)


# -- Python API: seeds that no generator takes; class names that look like matplotlib mathtext --------------------


def test_fit_refuses_a_seed_no_generator_takes():
    x, y = fmnist("train", 64)
    for bad in (2**80, -1, 1.5):
        with pytest.raises(ConfigError, match=r"seed must be an integer from 0 to 9223372036854775807"):
            ClaDec(tiny_vgg(), "conv2", alpha=0.0).fit((x, y), epochs=1, verbose=False, seed=bad)


def test_grid_with_mathtext_like_class_names(tmp_path):
    """A class named "$\\frac{$" (an image folder's sub-folder) crashed the triplet grid in matplotlib's mathtext."""
    import cladec

    x, y = fmnist("train", 256)
    e = ClaDec(tiny_vgg(), "conv2", alpha=0.0).fit((x, y), epochs=1, verbose=False, **QUICK)
    names = ["$\\frac{$", "$x^$", "a_$b$"] + [f"c{i}" for i in range(7)]
    ex = cladec.explain(x[:6], cladec=e, labels=y[:6], classes=names)
    out = ex.save_grid(tmp_path / "grid.png")
    assert png_size(out)[0] > 100
