"""Data that does not fit in memory (issue 17, item 5): peak memory and speed of a ClaDec fit on an image folder read
lazily (``load_dataset(..., lazy=True)``, decoded and resized per batch, ``workers`` DataLoader processes) against
the in-memory path, for a small and a large number of images.

The image folder is written once (``--folder``, reused when it is there): real CIFAR-10 training images resized
to ``--size`` px (antialiased bilinear) and saved as JPEG (quality 90, as an ImageNet-style folder holds),
``train/<class>/<index>.jpg``, plus 200 test images. Each configuration runs in its own process (so that peak
memory is its own): ``ClaDec(vgg-paper at width 0.25, random init, layer conv2)`` fitted for one epoch, batch
``--batch-size``, on the first ``n`` images, through :func:`cladec.runs.fit_run`-like steps (the Python API:
``load_dataset`` then ``ClaDec.fit``). Reported per configuration: the peak RSS of the main process
(``ru_maxrss``), the peak of the worker processes' RSS summed (sampled every 0.2 s; forked workers share pages
with the parent, so RSS counts those twice), the peak PSS of all of them together (shared pages counted once:
what the fit really takes), the time to load the data set (the in-memory path decodes and resizes everything
there; the lazy path lists the files) and the fit's images/s (after a warm-up fit on 64 images, so one-time
costs are not counted).

The in-memory path holds the images as float32 at ``--size``: 20,000 images at 128 px are 3.9 GB, and its fit
holds more beside (the activation cache); it runs only where ``--eager-large`` is given (else the row says
"skipped").

Examples::

    python benchmarks/data_memory.py --data-root /work/shared/data                   # ~15 min on 2 CPU cores
    python benchmarks/data_memory.py --data-root /work/shared/data --quick           # smoke run, seconds
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ONE = "--one"  # runs one configuration (in a child process) and prints one JSON line


def write_folder(folder: Path, data_root: str, n_train: int, n_test: int, size: int) -> None:
    """``folder/{train,test}/<class>/<index>.jpg``: the first CIFAR-10 images resized to ``size`` px."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from PIL import Image

    from cladec.data import load_dataset

    done = folder / ".complete"
    if done.exists() and json.loads(done.read_text()) == {"n_train": n_train, "n_test": n_test, "size": size}:
        return
    for split, n in (("train", n_train), ("test", n_test)):
        ds = load_dataset("cifar10", root=data_root, split=split, limit=n)  # native 32 px, uint8: 61 MB for 20,000
        for start in range(0, n, 1000):  # resized 1,000 at a time: this script itself must not hold them all
            x = ds.images[start : start + 1000].to(torch.float32).div_(255.0)
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
            arr = x.clamp_(0, 1).mul_(255).round_().to(torch.uint8).permute(0, 2, 3, 1).numpy()
            for i in range(len(arr)):
                d = folder / split / ds.classes[int(ds.labels[start + i])]
                d.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.ascontiguousarray(arr[i])).save(d / f"{start + i:06d}.jpg", quality=90)
    done.write_text(json.dumps({"n_train": n_train, "n_test": n_test, "size": size}))


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids = [int(k) for k in (task / "children").read_text().split()]
        except OSError:
            continue
        for k in kids:
            out += [k, *_children(k)]
    return out


