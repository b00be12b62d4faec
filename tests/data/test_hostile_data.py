"""Hostile inputs (issue 15): decompression bombs in image folders, pickled object arrays in ``.npz`` files,
markup in names shown on the HTML pages, and data sets a classifier cannot learn from.

Every data set here is real (Fashion-MNIST images written as PNG files into ``tmp_path``); the hostile parts
are crafted in a few KB (a 20000 × 20000 PNG of one colour is written row by row through zlib, never held
decoded in memory).
"""

from __future__ import annotations

import json
import re
import struct
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cladec import DataError
from cladec.cli.main import main
from cladec.data.dataset import ImageDataset
from cladec.data.load import check_trainable, load_dataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: Fashion-MNIST class index of each class name used below (real images of that class are written).
_FM = {"cat": 0, "dog": 1, "bird": 2, "fish": 3}


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Decoded-image caches go to tmp_path, never to the user's cache; a user's CLADEC_DATA is ignored."""
    monkeypatch.setenv("CLADEC_CACHE_DIR", str(tmp_path / "decoded-cache"))
    monkeypatch.delenv("CLADEC_DATA", raising=False)


def _fm_images() -> tuple[torch.Tensor, torch.Tensor]:
    from helpers.core import fmnist

    return fmnist("test", 400)


def write_folder(root: Path, layout: dict[str, dict[str, int]], classes: dict[str, int] | None = None) -> Path:
    """``root/<split>/<class>/NNN.png``: ``layout[split][class]`` real Fashion-MNIST images of the class
    ``classes[class]`` (default :data:`_FM`, else classes in order)."""
    x, y = _fm_images()
    for split, per_class in layout.items():
        for name, n in per_class.items():
            fm = (classes or _FM)[name]
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            offset = 0 if split == "train" else 20
            for j, i in enumerate((y == fm).nonzero().flatten().tolist()[offset : offset + n]):
                Image.fromarray((x[i, 0].numpy() * 255 + 0.5).astype(np.uint8)).save(d / f"{j:03d}.png")
    return root


def bomb_png(path: Path, width: int = 20000, height: int = 20000) -> Path:
    """A valid 1-bit grey PNG of one colour (black), ``width`` × ``height``, compressed row by row."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + b"\x00" * ((width + 7) // 8)  # filter 0, then the packed bits
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def _zip(root: Path, zpath: Path) -> Path:
    with zipfile.ZipFile(zpath, "w") as z:
        for p in sorted(root.rglob("*.png")):
            z.write(p, p.relative_to(root).as_posix())
    return zpath


# ------------------------------------------------------------------------------------ 1. decompression bombs


@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> Path:
    """The 20000 × 20000 PNG (about 50 KB), written once."""
    return bomb_png(tmp_path_factory.mktemp("bomb") / "huge.png")


def test_bomb_png_is_small_on_disk_and_huge_decoded(bomb):
    data = bomb.read_bytes()
    assert len(data) < 200_000 and struct.unpack(">II", data[16:24]) == (20000, 20000)  # IHDR width, height
    with pytest.raises(Image.DecompressionBombError):  # what the loader used to let through as a traceback
        Image.open(bomb)


def test_bomb_in_an_image_folder_is_refused_naming_the_file_and_the_limit(tmp_path, bomb):
    root = write_folder(tmp_path / "pets", {"train": {"cat": 3, "dog": 3}, "test": {"cat": 2, "dog": 2}})
    target = root / "train" / "dog" / "001-huge.png"
    target.write_bytes(bomb.read_bytes())
    with pytest.raises(DataError) as ei:
        load_dataset(f"imagefolder:{root}", split="train")
    msg = str(ei.value)
    assert str(target) in msg and "400,000,000 pixels" in msg and "89,478,485 pixels" in msg
    assert "MAX_IMAGE_PIXELS" in msg and "downscale" in msg and "\n" not in msg
    # the other split, and a limit that stops before the file, load as before
    assert len(load_dataset(f"imagefolder:{root}", split="test")) == 4
    assert len(load_dataset(f"imagefolder:{root}", split="train", limit=2)) == 2


def test_bomb_in_a_zip_is_refused_and_nothing_is_cached(tmp_path, bomb):
    root = write_folder(tmp_path / "pets", {"train": {"cat": 2, "dog": 2}, "test": {"cat": 1, "dog": 1}})
    (root / "train" / "cat" / "zz.png").write_bytes(bomb.read_bytes())
    zpath = _zip(root, tmp_path / "pets.zip")
    with pytest.raises(
        DataError,
        match=r"image train/cat/zz\.png in .*pets\.zip is too large to load: "
        r"400,000,000 pixels, more than the limit of 89,478,485",
    ):
        load_dataset(f"imagefolder:{zpath}", split="train")
    assert not list(tmp_path.rglob("*.npz"))  # no cache entry of the refused decode


