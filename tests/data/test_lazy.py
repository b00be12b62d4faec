"""Lazily read data sets (``load_dataset(..., lazy=True)``): the same data as the in-memory loader, streamed by
DataLoader workers, fitted with bounded memory (issue 17, item 5)."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from cladec import ClaDec
from cladec._errors import ConfigError, DataError
from cladec.data import LazyImageDataset, load_dataset
from cladec.data import lazy as lazy_mod
from cladec.data.lazy import StreamedBatches, make_loader
from helpers.core import COLLAPSE_OK
from helpers.stability import margin, seed

REPO = Path(__file__).resolve().parents[2]


def _write_cifar_pngs(root: Path, data_root: Path, n_train: int, n_test: int = 100) -> Path:
    """``root/<split>/<class>/<index>.png`` from real CIFAR-10 images (32 px)."""
    for split, n in (("train", n_train), ("test", n_test)):
        ds = load_dataset("cifar10", root=data_root, split=split, limit=n)
        for i in range(n):
            d = root / split / ds.classes[int(ds.labels[i])]
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(ds.images[i].permute(1, 2, 0).numpy()).save(d / f"{i:05d}.png")
    return root


@pytest.fixture(scope="session")
def cifar_folder(data_root, tmp_path_factory) -> Path:
    """5,000 CIFAR-10 training images (and 100 test images) as PNG files (about 6 s to write)."""
    return _write_cifar_pngs(tmp_path_factory.mktemp("lazy") / "cifar5k", data_root, 5000)


def test_lazy_folder_and_zip_give_the_eager_images_labels_and_classes(cifar_folder, tmp_path):
    name = f"imagefolder:{cifar_folder}"
    eager = load_dataset(name, limit=300)
    lazy = load_dataset(name, limit=300, lazy=True)
    assert isinstance(lazy, LazyImageDataset) and lazy.limit == 300 == eager.limit
    assert lazy.classes == eager.classes and torch.equal(lazy.labels, eager.labels)
    assert lazy.image_shape == eager.image_shape == (3, 32, 32) and lazy.class_counts() == eager.class_counts()
    x, y = lazy[7]
    assert x.dtype == torch.uint8 and torch.equal(x, eager.images[7]) and y == int(eager.labels[7])
    assert lazy.describe() == {**eager.describe(), "lazy": True}
    # resized: the same antialiased resize, rounded to 8 bit (within half a grey level)
    big_e, big_l = load_dataset(name, limit=40, size=48), load_dataset(name, limit=40, size=48, lazy=True)
    diff = (big_e.tensors()[0] - big_l.tensors()[0]).abs().max()
    assert big_l.resized_to == (48, 48) and float(diff) <= 0.5 / 255 + 1e-6

    # the same tree zipped under a top-level folder: the zip is opened in each worker process
    zpath = tmp_path / "c.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for p in [p for p in sorted(cifar_folder.rglob("*.png")) if int(p.stem) < 300]:  # every class
            z.write(p, f"top/{p.relative_to(cifar_folder).as_posix()}")
    zl, ze = load_dataset(f"imagefolder:{zpath}", lazy=True), load_dataset(f"imagefolder:{zpath}", cache=False)
    assert zl.classes == ze.classes and torch.equal(zl.labels, ze.labels)
    again = pickle.loads(pickle.dumps(zl))  # no open zip crosses a process boundary
    loader = DataLoader(again, batch_size=64, num_workers=2)
    xs, ys = zip(*loader, strict=True)
    assert torch.equal(torch.cat(xs), ze.images) and torch.equal(torch.cat(ys), ze.labels)
    # shuffled, seeded: the same batches in the same order whether decoded here or by 2 worker processes
    here = list(StreamedBatches(make_loader(zl, 50, workers=0, seed=3)))
    two = list(StreamedBatches(make_loader(zl, 50, workers=2, seed=3)))
    assert len(here) == len(two) == len(ze) // 50 == 6 and not torch.equal(here[0][1], ze.labels[:50])
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(here, two, strict=True))


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_lazy_builtin_set_keeps_native_uint8_and_resizes_per_item(data_root, name):
    lazy = load_dataset(name, root=data_root, split="test", size=64, limit=50, lazy=True)
    eager = load_dataset(name, root=data_root, split="test", size=64, limit=50)
    c, hw = (1, 28) if name == "mnist" else (3, 32)
    assert lazy._source.images.shape == (50, c, hw, hw)  # memory does not grow with the target size
    assert lazy.image_shape == (c, 64, 64) == eager.image_shape and lazy.classes == eager.classes
    assert torch.equal(lazy.labels, eager.labels) and lazy.describe() == {**eager.describe(), "lazy": True}
    assert float((lazy.tensors()[0] - eager.tensors()[0]).abs().max()) <= 0.5 / 255 + 1e-6
    native = load_dataset(name, root=data_root, split="test", limit=50, lazy=True)
    assert torch.equal(
        torch.stack([native[i][0] for i in range(50)]),
        load_dataset(name, root=data_root, split="test", limit=50).images,
    )  # native size: the same pixels
    sub = lazy.subset([3, 1])
    assert torch.equal(sub[0][0], lazy[3][0]) and sub.labels.tolist() == [int(eager.labels[3]), int(eager.labels[1])]


def test_grey_and_colour_rule(data_root, tmp_path, monkeypatch):
    mnist = load_dataset("mnist", root=data_root, split="test", limit=6)
    for i in range(6):
        d = tmp_path / "g" / "train" / str(i % 2)
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(mnist.images[i, 0].numpy()).save(d / f"{i}.png")
    grey = load_dataset(f"imagefolder:{tmp_path / 'g'}", lazy=True)
    assert grey.image_shape == (1, 28, 28) and torch.equal(
        grey[0][0], load_dataset(f"imagefolder:{tmp_path / 'g'}")[0][0].mul(255).byte()
    )
    # a colour image after the images whose headers were read: refused, not silently turned grey
    Image.new("RGB", (28, 28), (200, 10, 10)).save(tmp_path / "g" / "train" / "1" / "9.png")
    monkeypatch.setattr(lazy_mod, "CHANNEL_PEEK", 2)
    ds = load_dataset(f"imagefolder:{tmp_path / 'g'}", lazy=True)
    with pytest.raises(DataError, match=r"9\.png .* is in colour.*channels=3"):
        ds[len(ds) - 1]
    rgb = load_dataset(f"imagefolder:{tmp_path / 'g'}", lazy=True, channels=3)
    assert rgb.image_shape == (3, 28, 28) and torch.equal(rgb[0][0][0], rgb[0][0][2])  # grey repeated


def test_mixed_sizes_without_size_are_one_clear_error_naming_the_file(data_root, tmp_path):
    root = _write_cifar_pngs(tmp_path / "mixed", data_root, 6, 2)
    Image.new("RGB", (40, 30), (1, 2, 3)).save(root / "train" / "cat" / "zz-big.png")
    ds = load_dataset(f"imagefolder:{root}", lazy=True)
    assert ds.image_shape == (3, 32, 32)  # the first image's size
    big = next(i for i in range(len(ds)) if ds._source.members[i].endswith("zz-big.png"))
    with pytest.raises(
        DataError, match=r"zz-big\.png .* is \(30, 40\) \(H, W\), the first image \(32, 32\); pass size="
    ):
        ds[big]
    resized = load_dataset(f"imagefolder:{root}", lazy=True, size=32)
    assert resized[big][0].shape == (3, 32, 32)


def _bad_folder(root: Path, data_root: Path) -> Path:
    _write_cifar_pngs(root, data_root, 8, 4)
    (root / "train" / "cat").mkdir(exist_ok=True)
    (root / "train" / "cat" / "zz-broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return root


def test_a_file_that_does_not_decode_is_one_clear_error_at_the_item_and_in_the_cli(data_root, tmp_path, capsys):
    root = _bad_folder(tmp_path / "bad", data_root)
    ds = load_dataset(f"imagefolder:{root}", size=32, lazy=True)  # only the file list: loading works
    bad = next(i for i in range(len(ds)) if ds._source.members[i].endswith("zz-broken.png"))
    with pytest.raises(DataError, match=r"cannot decode image .*zz-broken\.png in "):
        ds[bad]
    with pytest.raises(DataError) as e:  # from a worker process: its own message, not the worker's traceback
        list(StreamedBatches(make_loader(ds, 4, workers=2, seed=0)))
    assert str(e.value).startswith("cannot decode image") and "Traceback" not in str(e.value)
    from cladec.cli import main

    argv = ["fit", "--factory", "helpers.user_model:make_net", "--factory-kwargs", '{"in_channels": 3}']
    argv += ["--layer", "conv", "--dataset", f"imagefolder:{root}", "--lazy", "--workers", "2", "--size", "32"]
    rc = main([*argv, "--epochs", "1", "--batch-size", "4", "--no-refae", "--out", str(tmp_path / "run"), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and "zz-broken.png" in err[0] and err[0].startswith("cladec: error: cannot decode")


@COLLAPSE_OK  # 320 images, 10 steps: checks that the images are streamed, not what the decoder learnt
def test_api_fit_streams_lazy_data_with_workers_and_never_builds_all_images(
    cifar_folder, monkeypatch, one_torch_thread
):
    from helpers.user_model import make_net

    ds = load_dataset(f"imagefolder:{cifar_folder}", limit=320, lazy=True)

    def refuse(self):
        raise AssertionError("a lazy data set was materialised")

    monkeypatch.setattr(LazyImageDataset, "tensors", refuse)
    torch.manual_seed(0)
    e = ClaDec(make_net(in_channels=3), "conv", alpha=0.001)
    e.fit(ds, epochs=1, batch_size=32, lr=3e-3, workers=2, verbose=False)
    assert e.fit_config["n_train"] is None and e.fit_config["steps"] == 10  # streamed
    assert len(e.history) == 1 and e.history[0]["loss"] < 0.2
    with pytest.raises(ConfigError, match="workers must be a non-negative integer"):
        e.fit(ds, epochs=1, workers=-1, verbose=False)


@COLLAPSE_OK  # 400 images, 1 epoch: checks the lazy commands and the run's reload, not what the decoder learnt
def test_cli_train_classifier_fit_explain_and_evaluate_with_lazy_data(cifar_folder, tmp_path, capsys):
    from cladec.cli import main

    data = ["--dataset", f"imagefolder:{cifar_folder}", "--limit", "400", "--lazy", "--workers", "2"]
    clf = tmp_path / "clf"
    argv = ["train-classifier", *data, "--width", "0.25", "--epochs", "1", "--batch-size", "50", "--out", str(clf)]
    assert main([*argv, "-q"]) == 0
    assert "on 100 imagefolder:" in capsys.readouterr().out  # the test split, streamed too
    info = json.loads((clf / "classifier.json").read_text())
    assert info["dataset"]["n_train"] == 400 and info["dataset"]["n_test"] == 100
    run = tmp_path / "run"
    argv = ["fit", "--model", str(clf), "--layer", "last", *data, "--epochs", "1", "--test-limit", "50"]
    assert main([*argv, "--no-refae", "--batch-size", "50", "--out", str(run), "-q"]) == 0
    cfg = json.loads((run / "run.json").read_text())
    assert cfg["dataset"]["lazy"] is True and cfg["dataset"]["n_train"] == 400
    assert main(["explain", "--run", str(run), "--n", "4", "--out", str(tmp_path / "t.png"), "-q"]) == 0
    assert (tmp_path / "t.png").stat().st_size > 0
    # evaluate reads the recorded data set into memory: --limit keeps it small
    argv = ["evaluate", "--run", str(run), "--limit", "40", "--no-eval-classifier", "--out", str(tmp_path / "ev")]
    assert main([*argv, "-q"]) == 0
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["sets"]["cladec"]["n"] == 40


_PEAKS = """
import json, resource, sys
from cladec.cli import main
folder, out, lazy, seed = sys.argv[1], sys.argv[2], sys.argv[3] == "lazy", sys.argv[4]
peaks = []
for limit in ("500", "5000"):  # the larger fit second: its peak RSS can only add to the smaller one's
    argv = ["fit", "--factory", "helpers.user_model:make_net", "--factory-kwargs", '{"in_channels": 3}']
    argv += ["--layer", "conv", "--dataset", f"imagefolder:{folder}", "--size", "48", "--epochs", "1"]
    argv += ["--batch-size", "64", "--lr", "3e-3", "--no-refae", "--test-limit", "100", "--limit", limit]
    argv += ["--seed", seed]
    argv += ["--out", f"{out}/run{limit}", "-q"] + (["--lazy", "--workers", "2"] if lazy else [])
    assert main(argv) == 0
    peaks.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