def _kb(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class Sampler(threading.Thread):
    """Samples, every 0.2 s, the RSS of this process's children (the DataLoader workers) and the PSS of this process
    and its children together (shared pages counted once: the memory the fit really takes)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.children_rss_kb = self.total_pss_kb = 0

    def run(self) -> None:
        me = os.getpid()
        while not self.stop.wait(0.2):
            kids = _children(me)
            self.children_rss_kb = max(self.children_rss_kb, sum(_kb(k, "Rss") for k in kids))
            self.total_pss_kb = max(self.total_pss_kb, _kb(me, "Pss") + sum(_kb(k, "Pss") for k in kids))


def run_one(cfg: dict) -> dict:
    """One fit in this process; returns its measurements."""
    import torch

    from cladec import ClaDec
    from cladec.data import load_dataset
    from cladec.models import create_model

    sampler = Sampler()
    sampler.start()
    torch.manual_seed(0)
    t0 = time.perf_counter()
    ds = load_dataset(f"imagefolder:{cfg['folder']}", limit=cfg["n"], lazy=cfg["lazy"])
    load_s = time.perf_counter() - t0
    model = create_model("vgg-paper", in_channels=3, num_classes=10, width=0.25).eval()
    kw = dict(batch_size=cfg["batch_size"], lr=1e-3, seed=0, verbose=False, workers=cfg["workers"])
    if cfg.get("warm_up", True):  # one-time costs are not timed
        ClaDec(model, "conv2").fit(ds.subset(range(64)), epochs=1, **kw)
    e = ClaDec(model, "conv2")
    t0 = time.perf_counter()
    e.fit(ds, epochs=1, **kw)
    fit_s = time.perf_counter() - t0
    sampler.stop.set()
    sampler.join()
    return {
        "load_s": round(load_s, 2),
        "fit_s": round(fit_s, 2),
        "images_per_s": round(cfg["n"] / fit_s, 1),
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "workers_rss_mb": sampler.children_rss_kb / 1024,
        "total_pss_mb": sampler.total_pss_kb / 1024,
        "loss": round(float(e.history[-1]["loss"]), 4),
    }


def measure(cfg: dict) -> dict:
    """Run one configuration in a child process."""
    import cladec

    src = str(Path(cladec.__file__).resolve().parents[1])  # the child imports the cladec this process imported
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]))
    res = subprocess.run(
        [sys.executable, __file__, ONE, json.dumps(cfg)], capture_output=True, text=True, env=env, check=False
    )
    if res.returncode != 0:
        raise SystemExit(f"configuration {cfg} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default=os.environ.get("CLADEC_DATA"), help="where CIFAR-10 is")
    p.add_argument("--folder", help="the image folder to write once and reuse (default: a temporary folder)")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--small", type=int, default=2000, help="images of the small fit")
    p.add_argument("--large", type=int, default=20000, help="images of the large fit")
    p.add_argument("--workers", default="0,2", help="worker counts of the lazy fits")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--eager-large", action="store_true", help="also fit the large set in memory (~4 GB at 128 px)")
    quick = "smoke run: 32 px, 128 / 256 images, in this process (peaks not each configuration's own), no warm-up"
    p.add_argument("--quick", action="store_true", help=quick)
    a = p.parse_args(argv)
    if a.quick:
        a.size, a.small, a.large, a.batch_size = 32, 128, 256, 64
    tmp = None
    if a.folder is None:
        tmp = tempfile.TemporaryDirectory(prefix="cladec-data-memory-")
        a.folder = tmp.name
    folder = Path(a.folder)
    t0 = time.perf_counter()
    write_folder(folder, a.data_root, a.large, 200, a.size)
    print(f"image folder {folder}: {a.large} training images at {a.size} px ({time.perf_counter() - t0:.0f} s)")
    workers = [int(w) for w in a.workers.split(",")]
    plan = [("lazy", n, w) for n in (a.small, a.large) for w in workers] + [("in memory", a.small, 0)]
    plan += [("in memory", a.large, 0)]
    if a.quick:  # the smoke run: the large set lazily, the small one in memory
        plan = [("lazy", a.large, w) for w in workers] + [("in memory", a.small, 0)]
    rows = []
    for mode, n, w in plan:
        cfg = dict(folder=str(folder), n=n, lazy=mode == "lazy", workers=w, batch_size=a.batch_size)
        if mode == "in memory" and n == a.large and not a.eager_large:
            rows.append(dict(mode=mode, n=n, workers=w, skipped=True))
            continue
        cfg["warm_up"] = not a.quick
        rows.append(dict(mode=mode, n=n, workers=w, **(run_one(cfg) if a.quick else measure(cfg))))
        print(f"  done: {rows[-1]}", flush=True)
    gb = a.large * 3 * a.size * a.size * 4 / 1e9
    print(
        f"\n{_dt.date.today()}, {platform.processor() or platform.machine()}, torch threads "
        f"{os.environ.get('OMP_NUM_THREADS', 'default')}; ClaDec(vgg-paper ×0.25, conv2), 1 epoch, batch "
        f"{a.batch_size}, {a.size} px JPEG folder\n"
    )
    head = "| data | images | workers | peak RSS main (MB) | peak RSS workers (MB) | peak PSS all (MB) | load (s) |"
    print(head + " fit images/s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if r.get("skipped"):
            print(f"| {r['mode']} | {r['n']} | - | skipped: {gb:.1f} GB as float32 (--eager-large) | | | | |")
            continue
        wk = f"{r['workers_rss_mb']:.0f}" if r["workers"] else "-"
        print(
            f"| {r['mode']} | {r['n']} | {r['workers']} | {r['rss_mb']:.0f} | {wk} | {r['total_pss_mb']:.0f} | "
            f"{r['load_s']:.1f} | {r['images_per_s']:.0f} |"
        )
    if tmp is not None:
        tmp.cleanup()
    return rows


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == ONE:
        print(json.dumps(run_one(json.loads(sys.argv[2]))))
    else:
        main()
