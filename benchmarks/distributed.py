"""Data-parallel fitting (issue 18): images/s of a ClaDec + RefAE fit on 1 and on several ranks of ``torchrun``.

Each configuration is one ``torchrun --standalone --nproc_per_node=K`` job (gloo on the CPU, NCCL on GPUs; K = 1
is a plain process: cladec wraps nothing in DDP on one rank) that fits ``cladec.fit_together([ClaDec, RefAE])``
for one layer of the paper's VGG-style classifier (random weights, 28 px Fashion-MNIST, the first ``--images``
training images) with the global batch ``--batch-size``. Rank 0 reports the wall time of the fit (the activation
cache included) after a warm-up fit of one epoch on 512 images, and the engine's own seconds. On the CPU the ranks
share the machine's cores: ``--configs RANKSxTHREADS,...`` (default ``1x1,1x2,2x1``), so 1 rank × 2 threads and
2 ranks × 1 thread use the same two cores and their ratio is what data-parallel fitting gains (or loses) on one
machine. On GPUs (``--device cuda``) the 1-rank row is the single-device fast path (CUDA graphs on); with K > 1
ranks CUDA graphs are off, so the ratio over K also holds the cost of DDP.

The table ends with what the measured rate means for an ImageNet-sized epoch (1.28M images) and, on GPUs, on 8 and
64 of them at the measured parallel efficiency (a paper estimate: it assumes the efficiency measured holds there).

Examples::

    python benchmarks/distributed.py --data-root /work/shared/data                 # 2 CPU cores: ~5 min
    python benchmarks/distributed.py --device cuda --configs 1x4,2x4,8x4 --batch-size 1024 --images 60000
    python benchmarks/distributed.py --data-root /work/shared/data --quick         # smoke run
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

WORKER = "--worker"
IMAGENET = 1_281_167


def worker(args: argparse.Namespace) -> None:
    """One rank of a configuration: fit, then rank 0 prints one JSON line."""
    import torch
    import torch.distributed as dist

    torch.set_num_threads(args.threads)
    size = int(os.environ.get("WORLD_SIZE", "1"))
    dev = torch.device(args.device)
    if size > 1:
        if dev.type == "cuda":
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    import cladec
    from cladec.data import load_dataset
    from cladec.models import create_model

    torch.manual_seed(0)
    clf = create_model("vgg-paper", in_channels=1, num_classes=10, width=args.width).to(dev).eval()
    data = load_dataset("fashion-mnist", root=args.data_root, split="train", limit=args.images)

    def fit(ds, epochs):
        e = cladec.ClaDec(clf, args.layer, alpha=0.001)
        r = cladec.RefAE.like(e, init_seed=0)
        if size > 1:
            dist.barrier()
        t0 = time.perf_counter()
        cladec.fit_together([e, r], ds, epochs=epochs, batch_size=args.batch_size, lr=1e-3, seed=0, verbose=False)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if size > 1:
            dist.barrier()
        return time.perf_counter() - t0, e.fit_config["seconds"]

    if not args.quick:  # warm-up: one-time costs (threads, allocator, kernels)
        fit(data.subset(range(min(512, len(data)))), 1)
    wall, engine = fit(data, args.epochs)
    if not dist.is_initialized() or dist.get_rank() == 0:
        n = len(data) * args.epochs
        print(json.dumps({"ranks": size, "wall_s": round(wall, 2), "engine_s": engine, "images_per_s": n / wall}))
    if size > 1:
        dist.destroy_process_group()


def run(args: argparse.Namespace, config: str) -> dict:
    ranks, threads = (int(v) for v in config.lower().split("x"))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}", __file__]
    cmd += [WORKER, "--threads", str(threads), "--device", args.device, "--layer", args.layer]
    cmd += ["--images", str(args.images), "--epochs", str(args.epochs), "--batch-size", str(args.batch_size)]
    cmd += ["--width", str(args.width), "--data-root", str(args.data_root)] + (["--quick"] if args.quick else [])
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), GLOO_SOCKET_IFNAME=os.environ.get("GLOO_SOCKET_IFNAME", "lo"))
    with tempfile.TemporaryDirectory() as cwd:
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd)
    if res.returncode != 0:
        raise SystemExit(f"{ranks} rank(s) failed:\n{res.stderr[-3000:]}")
    row = json.loads([line for line in res.stdout.splitlines() if line.startswith("{")][-1])
    row["threads"] = threads
    return row


def main(argv: list[str] | None = None) -> list[dict] | None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(WORKER, action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--data-root", default=os.environ.get("CLADEC_DATA", "../shared/data"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--configs", default="1x1,1x2,2x1", help="RANKSxTHREADS per rank, comma-separated (1x1,1x2,2x1)")
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--layer", default="conv3")
    p.add_argument("--width", type=float, default=1.0, help="classifier width (1.0: the paper's)")
    p.add_argument("--images", type=int, default=4096)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--quick", action="store_true", help="smoke run: at most 512 images, width 0.25, no warm-up")
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return None
    if args.quick:
        args.images, args.width = min(args.images, 512), 0.25
    args.data_root = os.path.abspath(args.data_root)  # each configuration runs in its own scratch folder
    rows = [run(args, c) for c in args.configs.split(",")]
    base = rows[0]["images_per_s"]
    print(
        f"\n{_dt.date.today()}  {platform.node()}  {platform.processor() or platform.machine()}  device {args.device}"
    )
    print(f"ClaDec + RefAE (fit_together), vgg-paper width {args.width:g} {args.layer}, {args.images} Fashion-MNIST")
    print(f"images × {args.epochs} epoch(s), global batch {args.batch_size}\n")
    print("| ranks | threads/rank | wall s | engine s | images/s | vs the first row |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        cells = [r["ranks"], r["threads"], r["wall_s"], r["engine_s"], f"{r['images_per_s']:.0f}"]
        print("| " + " | ".join(map(str, cells)) + f" | {r['images_per_s'] / base:.2f}× |")
    print(f"\nan ImageNet-sized epoch (1.28M images) at the first row's rate: {IMAGENET / base / 3600:.1f} h")
    if len(rows) > 1 and args.device.startswith("cuda"):  # one GPU per rank: efficiency per added device
        k = rows[-1]["ranks"]  # the rows: 1 GPU, then more
        eff = rows[-1]["images_per_s"] / (base * k / rows[0]["ranks"])
        print(f"parallel efficiency at {k} GPUs: {eff:.2f}; at that efficiency (a paper estimate):")
        for n in (8, 64):
            print(f"  {n:>2} GPUs: {IMAGENET / (base * n * eff) / 3600:.2f} h per epoch")
    return rows


if __name__ == "__main__":
    main()
