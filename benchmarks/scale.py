"""Scale benchmark: ClaDec and RefAE on real-size torchvision / timm classifiers at 224 px (issue 17).

For each model and layer (random weights: no download), each explainer (ClaDec α = 0.001, RefAE) and each path:

* ``fast`` — cladec's ``fit`` as users call it (ClaDec keeps the layer's activations once they are computed, while
  they fit its ``cache_budget``: from the second epoch on it trains the decoder on cached activations);
* ``streamed`` — cladec's ``fit`` with ``cache_budget=0``: the activations are recomputed every step, which is
  what a data set of ImageNet size needs (1.28M × 2048×7×7 activations would be 257 GB in bf16);
* ``plain`` — a plain PyTorch loop written out below doing the same work (the same decoder, the same loss).

Each measurement runs in a fresh child process, so that the peak memory (the child's peak RSS on the CPU;
``torch.cuda.max_memory_allocated`` on a GPU) is that of the phase alone. Images/s are from the epochs after the
first (which includes warm-up and, for ClaDec, filling the activation cache), and the table gives how long one
ImageNet-sized epoch (1.28M images) would take at that rate. The data are real CIFAR-10 training images resized to
``--size`` (``../shared/data``). The decoder is the one ``cladec`` builds by default for the layer (``--decoder``
picks another).

Examples::

    python benchmarks/scale.py                                    # CPU: ResNet-50 layer4, ViT-B/16 blocks.11
    python benchmarks/scale.py --device cuda --batch-size 128 --images 1024 --epochs 3
    python benchmarks/scale.py --quick                            # a smoke run: small models at 64 px
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
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
IMAGENET = 1_281_167

#: name: (model source, layer)
MODELS = {
    "resnet50": ("torchvision:resnet50", "layer4"),
    "resnet50-layer3": ("torchvision:resnet50", "layer3"),
    "vit-b16": ("timm:vit_base_patch16_224", "blocks.11"),
    "vit-b16-mid": ("timm:vit_base_patch16_224", "blocks.5"),
    # small ones, for --quick
    "resnet18": ("torchvision:resnet18", "layer4"),
    "vit-tiny": ("timm:vit_tiny_patch16_224", "blocks.11"),
}


def _child(spec: dict[str, Any]) -> dict[str, Any]:
    """One measurement (run in a fresh process): returns a row."""
    sys.path.insert(0, str(ROOT / "src"))
    import torch
    import torch.nn.functional as F

    import cladec
    from cladec.data.load import load_dataset
    from cladec.models import load_model
    from cladec.training.engine import cpu_has_bf16

    dev = torch.device(spec["device"])
    torch.manual_seed(0)
    source, layer = MODELS[spec["model"]]
    kwargs: dict[str, Any] = {"num_classes": 10}
    if source.startswith("timm:") and spec["size"] != 224:
        kwargs["img_size"] = spec["size"]
    model = load_model(source, **kwargs).to(dev).eval()
    n, bs, epochs, alpha = spec["images"], spec["batch_size"], spec["epochs"], 0.001
    ds = load_dataset("cifar10", root=spec["data_root"], split="train", size=spec["size"], limit=n)
    x, y = (t.to(dev) for t in ds.tensors())
    opts: dict[str, Any] = {}
    if spec.get("decoder"):
        opts["decoder_arch"] = spec["decoder"]
    if spec["kind"] == "cladec":
        exp: Any = cladec.ClaDec(model, layer, alpha=alpha, image_shape=tuple(x.shape[1:]), **opts)
    else:
        exp = cladec.RefAE(model, layer, image_shape=tuple(x.shape[1:]), **opts)
    if spec["path"] == "streamed":
        exp.cache_budget = 0
    dec_params = sum(p.numel() for p in exp.decoder.parameters())
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    times: list[float] = []
    amp = dev.type == "cuda" or (dev.type == "cpu" and cpu_has_bf16())  # what the fast path's default does
    if spec["path"] in ("fast", "streamed"):
        exp.fit((x, y), epochs=epochs, batch_size=bs, seed=0, verbose=False)
        times = [float(h["seconds"]) for h in exp.history]
        final = float(exp.history[-1]["loss"])
    else:  # the plain loop: what a user would write by hand, the loss read every step
        dec, cap = exp.decoder, exp.capture
        dec.init_output_bias(x.mean(dim=(0, 2, 3)))  # cladec's initialisation
        if spec["kind"] == "cladec":
            for p in model.parameters():
                p.requires_grad_(False)
            params = list(dec.parameters())
        else:
            params = exp._reached_params() + list(dec.parameters())  # the encoder's parameters up to the layer
        opt = torch.optim.Adam(params, lr=3e-4, weight_decay=1e-5)
        for _ in range(epochs):
            t = time.perf_counter()
            dec.train()
            if spec["kind"] == "refae":
                exp.encoder.train()
            perm = torch.randperm(n, device=dev)
            for i in range(0, n, bs):
                b = perm[i : i + bs]
                xb, yb = x[b], y[b]
                with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=amp):
                    if spec["kind"] == "cladec":
                        with torch.no_grad():
                            a = cap(xb)
                        xh = dec(a)
                        ce = F.cross_entropy(model(cap.normalize(xh)).float(), yb)
                        loss = (1 - alpha) * F.mse_loss(xh.float(), xb) + alpha * ce
                    else:
                        loss = F.mse_loss(dec(cap(xb)).float(), xb)
                opt.zero_grad()
                loss.backward()
                opt.step()
                final = loss.item()
            sync()
            times.append(time.perf_counter() - t)
    steady = sum(times[1:]) / max(len(times) - 1, 1) if len(times) > 1 else times[0]
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated(dev) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ips = n / steady
    return {
        **{k: spec[k] for k in ("model", "kind", "path", "size", "batch_size", "images", "epochs")},
        "source": source,
        "layer": layer,
        "decoder": exp.decoder.spec.to_dict().get("arch", "paper"),
        "amp": amp,
        "decoder_params_M": round(dec_params / 1e6, 2),
        "images_per_s": round(ips, 2),
        "first_epoch_s": round(times[0], 2),
        "steady_epoch_s": round(steady, 2),
        "imagenet_epoch_h": round(IMAGENET / ips / 3600, 1),
        "peak_mb": round(peak, 0),
        "rss_before_fit_mb": round(rss_before, 0),
        "final_loss": round(final, 5),
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "load_1m": round(os.getloadavg()[0], 1),
    }


def _table(rows: list[dict[str, Any]]) -> str:
    cols = [
        ("model", "model"),
        ("layer", "layer"),
        ("kind", "explainer"),
        ("path", "path"),
        ("decoder_params_M", "decoder M params"),
        ("images_per_s", "images/s"),
        ("steady_epoch_s", "s/epoch"),
        ("imagenet_epoch_h", "ImageNet epoch (h)"),
        ("peak_mb", "peak MB"),
    ]
    out = ["| " + " | ".join(h for _, h in cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(str(r[k]) for k, _ in cols) + " |" for r in rows]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when there is one)")
    ap.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--models", default="resnet50,vit-b16", help="comma-separated, of: " + ", ".join(MODELS))
    ap.add_argument("--kinds", default="cladec,refae")
    ap.add_argument("--paths", default="fast,streamed,plain")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--images", type=int, default=48, help="training images per measurement")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=2, help="≥ 2: the first epoch is not counted")
    ap.add_argument("--decoder", default=None, help="decoder architecture (default: cladec's choice for the layer)")
    ap.add_argument("--quick", action="store_true", help="smoke run: resnet18 and vit-tiny at 64 px, 16 images")
    ap.add_argument("--json", default=None, help="also write the rows as JSON here")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print("ROW " + json.dumps(_child(json.loads(args.child))), flush=True)
        return 0
    if args.quick:
        args.models, args.size, args.images, args.batch_size, args.paths = "resnet18,vit-tiny", 64, 16, 8, "fast,plain"
    device = args.device
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    unknown = [m for m in args.models.split(",") if m not in MODELS]
    if unknown:
        ap.error(f"unknown model(s) {unknown}; valid: {', '.join(MODELS)}")
    rows = []
    for m in args.models.split(","):
        for kind in args.kinds.split(","):
            for path in args.paths.split(","):
                if kind == "refae" and path == "streamed":
                    continue  # RefAE trains its encoder: it computes the layer every step on both paths anyway
                spec = dict(
                    model=m, kind=kind, path=path, size=args.size, images=args.images, batch_size=args.batch_size,
                    epochs=args.epochs, device=device, data_root=args.data_root, decoder=args.decoder,
                )  # fmt: skip
                t = time.perf_counter()
                proc = subprocess.run(
                    [sys.executable, __file__, "--child", json.dumps(spec)],
                    capture_output=True,
                    text=True,
                    env={**os.environ, "PYTHONWARNINGS": "ignore"},
                )
                lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("ROW ")]
                if proc.returncode != 0 or not lines:
                    print(f"{m} {kind} {path}: failed\n{proc.stderr[-3000:]}", file=sys.stderr)
                    return 1
                row = json.loads(lines[-1][4:])
                row["wall_s"] = round(time.perf_counter() - t, 1)
                rows.append(row)
                print(json.dumps(row), flush=True)
    print()
    print(
        f"# scale benchmark, {_dt.date.today()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, device {device}, {args.size} px, batch {args.batch_size}, {args.images} images, "
        f"{args.epochs} epochs, load average at the end {os.getloadavg()[0]:.1f}"
    )
    print(_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