print("PEAKS", json.dumps(peaks))
"""


def test_cli_fit_of_5000_lazily_read_images_converges_with_bounded_memory(cifar_folder, tmp_path):
    """``cladec fit --lazy --workers 2`` of 500 and then 5,000 images at 48 px in one process: the second fit adds
    next to nothing to the first one's peak RSS. Measured (2 busy cores, 4 runs): +4, +11, +20 and +41 MB lazily;
    the same two fits in memory: +1,047 MB (the 4,500 more images are 124 MB as float32 at 48 px, and their
    activations and copies more). The bound, 100 MB, is below the float32 images alone."""
    import os

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO / "tests")]))
    res = subprocess.run(
        [sys.executable, "-c", _PEAKS, str(cifar_folder), str(tmp_path), "lazy", str(seed(0))],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    small, big = json.loads(res.stdout.split("PEAKS")[-1])
    assert big - small < 100e6, (small, big)
    # the 5,000-image fit did not collapse (the 500-image one, 8 steps, only gives the reference peak: it collapsed
    # once in 10 measured runs, seed offset 1 at 2 threads, tests/STABILITY.md)
    assert json.loads((tmp_path / "run5000" / "run.json").read_text())["collapsed"] == {"cladec": False, "refae": None}
    # it converged: test MSE 0.0079-0.0105 over seed offsets 0-4 at 1 and at 2 threads (OMP_NUM_THREADS of the
    # child; tests/STABILITY.md), 0.056-0.058 after the 500-image fit's 8 steps (about the mean image's)
    mse = float(res.stdout.split("test MSE ClaDec ")[-1].split(";")[0])
    margin("lazy fit of 5,000 images: test MSE", mse, "<", 0.02)
    from cladec.runs import explain_run, load_run

    run = load_run(tmp_path / "run5000")
    assert run.config["dataset"]["lazy"] is True and run.config["dataset"]["n_train"] == 5000
    ex, info = explain_run(run, n=6)  # decodes only the 6 images it draws
    assert len(ex) == 6 and len(info["indices"]) == 6
