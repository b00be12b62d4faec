"""Data loading on the real data sets: IDX, CIFAR-10 zip and python batches, image folders, embedded set."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import re
import shutil
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cladec import ConfigError, DataError
from cladec.data.dataset import ImageDataset
from cladec.data.download import check_md5, download_url
from cladec.data.idx import read_idx
from cladec.data.load import load_dataset
from cladec.data.names import CIFAR10_CLASSES, FASHION_MNIST_CLASSES, available_datasets

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Never write decoded-image caches into the real user cache, and ignore a user's CLADEC_DATA."""
    monkeypatch.setenv("CLADEC_CACHE_DIR", str(tmp_path / "decoded-cache"))
    monkeypatch.delenv("CLADEC_DATA", raising=False)


# ---------------------------------------------------------------------------------------------- IDX


def test_mnist_train_and_test_parse_with_official_first_labels(data_root):
    train = load_dataset("mnist", root=data_root, split="train")
    test = load_dataset("mnist", root=data_root, split="test")
    assert len(train) == 60000 and len(test) == 10000
    assert train.images.shape == (60000, 1, 28, 28) and train.images.dtype == torch.uint8
    assert train.labels.dtype == torch.int64
    assert int(train.labels[0]) == 5 and train.labels[:5].tolist() == [5, 0, 4, 1, 9]
    assert int(test.labels[0]) == 7 and test.labels[:3].tolist() == [7, 2, 1]
    # the official class distribution of the MNIST training set
    assert train.class_counts() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert train.classes == [str(i) for i in range(10)]
    assert train.name == "mnist" and train.split == "train" and train.image_shape == (1, 28, 28)
    # a digit is dark background with bright strokes
    x, y = test[0]
    assert x.dtype == torch.float32 and x.shape == (1, 28, 28) and y == 7
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0 and float((x > 0.5).float().mean()) < 0.3


def test_fashion_mnist_full_train_pixel_statistics_match_readme(data_root):
    ds = load_dataset("fashion-mnist", root=data_root)
    assert len(ds) == 60000 and ds.class_counts() == [6000] * 10
    assert ds.classes == FASHION_MNIST_CLASSES and ds.classes[0] == "T-shirt/top"
    hist = torch.bincount(ds.images.flatten(), minlength=256).double()  # pixel-value histogram
    v = torch.arange(256, dtype=torch.float64) / 255.0
    mean = float((hist * v).sum() / hist.sum())
    std = float(((hist * (v - mean) ** 2).sum() / hist.sum()).sqrt())
    assert abs(mean - 0.2861) < 0.002
    assert abs(std - 0.3528) < 0.002


def test_limit_is_a_prefix_of_the_file_order(data_root):
    full = load_dataset("fashion-mnist", root=data_root, split="test")
    part = load_dataset("fashion-mnist", root=data_root, split="test", limit=123)
    assert len(part) == 123
    assert torch.equal(part.images, full.images[:123]) and torch.equal(part.labels, full.labels[:123])
    assert len(load_dataset("fashion-mnist", root=data_root, split="test", limit=10**9)) == 10000


