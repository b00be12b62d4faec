#!/usr/bin/env python
"""Build the embedded ``fashion-mnist-mini`` data set shipped inside the cladec package.

It takes, from the official Fashion-MNIST IDX files, the first 600 training images of every class and the
first 100 test images of every class (first = lowest index in the official file order), keeps them in the
official order, and writes them as gzipped IDX files (gzip level 9, no file name or time stamp in the gzip
header, so the output is byte-for-byte reproducible) with the torchvision file names:

    src/cladec/_data/fashion-mnist-mini/train-images-idx3-ubyte.gz   6,000 images (600 per class)
    src/cladec/_data/fashion-mnist-mini/train-labels-idx1-ubyte.gz
    src/cladec/_data/fashion-mnist-mini/t10k-images-idx3-ubyte.gz    1,000 images (100 per class)
    src/cladec/_data/fashion-mnist-mini/t10k-labels-idx1-ubyte.gz

plus README.md / LICENSE.txt noting the source and licence.

Usage:
    python scripts/make_embedded_dataset.py [--source DIR] [--out DIR]

``--source`` defaults to ``../shared/data/FashionMNIST/raw`` next to the repository (any folder holding the
four official ``*-ubyte.gz`` or un-gzipped files works); ``--out`` defaults to the package folder above.
Only numpy and the standard library are used.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import os
import struct
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO.parent / "shared" / "data" / "FashionMNIST" / "raw"
DEFAULT_OUT = REPO / "src" / "cladec" / "_data" / "fashion-mnist-mini"
PER_CLASS = {"train": 600, "t10k": 100}
NUM_CLASSES = 10
OFFICIAL_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}

LICENSE_TEXT = """\
The files in this folder are a subset of Fashion-MNIST
(https://github.com/zalandoresearch/fashion-mnist), by Zalando Research,
released under the MIT License:

The MIT License (MIT)

Copyright © 2017 Zalando SE, https://tech.zalando.com

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the “Software”), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED “AS IS”, WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""

README_TEMPLATE = """\
# fashion-mnist-mini

A small, class-balanced subset of **Fashion-MNIST** (Zalando Research, MIT licence, see `LICENSE.txt`),
embedded in cladec so that demos and tests run without downloading anything
(`cladec.data.load_dataset("fashion-mnist-mini")`).

| file | images | per class |
| --- | --- | --- |
| `train-images-idx3-ubyte.gz` / `train-labels-idx1-ubyte.gz` | {n_train:,} | {per_train} |
| `t10k-images-idx3-ubyte.gz` / `t10k-labels-idx1-ubyte.gz` | {n_test:,} | {per_test} |

Format: gzipped IDX, the same as the official files and torchvision's `FashionMNIST/raw/` (28x28 uint8 grey
images; labels 0-9: T-shirt/top, Trouser, Pullover, Dress, Coat, Sandal, Shirt, Sneaker, Bag, Ankle boot).

How it was made (`scripts/make_embedded_dataset.py` in the cladec repository): from the official training
file, take for every class the first {per_train} images in the official order (lowest indices); from the
official test file, the first {per_test} of every class; keep the selected images in their official order;
write them as IDX, gzip level 9 with an empty file name and time stamp 0 in the gzip header.

Source files used (MD5 of each input file, and whether it equals the MD5 of the official download; a
copy that was re-compressed, or rebuilt from another distribution of Fashion-MNIST, has a different MD5):
{sources}

SHA-256 of the files written:
{outputs}
"""


def read_idx(path: Path) -> np.ndarray:
    """Read a (gzipped) IDX file of uint8 data."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08:
        raise SystemExit(f"{path} is not a uint8 IDX file")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def idx_bytes(arr: np.ndarray) -> bytes:
    """Serialise a uint8 array as IDX."""
    header = struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + np.ascontiguousarray(arr, dtype=np.uint8).tobytes()


def gzip_bytes(data: bytes) -> bytes:
    """Deterministic gzip (level 9, no name, mtime 0)."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=buf, mtime=0) as gz:
        gz.write(data)
    return buf.getvalue()


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; package data must be world-readable
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def find(source: Path, name: str) -> Path:
    for cand in (source / name, source / name.removesuffix(".gz")):
        if cand.is_file():
            return cand
    raise SystemExit(f"missing {source / name}")


def select_first_per_class(labels: np.ndarray, per_class: int) -> np.ndarray:
    """Indices (ascending) of the first ``per_class`` items of every class."""
    picked = [np.flatnonzero(labels == c)[:per_class] for c in range(NUM_CLASSES)]
    for c, p in enumerate(picked):
        if len(p) < per_class:
            raise SystemExit(f"class {c} has only {len(p)} images, need {per_class}")
    return np.sort(np.concatenate(picked))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="folder with the official IDX files")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    args = ap.parse_args()

    sources, outputs, counts = [], [], {}
    for prefix, per_class in PER_CLASS.items():
        img_path = find(args.source, f"{prefix}-images-idx3-ubyte.gz")
        lab_path = find(args.source, f"{prefix}-labels-idx1-ubyte.gz")
        images, labels = read_idx(img_path), read_idx(lab_path)
        idx = select_first_per_class(labels, per_class)
        counts[prefix] = len(idx)
        for src, arr, kind in ((img_path, images, "images-idx3"), (lab_path, labels, "labels-idx1")):
            md5 = hashlib.md5(src.read_bytes()).hexdigest()
            official = "official" if OFFICIAL_MD5.get(src.name) == md5 else "not the official download's MD5"
            sources.append(f"- `{src.name}`: md5 {md5} ({official})")
            out_name = f"{prefix}-{kind}-ubyte.gz"
            data = gzip_bytes(idx_bytes(arr[idx]))
            write_atomic(args.out / out_name, data)
            outputs.append(f"- `{out_name}`: {hashlib.sha256(data).hexdigest()} ({len(data):,} bytes)")
            print(f"wrote {args.out / out_name} ({len(idx)} items, {len(data):,} bytes)")

    write_atomic(args.out / "LICENSE.txt", LICENSE_TEXT.encode())
    readme = README_TEMPLATE.format(
        n_train=counts["train"],
        n_test=counts["t10k"],
        per_train=PER_CLASS["train"],
        per_test=PER_CLASS["t10k"],
        sources="\n".join(sources),
        outputs="\n".join(outputs),
    )
    write_atomic(args.out / "README.md", readme.encode())
    print(f"wrote {args.out / 'LICENSE.txt'} and {args.out / 'README.md'}")


if __name__ == "__main__":
    main()