def test_image_over_the_limit_but_under_pils_error_is_refused_too(tmp_path, monkeypatch):
    """PIL only warns between MAX_IMAGE_PIXELS and twice that; the loader refuses from MAX_IMAGE_PIXELS on."""
    root = write_folder(tmp_path / "pets", {"train": {"cat": 2, "dog": 2}})
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 700)  # 28 × 28 = 784 pixels: in PIL's warning range
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning escapes either
        with pytest.raises(
            DataError,
            match=r"train/cat/000\.png in .* is too large to load: 28×28 = 784 pixels, "
            r"more than the limit of 700 pixels per image \(about 26×26",
        ):
            load_dataset(f"imagefolder:{root}", split="train")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 784)  # at the limit: fine
    assert len(load_dataset(f"imagefolder:{root}", split="train")) == 4
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # PIL's way to lift the limit
    assert len(load_dataset(f"imagefolder:{root}", split="train")) == 4


def test_cli_refuses_a_bomb_in_one_line_and_writes_nothing(tmp_path, bomb, capsys):
    root = write_folder(tmp_path / "pets", {"train": {"cat": 2, "dog": 2}, "test": {"cat": 1, "dog": 1}})
    target = root / "test" / "cat" / "big.png"
    target.write_bytes(bomb.read_bytes())
    out = tmp_path / "clf"
    assert (
        main(
            [
                "train-classifier",
                "--dataset",
                f"imagefolder:{root}",
                "--epochs",
                "1",
                "--width",
                "0.25",
                "--out",
                str(out),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("cladec: error: image ") and str(target) in err and "too large" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (out / "classifier.json").exists()


def test_zip_bomb_member_is_refused_before_it_is_read(tmp_path, monkeypatch):
    import cladec.data as data_mod

    root = write_folder(tmp_path / "pets", {"train": {"cat": 2, "dog": 2}})
    zpath = _zip(root, tmp_path / "pets.zip")
    with zipfile.ZipFile(zpath, "a", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("train/dog/zz.png", b"\0" * 300_000)  # ~300 bytes compressed
    monkeypatch.setattr(data_mod.folder, "MAX_ZIP_MEMBER_BYTES", 100_000)  # (the real limit is 512 MiB)
    with pytest.raises(
        DataError,
        match=r"^image train/dog/zz\.png in .*pets\.zip is too large to load: 300,000 "
        r"bytes uncompressed, more than the limit of 100,000 bytes per image file",
    ):
        load_dataset(f"imagefolder:{zpath}", split="train", cache=False)


def _member_offset(zpath: Path, name: str) -> tuple[int, int]:
    """(offset of the local header, offset of the data) of member ``name``."""
    with zipfile.ZipFile(zpath) as z:
        info = z.getinfo(name)
    raw = zpath.read_bytes()
    h = info.header_offset
    n, m = struct.unpack("<HH", raw[h + 26 : h + 30])
    return h, h + 30 + n + m


def test_damaged_and_encrypted_zip_members_are_refused_in_one_line(tmp_path):
    root = write_folder(tmp_path / "pets", {"train": {"cat": 2, "dog": 2}})
    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for f in sorted(root.rglob("*.png")):
            z.write(f, f.relative_to(root).as_posix())
    # damaged: bytes of a member's deflate data changed (zlib error or CRC mismatch, once a traceback)
    raw = bytearray(good.read_bytes())
    _, data = _member_offset(good, "train/cat/001.png")
    raw[data + 20 : data + 60] = bytes(40)
    bad = tmp_path / "damaged.zip"
    bad.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"^cannot read image train/cat/001\.png in .*damaged\.zip: "):
        load_dataset(f"imagefolder:{bad}", split="train", cache=False)
    # encrypted: the flag bit set in the local and central headers (zipfile: RuntimeError, password required)
    raw = bytearray(good.read_bytes())
    local, _ = _member_offset(good, "train/dog/000.png")
    raw[local + 6] |= 1
    central = raw.find(b"PK\x01\x02")
    while raw[central + 46 : central + 46 + 17] != b"train/dog/000.png":
        central = raw.find(b"PK\x01\x02", central + 4)
    raw[central + 8] |= 1
    enc = tmp_path / "encrypted.zip"
    enc.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"^cannot read image train/dog/000\.png in .*encrypted\.zip: .*encrypted"):
        load_dataset(f"imagefolder:{enc}", split="train", cache=False)


# --------------------------------------------------------------------------- 2. object arrays in .npz files


class _Trap:
    """Unpickling this calls ``open(marker, "w")``: the marker file tells whether anything was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _cache_entry(tmp_path: Path) -> Path:
    entries = list((tmp_path / "decoded-cache").glob("pets-*-train-*.npz"))
    assert len(entries) == 1, entries
    return entries[0]


@pytest.mark.parametrize("poisoned", ["images", "labels", "classes", "transparent", "extra", "structured"])
def test_cache_entry_with_object_arrays_is_ignored_with_a_warning_never_unpickled(tmp_path, poisoned):
    root = write_folder(tmp_path / "pets", {"train": {"cat": 3, "dog": 3}})
    zpath = _zip(root, tmp_path / "pets.zip")
    first = load_dataset(f"imagefolder:{zpath}", split="train")  # writes the cache entry
    entry = _cache_entry(tmp_path)
    with np.load(entry, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    marker = tmp_path / "unpickled"
    trap = np.empty(2, dtype=object)
    trap[:] = [_Trap(marker), _Trap(marker)]
    if poisoned == "extra":
        arrays["note"] = trap
    elif poisoned == "structured":
        rec = np.empty(2, dtype=[("n", "i4"), ("o", "O")])
        rec["o"] = [_Trap(marker), _Trap(marker)]
        arrays["labels"] = rec
    else:
        arrays[poisoned] = trap
    with entry.open("wb") as f:
        np.savez(f, **arrays)  # np.save pickles the objects (allow_pickle=True is its default)
    mtime = entry.stat().st_mtime_ns

    name = "note" if poisoned == "extra" else ("labels" if poisoned == "structured" else poisoned)
    with pytest.warns(
        UserWarning,
        match=rf"ignored the decoded-image cache entry {re.escape(str(entry))}: it holds "
        rf"arrays of Python objects \({name}\), which cladec never loads \(reading "
        r"them means unpickling, which can run any code",
    ):
        again = load_dataset(f"imagefolder:{zpath}", split="train")
    assert not marker.exists()  # nothing was unpickled
    assert torch.equal(again.images, first.images) and torch.equal(again.labels, first.labels)
    # the entry is rebuilt: a clean one replaces it, read back without a warning
    assert entry.stat().st_mtime_ns != mtime
    with np.load(entry, allow_pickle=False) as z:
        assert sorted(z.files) == ["classes", "images", "labels", "transparent"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(load_dataset(f"imagefolder:{zpath}", split="train").images, first.images)
    assert not marker.exists()


def test_no_npz_reader_in_the_package_allows_pickle():
    """The decoded-image cache is the only ``.npz`` cladec reads; every np.load says allow_pickle=False."""
    src = Path(__file__).resolve().parents[2] / "src" / "cladec"
    calls = [
        (p.name, line)
        for p in src.rglob("*.py")
        for line in p.read_text().splitlines()
        if re.search(r"\bnp\.load\(|numpy\.load\(", line)
    ]
    assert calls and all("allow_pickle=False" in line for _, line in calls), calls


# ------------------------------------------------------------------------------------ 3. markup in the pages

#: Class folder names with markup (a folder name cannot hold "/", so "</script>" comes in through the data set's
#: path and, below, through the class names a classifier checkpoint records).
HOSTILE = ("<script>alert(1)", "<img src=x onerror=alert(2)>", "a&b \"q\" 'x' <!--")
CLOSING = ("</script><script>alert(3)</script>", "<!--</script>", "x\u2028y")


def _check_page(html: str, names: tuple[str, ...], data_id: str) -> dict:
    """No hostile name appears raw; the page's own scripts are the only <script> tags; its data is valid JSON
    holding the names intact."""
    for name in names:
        if "<" in name or "&" in name:  # (U+2028 is harmless in HTML text; script_json escapes it in the JSON)
            assert name not in html, f"raw {name!r} in the page"
    assert "alert(1)</script>" not in html and "<img src=x" not in html and "<img src=y" not in html
    assert re.findall(r"<script\b[^>]*>", html) == [
        f'<script type="application/json" id="{data_id}">',
        f'<script src="static/{data_id.split("-")[0]}.js">',
    ]
    m = re.search(rf'<script type="application/json" id="{data_id}">(.*?)</script>', html, re.S)
    return json.loads(m.group(1))


@pytest.fixture(scope="module")
def hostile_demo(tmp_path_factory) -> tuple[Path, Path]:
    """A real `cladec demo` (tiny settings) on an image folder whose path and class folders hold markup."""
    import cladec
    from cladec.demo import run_demo

    base = tmp_path_factory.mktemp("hostile")
    folder = base / "<script>alert(1)</script>" / "imgs"  # the data set's name carries `</script>` too
    write_folder(
        folder,
        {"train": dict.fromkeys(HOSTILE, 12), "test": dict.fromkeys(HOSTILE, 4)},
        classes={n: k for k, n in enumerate(HOSTILE)},
    )
    img = folder / "train" / HOSTILE[0] / "000.png"
    img.rename(img.with_name("<img src=y onerror=alert(4)>.png"))
    out = base / "demo"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", cladec.CollapseWarning)
        run_demo(
            out,
            quick=True,
            dataset=f"imagefolder:{folder}",
            limit=36,
            test_limit=12,
            epochs=1,
            decoder_epochs=1,
            width=0.25,
            n_images=6,
            verbose=False,
            log=lambda s: None,
        )
    return out, folder


def test_demo_report_escapes_class_data_set_and_file_names(hostile_demo):
    out, folder = hostile_demo
    pages = sorted(out.rglob("*.html"))
    assert pages == [out / "report" / "index.html"]
    html = pages[0].read_text(encoding="utf-8")
    data = _check_page(html, HOSTILE, "report-data")
    assert data["gallery"]["classes"] == sorted(HOSTILE)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # shown, escaped (class filter, labels, data set)


@pytest.fixture(scope="module")
def closing_demo(hostile_demo, tmp_path_factory) -> Path:
    """The demo with its classifier's recorded class names replaced by :data:`CLOSING` (as a hand-edited or
    foreign ``classifier.json`` may hold them): the predictions on the pages are named with them."""
    import shutil

    out = tmp_path_factory.mktemp("closing") / "demo"
    shutil.copytree(hostile_demo[0], out)
    cfg_path = out / "classifier" / "classifier.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["dataset"]["classes"] = list(CLOSING)
    cfg_path.write_text(json.dumps(cfg))
    return out


def test_study_page_escapes_class_names(hostile_demo, closing_demo, tmp_path):
    from cladec.report.study import build_study

    index = build_study(hostile_demo[0] / "runs" / "conv4", tmp_path / "study", items=6)
    data = _check_page(index.read_text(encoding="utf-8"), HOSTILE, "study-data")
    assert {it["true_label"] for it in data["items"]} <= set(HOSTILE)
    index = build_study(closing_demo / "runs" / "conv2", tmp_path / "study2", items=6)
    data = _check_page(index.read_text(encoding="utf-8"), HOSTILE + CLOSING, "study-data")
    assert {it["predicted"] for it in data["items"]} <= set(CLOSING)


def test_report_built_by_the_cli_escapes_names_that_would_close_the_script(closing_demo, tmp_path):
    assert main(["report", str(closing_demo), "--out", str(tmp_path / "site"), "--n-images", "3"]) == 0
    html = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    data = _check_page(html, HOSTILE + CLOSING, "report-data")
    assert data["gallery"]["pred_classes"] == list(CLOSING) and data["gallery"]["classes"] == sorted(HOSTILE)
    assert "&lt;/script&gt;&lt;script&gt;alert(3)&lt;/script&gt;" in html  # the predictions, shown escaped


#: Layer (module) names a user's architecture may have: PyTorch allows anything but "." in them.
LAYERS = {"middle": "<b>c/1</b>", "last": "<script>alert(5)</script>"}


def _hostile_net(in_channels: int = 1, num_classes: int = 10, width: float = 1.0, **_: object):
    """A small CNN whose layers are named with markup and '/' (registered as 'hostile-test-net')."""
    from collections import OrderedDict

    from torch import nn

    net = nn.Sequential(
        OrderedDict(
            [
                (LAYERS["middle"], nn.Conv2d(in_channels, 4, 3, padding=1)),
                ("r1", nn.ReLU()),
                (LAYERS["last"], nn.Conv2d(4, 4, 3, stride=2, padding=1)),
                ("r2", nn.ReLU()),
                ("pool", nn.AdaptiveAvgPool2d(4)),
                ("flat", nn.Flatten()),
                ("fc", nn.Linear(64, num_classes)),
            ]
        )
    )
    net.default_layers = dict(LAYERS)
    return net


def test_demo_with_layer_names_holding_markup_and_slashes(hostile_demo, tmp_path, monkeypatch):
    """`cladec demo` once wrote runs/<layer>/ and triplets-<layer>.png from the raw layer name (a '/' in it: a
    FileNotFoundError traceback); the page must show the names escaped."""
    from cladec.demo import run_demo
    from cladec.models import _registry, register_model

    # registered for this test only: the registry is global (list_models() elsewhere must not see it)
    monkeypatch.setattr(_registry, "_MODELS", dict(_registry._MODELS))
    register_model("hostile-test-net")(_hostile_net)
    _, folder = hostile_demo
    out = tmp_path / "demo"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = run_demo(
            out,
            quick=True,
            dataset=f"imagefolder:{folder}",
            arch="hostile-test-net",
            limit=24,
            test_limit=6,
            epochs=1,
            decoder_epochs=1,
            n_images=3,
            verbose=False,
            log=lambda m: None,
        )
    assert [L["layer"] for L in s["layers"]] == [LAYERS["last"], LAYERS["middle"]]
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["_b_c_1__b_", "_script_alert_5___script_"]
    assert (out / "triplets-_script_alert_5___script_.png").is_file()
    html = (out / "report" / "index.html").read_text(encoding="utf-8")
    data = _check_page(html, HOSTILE + tuple(LAYERS.values()), "report-data")
    assert sorted(L["name"] for L in data["gallery"]["layers"]) == sorted(LAYERS.values())
    assert "&lt;script&gt;alert(5)&lt;/script&gt;" in html


# ------------------------------------------------------------------------- 4. data a classifier cannot learn


def test_one_class_folder_is_refused(tmp_path):
    root = write_folder(tmp_path / "cats", {"train": {"cat": 5}, "test": {"cat": 2}})
    train, test = (load_dataset(f"imagefolder:{root}", split=s) for s in ("train", "test"))
    with pytest.raises(DataError) as ei:
        check_trainable(train, test)
    assert str(ei.value) == (
        f"a classifier needs images of at least 2 classes; imagefolder:{root} (train) has 1: 'cat' (5 images); "
        "give the folder one sub-folder of images per class under train/ (and test/), at least 2"
    )
    with pytest.raises(DataError, match="has 1: 'cat' \\(5 images\\)"):
        check_trainable(train)


def test_empty_second_class_folder_counts_as_missing(tmp_path):
    root = write_folder(tmp_path / "pets", {"train": {"cat": 4}, "test": {"cat": 2, "dog": 2}})
    (root / "train" / "dog").mkdir()  # a class folder without images
    train = load_dataset(f"imagefolder:{root}", split="train")
    assert train.classes == ["cat", "dog"]
    with pytest.raises(DataError, match=r"at least 2 classes; .* has 1: 'cat' \(4 images\)"):
        check_trainable(train, load_dataset(f"imagefolder:{root}", split="test"))


def test_test_classes_without_training_images_are_named_with_their_counts(tmp_path):
    root = write_folder(
        tmp_path / "pets", {"train": {"cat": 4, "dog": 4}, "test": {"bird": 3, "cat": 2, "dog": 2, "fish": 1}}
    )
    train, test = (load_dataset(f"imagefolder:{root}", split=s) for s in ("train", "test"))
    with pytest.raises(DataError) as ei:
        check_trainable(train, test)
    assert str(ei.value) == (
        f"the test data imagefolder:{root} (test) has images of 2 classes the training data imagefolder:{root} "
        "(train) has no images of, so the classifier could never predict them: 'bird' (3 test images), "
        "'fish' (1 test image); add training images of them (train/<class>/ in the folder), or remove them from "
        "the test data"
    )
    check_trainable(train, test.subset((test.labels == 1) | (test.labels == 2)))  # cat and dog only: fine


def test_a_limit_that_cuts_classes_advises_a_larger_limit(tmp_path):
    root = write_folder(
        tmp_path / "pets", {"train": {"bird": 3, "cat": 3, "dog": 3}, "test": {"bird": 1, "cat": 1, "dog": 1}}
    )
    test = load_dataset(f"imagefolder:{root}", split="test")
    one = load_dataset(f"imagefolder:{root}", split="train", limit=1)
    with pytest.raises(
        DataError,
        match=r"has 1: 'bird' \(1 image\); the training split was cut to its first 1 "
        r"images \(limit=1\): a larger --limit may include more classes$",
    ):
        check_trainable(one, test)
    two = load_dataset(f"imagefolder:{root}", split="train", limit=2)
    with pytest.raises(
        DataError,
        match=r"could never predict it: 'dog' \(1 test image\); the training split was cut "
        r"to its first 2 images \(limit=2\): a larger --limit may include it$",
    ):
        check_trainable(two, test)
    check_trainable(load_dataset(f"imagefolder:{root}", split="train", limit=3), test)
    assert load_dataset(f"imagefolder:{root}", split="train", limit=50).limit is None  # not cut: no advice


def test_check_trainable_on_real_fashion_mnist_and_tensor_pairs(data_root):
    train = load_dataset("fashion-mnist", root=data_root, split="train", limit=5)
    assert train.limit == 5 and len(set(train.labels.tolist())) < 10
    test = load_dataset("fashion-mnist", root=data_root, split="test", limit=50)
    with pytest.raises(
        DataError,
        match=r"fashion-mnist \(test\) has images of \d classes .* fashion-mnist \(train\) "
        r"has no images of.*'Trouser' \(\d+ test images\).*a larger --limit",
    ):
        check_trainable(train, test)
    check_trainable(load_dataset("fashion-mnist", root=data_root, split="train", limit=100), test)
    x, y = train.tensors()
    check_trainable((x, y))
    with pytest.raises(DataError, match=r"the training data has 1: '3' \(4 images\)"):
        check_trainable((x[:4], torch.full((4,), 3)))
    with pytest.raises(DataError, match=r"could never predict it: '9' \(2 test images\)"):
        check_trainable((x[:4], torch.tensor([0, 1, 0, 1])), (x[:2], torch.tensor([9, 9])))
    check_trainable(torch.utils.data.TensorDataset(x, y))  # other kinds of data are not checked
    other = ImageDataset(x, y, [f"c{k}" for k in range(10)], name="renamed", split="test")
    with pytest.raises(DataError, match=r"names other classes than the training data .*\['c0', 'c1'"):
        check_trainable(train, other)


def test_demo_and_its_cli_refuse_a_one_class_folder_before_training(tmp_path, capsys):
    from cladec.demo import run_demo

    root = write_folder(tmp_path / "cats", {"train": {"cat": 6}, "test": {"cat": 2}})
    out = tmp_path / "demo"
    with pytest.raises(DataError, match="at least 2 classes; .* has 1: 'cat' \\(6 images\\)"):
        run_demo(out, quick=True, dataset=f"imagefolder:{root}", verbose=False, log=lambda s: None)
    assert not out.exists()
    assert main(["demo", "--quick", "--dataset", f"imagefolder:{root}", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cladec: error: a classifier needs images of at least 2 classes") and err.count("\n") == 1
    assert not out.exists()


def test_train_classifier_and_its_cli_refuse_untrainable_data(tmp_path, capsys):
    """train_classifier (and `cladec train-classifier`) trained on one class to "accuracy 1.0 (chance 1.00)", and
    on a test split with classes it never saw to accuracy 0; lr 1e30 started training (also streamed)."""
    from torch.utils.data import DataLoader, TensorDataset

    from cladec import ConfigError
    from cladec.models import create_model
    from cladec.models.training import train_classifier

    root = write_folder(tmp_path / "pets", {"train": {"cat": 4}, "test": {"cat": 2, "dog": 2}})
    train, test = (load_dataset(f"imagefolder:{root}", split=s) for s in ("train", "test"))
    net = create_model("vgg-paper", in_channels=train.image_shape[0], num_classes=2, width=0.25)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(DataError, match="at least 2 classes"):
        train_classifier(net, train, 1, test_data=test, verbose=False)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # nothing was trained
    x, y = train.tensors()
    for data in ((x, y), DataLoader(TensorDataset(x, y), batch_size=2)):
        with pytest.raises(ConfigError, match=r"lr must be a finite number in \(0, 10\]"):
            train_classifier(net, data, 1, lr=1e30, verbose=False)
    with pytest.raises(ConfigError, match="seed must be an integer"):
        train_classifier(net, (x, y), 1, seed=2**80, verbose=False)
    rc = main(
        [
            "train-classifier",
            "--dataset",
            f"imagefolder:{root}",
            "--arch",
            "vgg-paper",
            "--epochs",
            "1",
            "--out",
            str(tmp_path / "clf"),
            "--quiet",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("cladec: error: ") and err.count("\n") == 1 and "at least 2 classes" in err
    assert not (tmp_path / "clf").exists()