def test_uncompressed_idx_files_and_root_holding_the_files_directly(data_root, tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (raw / name).write_bytes(gzip.decompress((data_root / "MNIST" / "raw" / f"{name}.gz").read_bytes()))
    ref = load_dataset("mnist", root=data_root, split="test", limit=500)
    plain = load_dataset("mnist", root=tmp_path, split="test", limit=500)
    direct = load_dataset("MNIST", root=raw, split="test", limit=500)  # root = the folder with the files
    assert torch.equal(plain.images, ref.images) and torch.equal(direct.labels, ref.labels)


def test_read_idx_reads_headers_and_rejects_garbage(data_root, tmp_path):
    labels = read_idx(data_root / "MNIST" / "raw" / "train-labels-idx1-ubyte.gz")
    assert labels.shape == (60000,) and labels[:3].tolist() == [5, 0, 4]
    imgs = read_idx(data_root / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz", limit=7)
    assert imgs.shape == (7, 28, 28) and imgs.dtype == np.uint8
    bad = tmp_path / "bad-idx"
    bad.write_bytes(b"PK\x03\x04 not an idx file")
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(bad)
    truncated = tmp_path / "short-idx"
    truncated.write_bytes((data_root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz").read_bytes()[:2000])
    with pytest.raises(DataError, match="truncated|cannot read"):
        read_idx(truncated)


def test_env_var_cladec_data_is_the_default_root(data_root, monkeypatch):
    monkeypatch.setenv("CLADEC_DATA", str(data_root))
    ds = load_dataset("fmnist", split="test", limit=5)
    assert ds.name == "fashion-mnist" and len(ds) == 5


def test_names_are_case_insensitive_with_aliases(data_root):
    for name in ("FashionMNIST", "FMNIST", "fashion-mnist", "Fashion_MNIST"):
        assert load_dataset(name, root=data_root, split="test", limit=3).name == "fashion-mnist"
    assert set(available_datasets()) >= {"mnist", "fashion-mnist", "cifar10", "fashion-mnist-mini"}


# ------------------------------------------------------------------------------------------- resize


def test_resize_to_32_bilinear_keeps_content(data_root):
    native = load_dataset("fashion-mnist", root=data_root, split="test", limit=200)
    big = load_dataset("fashion-mnist", root=data_root, split="test", limit=200, size=32)
    assert big.image_shape == (1, 32, 32) and big.images.dtype == torch.float32
    x, _ = big.tensors()
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    xn, _ = native.tensors()
    assert abs(float(x.mean()) - float(xn.mean())) < 0.01
    assert torch.equal(big.labels, native.labels)
    rect = load_dataset("fashion-mnist", root=data_root, split="test", limit=4, size=(32, 40))
    assert rect.image_shape == (1, 32, 40)
    # nearest upsampling by 2 duplicates every pixel (what the authors' F.interpolate(x, size) does)
    nearest = load_dataset("fashion-mnist", root=data_root, split="test", limit=4, size=56, resize_mode="nearest")
    dup = xn[:4].repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    assert torch.equal(nearest.images, dup)
    same = load_dataset("fashion-mnist", root=data_root, split="test", limit=4, size=28)
    assert same.images.dtype == torch.uint8  # native size: nothing resized


# ------------------------------------------------------------------------------------------ CIFAR-10


def test_cifar10_zip_first_n_is_class_balanced_colour(data_root):
    ds = load_dataset("cifar10", root=data_root, split="train", limit=200)
    assert len(ds) == 200 and ds.image_shape == (3, 32, 32) and ds.images.dtype == torch.uint8
    assert ds.class_counts() == [20] * 10
    assert ds.classes == CIFAR10_CLASSES
    assert ds.labels[:10].tolist() == list(range(10))  # round-robin over the sorted classes
    # the first image is train/airplane/<first file>, decoded exactly as PIL does it
    with zipfile.ZipFile(data_root / "cifar10-jpeg.zip") as z:
        first = sorted(n for n in z.namelist() if n.startswith("train/airplane/") and n.endswith(".jpg"))[0]
        ref = np.asarray(Image.open(io.BytesIO(z.read(first))).convert("RGB"))
    assert torch.equal(ds.images[0], torch.from_numpy(ref.copy()).permute(2, 0, 1))
    x, _ = ds.tensors()
    assert 0.3 < float(x.mean()) < 0.6 and float(x[:, 0].std()) > 0.15  # real colour photos


def _cifar_batch_file(path: Path, data: np.ndarray, labels: list[int], protocol: int) -> None:
    """Write a file shaped like the official CIFAR-10 python batches (a pickled dict with bytes keys)."""
    batch = {
        b"batch_label": b"testing batch 1 of 1",
        b"labels": labels,
        b"data": data,
        b"filenames": [b"x.png"] * len(labels),
    }
    path.write_bytes(pickle.dumps(batch, protocol=protocol))


def test_cifar10_python_batches_are_read_without_unpickling_code(data_root, tmp_path):
    ref = load_dataset("cifar10", root=data_root, split="test", limit=30)
    flat = ref.images.reshape(30, -1).numpy()
    labels = ref.labels.tolist()
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    _cifar_batch_file(folder / "test_batch", flat, labels, protocol=2)
    for i in range(1, 6):  # five train batches of 6 images each, another pickle protocol
        _cifar_batch_file(folder / f"data_batch_{i}", flat[(i - 1) * 6 : i * 6], labels[(i - 1) * 6 : i * 6], 4)
    meta = {b"label_names": [c.encode() for c in CIFAR10_CLASSES], b"num_cases_per_batch": 10000}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    test = load_dataset("cifar10", root=tmp_path, split="test")
    assert torch.equal(test.images, ref.images) and torch.equal(test.labels, ref.labels)
    assert test.classes == CIFAR10_CLASSES
    train = load_dataset("cifar10", root=tmp_path, split="train", limit=14)
    assert torch.equal(train.images, ref.images[:14])
    # a pickle that would run code is refused, and the code does not run
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (folder / "test_batch").write_bytes(pickle.dumps({b"data": Evil(), b"labels": [0]}, protocol=2))
    with pytest.raises(DataError, match="refusing|read safely"):
        load_dataset("cifar10", root=tmp_path, split="test")
    assert not marker.exists()


def test_cifar10_missing_lists_every_path_and_how_to_get_it(tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", root=tmp_path)
    msg = str(e.value)
    for p in ("cifar10-jpeg.zip", "cifar10-jpeg", "cifar-10-batches-py"):
        assert str(tmp_path / p) in msg
    assert "download=True" in msg and "CLADEC_DATA" in msg


# ------------------------------------------------------------------------------------- image folders


def _write_mnist_folder(root: Path, data_root: Path, per_class: dict[str, int], split: str, offset: int = 0):
    """PNG files <root>/<split>/<digit>/<index>.png from real MNIST test images; returns {path: image}."""
    ds = load_dataset("mnist", root=data_root, split="test", limit=400)
    written = {}
    for cls, n in per_class.items():
        idx = (ds.labels == int(cls)).nonzero().flatten()[offset : offset + n]
        d = root / split / cls
        d.mkdir(parents=True, exist_ok=True)
        for k, i in enumerate(idx.tolist()):
            p = d / f"{k:03d}.png"
            Image.fromarray(ds.images[i, 0].numpy()).save(p)
            written[p] = ds.images[i]
    return written


def test_imagefolder_from_real_mnist_pngs_folder_and_zip(data_root, tmp_path):
    root = tmp_path / "digits"
    written = _write_mnist_folder(root, data_root, {"3": 4, "1": 5, "7": 3}, "train")
    _write_mnist_folder(root, data_root, {"3": 2, "7": 2}, "test", offset=10)  # no class "1" in test
    ds = load_dataset(f"imagefolder:{root}", split="train")
    assert ds.classes == ["1", "3", "7"] and ds.image_shape == (1, 28, 28) and len(ds) == 12
    # interleaved round-robin: 1,3,7,1,3,7,... then the leftovers of the larger classes
    assert ds.labels.tolist() == [0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 0]
    assert torch.equal(ds.images[0], written[root / "train" / "1" / "000.png"])
    assert torch.equal(ds.images[4], written[root / "train" / "3" / "001.png"])
    # the first N are class-balanced
    assert load_dataset(f"imagefolder:{root}", limit=6).class_counts() == [2, 2, 2]
    # the test split keeps the same class indices even though a class is missing there
    test = load_dataset(f"imagefolder:{root}", split="test")
    assert test.classes == ["1", "3", "7"] and sorted(set(test.labels.tolist())) == [1, 2]

    # the same tree zipped under a top-level folder
    zpath = tmp_path / "digits.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for p in sorted(root.rglob("*.png")):
            z.write(p, f"digits/{p.relative_to(root).as_posix()}")
    zds = load_dataset(f"imagefolder:{zpath}", split="train")
    assert torch.equal(zds.images, ds.images) and torch.equal(zds.labels, ds.labels) and zds.classes == ds.classes
    # a full decode of a zip is cached (outside the data folder) and the cache gives the same result
    cached = list((tmp_path / "decoded-cache").glob("digits-*.npz"))
    assert len(cached) == 1
    again = load_dataset(f"imagefolder:{zpath}", split="train", limit=5)
    assert torch.equal(again.images, ds.images[:5])


def test_imagefolder_mixed_sizes_and_colour(data_root, tmp_path):
    root = tmp_path / "mixed"
    _write_mnist_folder(root, data_root, {"0": 2, "1": 2}, "train")
    Image.new("RGB", (40, 30), (255, 0, 0)).save(root / "train" / "1" / "zzz.jpg")
    with pytest.raises(DataError, match="different sizes.*size="):
        load_dataset(f"imagefolder:{root}")
    ds = load_dataset(f"imagefolder:{root}", size=32)
    assert ds.image_shape == (3, 32, 32) and len(ds) == 5 and ds.images.dtype == torch.float32
    red = ds.images[ds.labels == 1][-1]
    assert float(red[0].mean()) > 0.9 and float(red[1:].max()) < 0.1
    grey = ds.images[0]
    assert torch.allclose(grey[0], grey[1]) and torch.allclose(grey[1], grey[2])  # grey images made RGB


def test_imagefolder_errors(tmp_path, data_root):
    with pytest.raises(DataError, match="not found"):
        load_dataset(f"imagefolder:{tmp_path / 'nope'}")
    (tmp_path / "flat").mkdir()
    with pytest.raises(DataError, match="no 'train' split"):
        load_dataset(f"imagefolder:{tmp_path / 'flat'}")
    (tmp_path / "notzip.zip").write_bytes(b"hello")
    with pytest.raises(DataError, match="not a zip"):
        load_dataset(f"imagefolder:{tmp_path / 'notzip.zip'}")
    (tmp_path / "empty" / "train" / "cat").mkdir(parents=True)
    (tmp_path / "empty" / "train" / "cat" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match="no images"):
        load_dataset(f"imagefolder:{tmp_path / 'empty'}")
    bad = tmp_path / "broken" / "train" / "a"
    bad.mkdir(parents=True)
    (bad / "x.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot decode"):
        load_dataset(f"imagefolder:{tmp_path / 'broken'}")
    with pytest.raises(ConfigError, match="needs a path"):
        load_dataset("imagefolder:")


# ------------------------------------------------------------------------------------ embedded set


def test_embedded_fashion_mnist_mini_is_the_first_600_and_100_per_class(data_root):
    mini_train = load_dataset("fashion-mnist-mini", root="/definitely/ignored")
    mini_test = load_dataset("Fashion-MNIST-mini", split="test")
    assert len(mini_train) == 6000 and len(mini_test) == 1000
    assert mini_train.class_counts() == [600] * 10 and mini_test.class_counts() == [100] * 10
    assert mini_train.classes == FASHION_MNIST_CLASSES and mini_train.image_shape == (1, 28, 28)
    for mini, split, per in ((mini_train, "train", 600), (mini_test, "test", 100)):
        full = load_dataset("fashion-mnist", root=data_root, split=split)
        idx = torch.cat([(full.labels == c).nonzero().flatten()[:per] for c in range(10)]).sort().values
        assert torch.equal(mini.images, full.images[idx])
        assert torch.equal(mini.labels, full.labels[idx])


def test_embedded_files_are_small_gzip_with_licence():
    import cladec

    folder = Path(cladec.__file__).parent / "_data" / "fashion-mnist-mini"
    sizes = {p.name: p.stat().st_size for p in folder.iterdir()}
    assert sum(sizes.values()) < 4_000_000
    assert "LICENSE.txt" in sizes and "README.md" in sizes
    assert "Zalando" in (folder / "LICENSE.txt").read_text() and "MIT" in (folder / "LICENSE.txt").read_text()
    assert (folder / "train-images-idx3-ubyte.gz").read_bytes()[:2] == b"\x1f\x8b"


# ---------------------------------------------------------------------------------- ImageDataset API


def test_image_dataset_api(data_root):
    ds = load_dataset("fashion-mnist-mini", split="test")
    x, y = ds.tensors()
    assert x.shape == (1000, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert float(x.max()) <= 1.0 and float(x.min()) >= 0.0
    img, lab = ds[5]
    assert torch.equal(img, x[5]) and lab == int(y[5]) and isinstance(lab, int)
    sub = ds.subset([5, 7, 9])
    assert isinstance(sub, ImageDataset) and len(sub) == 3 and torch.equal(sub.images[0], ds.images[5])
    assert sub.classes == ds.classes and sub.name == ds.name
    assert len(ds.subset(range(10, 20))) == 10 and len(ds.subset(ds.labels == 3)) == 100
    d = ds.describe()
    assert d == {
        "name": "fashion-mnist-mini",
        "split": "test",
        "size": 1000,
        "image_shape": [1, 28, 28],
        "num_classes": 10,
        "classes": FASHION_MNIST_CLASSES,
    }
    assert ds.num_classes == 10 and "fashion-mnist-mini" in repr(ds)
    assert len(torch.utils.data.DataLoader(ds, batch_size=100)) == 10
    with pytest.raises(DataError, match="out of range"):
        ds.subset([1000])
    with pytest.raises(DataError, match="empty"):
        ds.subset([])
    with pytest.raises(DataError, match=r"boolean subset mask needs one entry per image \(1000\), got shape \(5,\)"):
        ds.subset(torch.ones(5, dtype=torch.bool))


def test_image_dataset_validates_its_inputs():
    with pytest.raises(DataError, match=r"\(N, C, H, W\)"):
        ImageDataset(torch.zeros(3, 28, 28, dtype=torch.uint8), [0, 1, 2])
    with pytest.raises(DataError, match="labels must lie in"):
        ImageDataset(torch.zeros(2, 1, 4, 4), [0, 5], ["a", "b"])
    with pytest.raises(DataError, match="2 images but 3 labels"):
        ImageDataset(torch.zeros(2, 1, 4, 4), [0, 1, 1])
    with pytest.raises(DataError, match="empty"):
        ImageDataset(torch.zeros(0, 1, 4, 4), torch.zeros(0, dtype=torch.int64))
    assert ImageDataset(torch.rand(2, 3, 4, 4).double(), [0, 1]).classes == ["0", "1"]


# --------------------------------------------------------------------------------- argument errors


def test_every_bad_argument_gives_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown data set 'imagenet'.*'mnist'.*'fashion-mnist'.*'cifar10'"):
        load_dataset("imagenet")
    with pytest.raises(ConfigError, match=r"split must be one of \['train', 'test'\]"):
        load_dataset("fashion-mnist-mini", split="val")
    for bad in (0, -3, (32,), (32, 0), "32", 2.5, True):
        with pytest.raises(ConfigError, match="size must be"):
            load_dataset("fashion-mnist-mini", size=bad)
    for bad in (0, -1, 1.5):
        with pytest.raises(ConfigError, match="limit must be a positive integer"):
            load_dataset("fashion-mnist-mini", limit=bad)
    with pytest.raises(ConfigError, match="resize_mode"):
        load_dataset("fashion-mnist-mini", size=32, resize_mode="cubic")
    with pytest.raises(DataError) as e:
        load_dataset("mnist", root=tmp_path, split="test")
    msg = str(e.value)
    assert str(tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz") in msg
    assert str(tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte") in msg
    assert "download=True" in msg and "--download" in msg and "CLADEC_DATA" in msg


# ----------------------------------------------------------------------------- checksum / download


def test_check_md5_on_a_local_file(tmp_path):
    f = tmp_path / "blob.bin"
    payload = bytes(range(256)) * 5000
    f.write_bytes(payload)
    good = hashlib.md5(payload).hexdigest()
    assert check_md5(f, good) and check_md5(f, good.upper())
    assert not check_md5(f, "0" * 32)
    assert not check_md5(tmp_path / "missing.bin", good)


def test_download_verifies_md5_and_writes_atomically_from_a_local_url(data_root, tmp_path):
    """The download helper, fed a file:// URL (no network): a good file lands, a bad checksum leaves nothing."""
    src = data_root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz"
    md5 = hashlib.md5(src.read_bytes()).hexdigest()
    dest = tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz"
    download_url(src.as_uri(), dest, md5)
    assert dest.read_bytes() == src.read_bytes()
    other = tmp_path / "other.gz"
    with pytest.raises(DataError, match="corrupt: MD5"):
        download_url(src.as_uri(), other, "0" * 32)
    assert not other.exists() and not list(tmp_path.glob(".other.gz.*"))
    with pytest.raises(DataError, match="could not download"):
        download_url((tmp_path / "does-not-exist.gz").as_uri(), tmp_path / "x.gz", md5)
    shutil.rmtree(tmp_path / "MNIST")


def test_download_flow_places_files_where_the_loader_looks(data_root, tmp_path, monkeypatch):
    """download=True with the network replaced by local copies: the right URLs, paths and extraction."""
    import tarfile

    import cladec.data as data_mod

    requested = []

    def fake_mnist(urls, dest, md5):
        urls = list(urls)
        requested.append(urls[0])
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(data_root / "MNIST" / "raw" / dest.name, dest)

    monkeypatch.setattr(data_mod.idx, "download_first", fake_mnist)
    ds = load_dataset("mnist", root=tmp_path, split="test", limit=10, download=True)
    assert ds.labels[0] == 7
    assert requested == [
        "https://ossci-datasets.s3.amazonaws.com/mnist/t10k-images-idx3-ubyte.gz",
        "https://ossci-datasets.s3.amazonaws.com/mnist/t10k-labels-idx1-ubyte.gz",
    ]
    assert (tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz").is_file()

    # CIFAR-10: a tarball like the official one, plus a member that tries to escape the folder
    ref = load_dataset("cifar10", root=data_root, split="test", limit=12)
    staging = tmp_path / "staging" / "cifar-10-batches-py"
    staging.mkdir(parents=True)
    flat, labels = ref.images.reshape(12, -1).numpy(), ref.labels.tolist()
    _cifar_batch_file(staging / "test_batch", flat, labels, protocol=2)
    for i in range(1, 6):
        _cifar_batch_file(staging / f"data_batch_{i}", flat[:2], labels[:2], protocol=2)
    evil = tmp_path / "staging" / "evil.txt"
    evil.write_text("outside")

    def fake_cifar(urls, dest, md5):
        requested.append(list(urls)[0])
        with tarfile.open(dest, "w:gz") as tf:
            tf.add(staging, arcname="cifar-10-batches-py")
            tf.add(evil, arcname="cifar-10-batches-py/../../evil.txt")

    monkeypatch.setattr(data_mod.cifar, "download_first", fake_cifar)
    root = tmp_path / "c"
    root.mkdir()
    ds = load_dataset("cifar10", root=root, split="test", download=True)
    assert requested[-1] == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    assert torch.equal(ds.images, ref.images) and ds.image_shape == (3, 32, 32)
    assert not (tmp_path / "evil.txt").exists() and not (root.parent.parent / "evil.txt").exists()


def test_image_dataset_label_forms():
    # unsigned numpy labels (no min() in torch for uint32) and a (N, 1) column are class indices too
    x = torch.zeros(3, 1, 4, 4)
    assert ImageDataset(x, np.array([1, 0, 2], dtype=np.uint32)).labels.tolist() == [1, 0, 2]
    assert ImageDataset(x, torch.tensor([[1], [0], [2]])).labels.tolist() == [1, 0, 2]
    with pytest.raises(DataError, match="labels must be a 1-D integer tensor"):
        ImageDataset(x, torch.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(DataError, match=r"labels must be >= 0 \(class indices\), found -1"):
        ImageDataset(x, [0, -1, 2])


def test_imagefolder_16_bit_and_float_grey_images_are_scaled_not_clipped(data_root, tmp_path):
    # real MNIST digits saved as 16-bit PNGs (value × 257) and as float TIFFs in [0, 1] read back as the
    # 8-bit originals; PIL's convert("L") would clip every value above 255 to white
    root = tmp_path / "deep"
    mnist = load_dataset("mnist", root=data_root, split="test", limit=4)
    for k in range(4):
        d = root / "train" / str(k % 2)
        d.mkdir(parents=True, exist_ok=True)
        a8 = mnist.images[k, 0].numpy()
        if k < 2:
            Image.fromarray(a8.astype(np.uint16) * 257).save(d / f"{k}.png")
        else:
            Image.fromarray(a8.astype(np.float32) / 255.0, mode="F").save(d / f"{k}.tif")
    ds = load_dataset(f"imagefolder:{root}")
    assert ds.image_shape == (1, 28, 28)
    got = sorted(ds.images[:, 0].reshape(4, -1).tolist())
    want = sorted(mnist.images[:, 0].reshape(4, -1).tolist())
    assert got == want
    # the bit depth comes from the file, not from the values: a dark 16-bit image stays dark; a float image
    # that overshoots 1 by rounding stays a [0, 1] image
    edge = tmp_path / "edge"
    (edge / "train" / "0").mkdir(parents=True)
    Image.fromarray(np.full((28, 28), 200, dtype=np.uint16)).save(edge / "train" / "0" / "dark.png")
    Image.fromarray(np.full((28, 28), np.nextafter(np.float32(1), np.float32(2))), mode="F").save(
        edge / "train" / "0" / "over.tif"
    )
    e = load_dataset(f"imagefolder:{edge}", cache=False)
    assert sorted(int(e.images[i].max()) for i in range(2)) == [1, 255]
    bad = root / "train" / "0" / "bad.tif"
    Image.fromarray(np.full((28, 28), 1000.0, dtype=np.float32), mode="F").save(bad)
    with pytest.raises(DataError, match=r"mode F has values 1000\.\.1000"):
        load_dataset(f"imagefolder:{root}", cache=False)


# ------------------------------------------------------------------------------------- transparency


def test_imagefolder_transparent_pixels_become_white_with_one_warning(data_root, tmp_path):
    # real CIFAR-10 photos as PNGs. Class "cat": RGBA with the left half fully transparent (the photo stays
    # hidden under it, as in a cut-out) and a half-transparent band, plus a palette image with a transparent
    # entry. Class "dog": opaque RGB, and an RGBA image that is fully opaque (not counted as transparent).
    photos = load_dataset("cifar10", root=data_root, split="test", limit=6).images.permute(0, 2, 3, 1).numpy()
    root = tmp_path / "pets"
    cat, dog = root / "train" / "cat", root / "train" / "dog"
    cat.mkdir(parents=True)
    dog.mkdir(parents=True)
    alpha = np.full((32, 32), 255, dtype=np.uint8)
    alpha[:, :16] = 0
    alpha[:4, 16:] = 128
    for k in range(2):
        Image.fromarray(np.dstack([photos[k], alpha])).save(cat / f"{k}.png")
        Image.fromarray(photos[2 + k]).save(dog / f"{k}.png")
    Image.fromarray(np.dstack([photos[5], np.full((32, 32), 255, np.uint8)])).save(dog / "2.png")
    pal = Image.fromarray(photos[4]).quantize(16)
    hole = pal.getpixel((0, 0))
    pal.save(cat / "2.png", transparency=hole)
    with pytest.warns(
        UserWarning,
        match=rf"3 of 6 images in {re.escape(str(root))} \(train\) have transparent "
        r"pixels.*white background",
    ) as rec:
        ds = load_dataset(f"imagefolder:{root}")
    assert len(rec) == 1 and rec[0].filename == __file__  # one warning, pointing at the caller
    assert ds.classes == ["cat", "dog"] and ds.labels.tolist() == [0, 1, 0, 1, 0, 1]
    got = ds.images.permute(0, 2, 3, 1).numpy().astype(np.int64)
    for k in range(2):
        cut = got[2 * k]
        assert (cut[:, :16] == 255).all()  # fully transparent: white, not the hidden photo
        band = (photos[k][:4, 16:].astype(np.int64) * 128 + 255 * 127 + 127) // 255
        assert np.array_equal(cut[:4, 16:], band)
        assert np.array_equal(cut[4:, 16:], photos[k][4:, 16:])  # opaque pixels unchanged
        assert np.array_equal(got[2 * k + 1], photos[2 + k])
    assert np.array_equal(got[5], photos[5])
    want = np.asarray(pal.convert("RGB")).copy()
    want[np.asarray(pal) == hole] = 255
    assert np.array_equal(got[4], want) and (got[4][0, 0] == 255).all()

    # the same folder with opaque images only (a fully opaque RGBA one among them): no warning
    shutil.rmtree(cat)
    cat.mkdir()
    Image.fromarray(photos[0]).save(cat / "0.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opaque = load_dataset(f"imagefolder:{root}")
    assert torch.equal(opaque.images[3], ds.images[5])


def test_grey_transparent_pngs_in_a_zip_become_white_also_from_the_cache(data_root, tmp_path):
    # black ink on a clear sheet: real MNIST digits as the alpha of black LA images (the hidden grey is
    # black, so dropping the alpha gives all-black images), and as L images whose 0 is the transparent value
    digits = load_dataset("mnist", root=data_root, split="test", limit=4).images[:, 0].numpy()
    zpath = tmp_path / "sheets.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for k in range(4):
            buf = io.BytesIO()
            if k < 2:
                Image.fromarray(np.dstack([np.zeros_like(digits[k]), digits[k]]), mode="LA").save(buf, "PNG")
            else:
                Image.fromarray(digits[k]).save(buf, "PNG", transparency=0)
            z.writestr(f"sheets/train/{'ab'[k % 2]}/{k}.png", buf.getvalue())  # interleaved: 0, 1, 2, 3
    want = np.stack(
        [
            255 - digits[0],
            255 - digits[1],
            np.where(digits[2] == 0, 255, digits[2]),
            np.where(digits[3] == 0, 255, digits[3]),
        ]
    )
    for _ in range(2):  # the second load comes from the decoded-image cache and warns the same
        with pytest.warns(UserWarning, match=rf"4 of 4 images in {re.escape(str(zpath))} \(train\).*white"):
            ds = load_dataset(f"imagefolder:{zpath}")
        assert ds.image_shape == (1, 28, 28) and np.array_equal(ds.images[:, 0].numpy(), want)
    assert len(list((tmp_path / "decoded-cache").glob("sheets-*.npz"))) == 1
    with pytest.warns(UserWarning, match=r"2 of 2 images"):
        assert np.array_equal(load_dataset(f"imagefolder:{zpath}", limit=2).images[:, 0].numpy(), want[:2])


# ------------------------------------------------------------------------------- IDX consistency


def _idx_bytes(arr: np.ndarray, count: int | None = None) -> bytes:
    """An uint8 IDX file: magic, the dimensions (the first one = ``count`` if given) and the data."""
    dims = np.array([len(arr) if count is None else count, *arr.shape[1:]], dtype=">u4")
    return bytes([0, 0, 0x08, arr.ndim]) + dims.tobytes() + np.ascontiguousarray(arr, dtype=np.uint8).tobytes()


def test_idx_count_mismatch_and_truncation_are_caught_also_with_a_limit(data_root, tmp_path):
    src = data_root / "FashionMNIST" / "raw"
    imgs = read_idx(src / "t10k-images-idx3-ubyte.gz", limit=300)
    labs = read_idx(src / "t10k-labels-idx1-ubyte.gz", limit=300)
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    img_p, lab_p = raw / "t10k-images-idx3-ubyte", raw / "t10k-labels-idx1-ubyte"
    img_gz = raw / "t10k-images-idx3-ubyte.gz"

    def load():
        return load_dataset("fashion-mnist", root=tmp_path, split="test", limit=50)

    img_p.write_bytes(_idx_bytes(imgs))
    lab_p.write_bytes(_idx_bytes(labs))
    ds = load()  # a consistent pair loads
    assert np.array_equal(ds.images[:, 0].numpy(), imgs[:50]) and ds.labels.tolist() == labs[:50].tolist()

    # a labels file of another length: both files and both header counts named
    lab_p.write_bytes(_idx_bytes(labs[:299]))
    with pytest.raises(DataError) as e:
        load()
    msg = str(e.value)
    assert str(img_p) in msg and str(lab_p) in msg and "300 images" in msg and "299 labels" in msg
    lab_p.write_bytes(_idx_bytes(labs))

    # an uncompressed images file cut short (the first 50 items are intact)
    img_p.write_bytes(_idx_bytes(imgs)[: -17 * 784])
    with pytest.raises(DataError, match=rf"{re.escape(str(img_p))} does not match its header.*300 items.*truncated"):
        load()
    with pytest.raises(DataError, match="truncated"):
        read_idx(img_p, limit=5)

    # gzipped: cut short, and a header that counts fewer items than the file holds
    img_p.unlink()
    img_gz.write_bytes(gzip.compress(_idx_bytes(imgs))[:-3000])
    with pytest.raises(DataError, match=rf"{re.escape(str(img_gz))}.*truncated"):
        load()
    img_gz.write_bytes(gzip.compress(_idx_bytes(imgs, count=280)))
    lab_p.write_bytes(_idx_bytes(labs[:280]))
    with pytest.raises(DataError, match=r"header says 280 items.*damaged"):
        load()
    # a valid gzip of two members (as `cat a.gz b.gz` makes): its trailer counts only the last member, and
    # the file still loads
    whole = _idx_bytes(imgs)
    img_gz.write_bytes(gzip.compress(whole[:100_000]) + gzip.compress(whole[100_000:]))
    lab_p.write_bytes(_idx_bytes(labs))
    assert np.array_equal(load().images[:, 0].numpy(), imgs[:50])
    assert read_idx(img_gz).shape == (300, 28, 28)


# ------------------------------------------------------------------------------ decoded-image cache


def test_decoded_cache_keeps_one_entry_per_zip_and_split(data_root, tmp_path, monkeypatch):
    cache = tmp_path / "my-cache"
    monkeypatch.setenv("CLADEC_CACHE_DIR", str(cache))
    root = tmp_path / "digits"
    _write_mnist_folder(root, data_root, {"3": 3, "7": 3}, "train")
    _write_mnist_folder(root, data_root, {"3": 2, "7": 2}, "test", offset=10)
    zpath = tmp_path / "digits.zip"

    def make_zip(mtime):
        with zipfile.ZipFile(zpath, "w") as z:
            for p in sorted(root.rglob("*.png")):
                z.write(p, p.relative_to(root).as_posix())
        os.utime(zpath, (mtime, mtime))

    make_zip(1_600_000_000)
    assert len(load_dataset(f"imagefolder:{zpath}", split="train")) == 6
    assert len(load_dataset(f"imagefolder:{zpath}", split="test")) == 4
    entries = sorted(p.name for p in cache.glob("digits-*.npz"))
    assert len(entries) == 2
    train_old = next(n for n in entries if "-train-" in n)
    key = train_old.rsplit("-", 2)[0]  # digits-<digest>-train
    # files that are not this zip's train entries, and must stay: another zip's entry, a name that only starts
    # like ours, a backup, a note, and a folder named like an entry (cannot be removed: left alone)
    keep = [
        "other-0123456789ab-train-1-2.npz",
        f"{key}-5-0123456789ab-train-1-2.npz",
        f"{key}-1-2.npz.bak",
        f"{key}-notes.txt",
    ]
    for name in keep:
        (cache / name).write_bytes(b"x")
    (cache / f"{key}-3-4.npz").mkdir()
    (cache / f"{key}-1-2.npz").write_bytes(b"an even older entry")

    # the zip is replaced (one more image, another mtime): the next full decode leaves one train entry
    Image.fromarray(np.full((28, 28), 9, np.uint8)).save(root / "train" / "7" / "zzz.png")
    make_zip(1_700_000_000)
    assert len(load_dataset(f"imagefolder:{zpath}", split="train")) == 7
    st = zpath.stat()
    test_entry = next(n for n in entries if "-test-" in n)
    assert set(os.listdir(cache)) == {f"{key}-{st.st_size}-{st.st_mtime_ns}.npz", test_entry, f"{key}-3-4.npz", *keep}
    assert len(load_dataset(f"imagefolder:{zpath}", split="train", limit=7)) == 7  # read from the new entry
