"""Decoder benchmark (issue 17): the paper's decoder against the scaled one.

Two tables:

* **quality per training second** — real CIFAR-10 resized to 64, 128 and 224 px, a random-init (frozen)
  torchvision ResNet-18/50 or timm ViT as the classifier, ClaDec with α = 0 on a late layer. The layer's
  activations are computed once (the same for every decoder); then the decoders train in turns of
  ``--slice`` seconds each, alternating in this one process so that the load of a shared machine falls on all of
  them alike, until each has trained ``--budget`` seconds (Adam, ``--lr``, batch ``--batch-size``). The test MSE
  is measured after every turn (not counted in the budget) and printed as MSE-vs-seconds points, beside the
  mean-image baseline (the MSE of always answering the training set's mean image).
* **size and speed** — decoder parameters and ClaDec training images/s (batch 16, after a warm-up step: the frozen
  classifier's forward pass to the layer plus the decoder's forward, backward and Adam step) for torchvision
  ResNet-50 ``layer2``/``layer3``/``layer4`` and timm ``vit_base_patch16_224`` ``blocks.5``/``blocks.11`` at
  224 px, random init.

``--archs`` may add ``scaled-upsample``: the scaled decoder with each hidden transposed convolution replaced by a
nearest upsample to the same size and a 3×3 convolution (the other stage type the issue asks to compare).

Examples::

    python benchmarks/decoder_quality.py --data-root /work/shared/data             # ~20 min on 2 CPU cores
    python benchmarks/decoder_quality.py --data-root /work/shared/data --quick     # smoke run, seconds
"""

from __future__ import annotations

import argparse
import datetime as _dt
import platform
import time

import torch
import torch.nn.functional as F
from torch import nn

from cladec import ClaDec
from cladec.data import load_dataset

# (size, classifier, layer): the quality settings
QUALITY = [
    (64, "resnet18", "layer3"),
    (64, "resnet18", "layer4"),
    (128, "resnet18", "layer4"),
    (224, "resnet18", "layer4"),
    (224, "resnet50", "layer4"),
    (224, "vit_tiny_patch16_224", "blocks.11"),
]
SPEED = [
    ("resnet50", "layer2"),
    ("resnet50", "layer3"),
    ("resnet50", "layer4"),
    ("vit_base_patch16_224", "blocks.5"),
    ("vit_base_patch16_224", "blocks.11"),
]


def classifier(name: str, size: int) -> nn.Module:
    """A random-init classifier (no download), frozen, in eval mode."""
    torch.manual_seed(0)
    if name.startswith("vit"):
        import timm

        m = timm.create_model(name, pretrained=False, num_classes=10, img_size=size)
    else:
        import torchvision

        m = getattr(torchvision.models, name)(weights=None, num_classes=10)
    return m.eval().requires_grad_(False)


def upsample_variant(dec: nn.Module) -> nn.Module:
    """The scaled decoder with hidden transposed convolutions replaced by nearest upsample + 3×3 conv."""
    ups = list(dec.up)
    for i, m in enumerate(ups[:-1]):  # the last stage (to the image channels) stays a transposed conv
        if isinstance(m, nn.ConvTranspose2d):
            ups[i] = _UpConv(m.in_channels, m.out_channels)
    dec.up = nn.Sequential(*ups)
    return dec


class _UpConv(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the transposed conv's size rule: 2h (the chain's odd sizes are reached by the output stage's padding)
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


def make_explainer(model: nn.Module, layer: str, arch: str, shape: tuple[int, int, int], seed: int = 0) -> ClaDec:
    torch.manual_seed(seed)
    e = ClaDec(model, layer, alpha=0.0, decoder_arch=arch.split("-")[0], image_shape=shape)
    if arch == "scaled-upsample":
        upsample_variant(e.decoder)
    return e


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@torch.no_grad()
def test_mse(dec: nn.Module, a: torch.Tensor, x: torch.Tensor) -> float:
    dec.eval()
    err = sum(F.mse_loss(dec(a[i : i + 64]), x[i : i + 64], reduction="sum").item() for i in range(0, len(a), 64))
    dec.train()
    return err / x.numel()


def quality(args) -> list[dict]:
    rows = []
    for size, clf, layer in args.quality:
        train = load_dataset("cifar10", root=args.data_root, split="train", size=size, limit=args.train)
        test = load_dataset("cifar10", root=args.data_root, split="test", size=size, limit=args.test)
        (x, _), (xt, _) = train.tensors(), test.tensors()
        model = classifier(clf, size)
        exps = {arch: make_explainer(model, layer, arch, tuple(x.shape[1:])) for arch in args.archs}
        first = next(iter(exps.values()))
        t0 = time.perf_counter()
        a, at = first.encode(x), first.encode(xt)  # the same activations for every decoder
        enc_s = time.perf_counter() - t0
        base = F.mse_loss(x.mean(0, keepdim=True).expand_as(xt), xt).item()
        print(
            f"\n[quality] CIFAR-10 {size} px, {clf} {layer} {tuple(a.shape[1:])}: {len(x)} train / {len(xt)} test "
            f"images, encoded in {enc_s:.0f} s; mean-image baseline test MSE {base:.4f}",
            flush=True,
        )
        state = {}
        for arch, e in exps.items():
            dec = e.decoder
            dec.init_output_bias(x.mean(dim=(0, 2, 3)))
            dec.train()
            opt = torch.optim.Adam(dec.parameters(), lr=args.lr)
            g = torch.Generator().manual_seed(0)
            state[arch] = dict(dec=dec, opt=opt, g=g, secs=0.0, steps=0, points=[(0.0, test_mse(dec, at, xt))])
        while any(s["secs"] < args.budget for s in state.values()):
            for s in state.values():
                if s["secs"] >= args.budget:
                    continue
                t0 = time.perf_counter()
                while time.perf_counter() - t0 < min(args.slice, args.budget - s["secs"]):
                    idx = torch.randint(len(a), (args.batch_size,), generator=s["g"])
                    loss = F.mse_loss(s["dec"](a[idx]), x[idx])
                    s["opt"].zero_grad(set_to_none=True)
                    loss.backward()
                    s["opt"].step()
                    s["steps"] += 1
                s["secs"] += time.perf_counter() - t0
                s["points"].append((s["secs"], test_mse(s["dec"], at, xt)))
        for arch, s in state.items():
            pts = " ".join(f"{t:.0f}s:{m:.4f}" for t, m in s["points"])
            print(f"  {arch:16s} {n_params(s['dec']) / 1e6:7.2f}M params, {s['steps']:5d} steps: {pts}", flush=True)
            rows.append(
                dict(
                    size=size,
                    setting=f"{clf} {layer}",
                    shape=tuple(a.shape[1:]),
                    arch=arch,
                    params=n_params(s["dec"]),
                    steps=s["steps"],
                    secs=s["secs"],
                    mse=s["points"][-1][1],
                    base=base,
                    imgs_s=s["steps"] * args.batch_size / s["secs"],
                )
            )
    return rows


def speed(args) -> list[dict]:
    rows = []
    for clf, layer in args.speed:
        model = classifier(clf, 224)
        x = torch.rand(args.speed_batch, 3, 224, 224)
        for arch in ("paper", "scaled"):
            e = make_explainer(model, layer, arch, (3, 224, 224))
            dec = e.decoder.train()
            opt = torch.optim.Adam(dec.parameters(), lr=1e-3)
            enc, step = [], []
            for i in range(1 + args.speed_steps):  # the first step is the warm-up
                t0 = time.perf_counter()
                with torch.no_grad():
                    a = e.capture(x)
                t1 = time.perf_counter()
                loss = F.mse_loss(dec(a), x)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                t2 = time.perf_counter()
                if i:
                    enc.append(t1 - t0)
                    step.append(t2 - t1)
            te, td = sum(enc) / len(enc), sum(step) / len(step)
            row = dict(
                model=clf,
                layer=layer,
                shape=tuple(a.shape[1:]),
                arch=arch,
                params=n_params(dec),
                imgs_s=args.speed_batch / (te + td),
                dec_imgs_s=args.speed_batch / td,
            )
            rows.append(row)
            print(
                f"[speed] {clf} {layer} {row['shape']} {arch}: {row['params'] / 1e6:.2f}M params, "
                f"{row['imgs_s']:.2f} images/s ClaDec step (decoder part alone {row['dec_imgs_s']:.2f} images/s)",
                flush=True,
            )
            del e, dec, opt
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default="/work/shared/data")
    p.add_argument("--budget", type=float, default=60.0, help="training seconds per decoder and setting (60)")
    p.add_argument("--slice", type=float, default=10.0, help="seconds per turn (10)")
    p.add_argument("--train", type=int, default=1000, help="training images (1000)")
    p.add_argument("--test", type=int, default=200, help="test images (200)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--archs", default="paper,scaled", help="paper,scaled[,scaled-upsample]")
    p.add_argument("--sizes", default=None, help="only these quality sizes, e.g. 64,128")
    p.add_argument("--speed-batch", type=int, default=16)
    p.add_argument("--speed-steps", type=int, default=3, help="timed steps after one warm-up step (3)")
    p.add_argument("--no-quality", action="store_true")
    p.add_argument("--no-speed", action="store_true")
    p.add_argument("--quick", action="store_true", help="smoke run: one tiny setting of each table")
    args = p.parse_args(argv)
    args.archs = args.archs.split(",")
    args.quality, args.speed = list(QUALITY), list(SPEED)
    if args.sizes:
        args.quality = [q for q in QUALITY if str(q[0]) in args.sizes.split(",")]
    if args.quick:
        args.budget, args.slice, args.train, args.test = 1.0, 1.0, 64, 32
        args.quality, args.speed, args.speed_steps, args.speed_batch = [(64, "resnet18", "layer4")], [], 1, 4
    print(
        f"# decoder benchmark {_dt.date.today()} on {platform.processor() or platform.machine()}, torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads",
        flush=True,
    )
    qrows = [] if args.no_quality else quality(args)
    if args.quick and not args.no_speed:
        args.speed = [("resnet18", "layer4")]
    srows = [] if args.no_speed else speed(args)
    if qrows:
        print(
            f"\n| size | classifier, layer (shape) | decoder | params | steps in {args.budget:.0f} s | images/s "
            "| test MSE | mean-image MSE |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for r in qrows:
            shape = "×".join(map(str, r["shape"]))
            print(
                f"| {r['size']} | {r['setting']} ({shape}) | {r['arch']} | {r['params'] / 1e6:.2f}M | {r['steps']} "
                f"| {r['imgs_s']:.0f} | {r['mse']:.4f} | {r['base']:.4f} |"
            )
    if srows:
        print("\n| model, layer (shape) | decoder | params | ClaDec images/s | decoder-part images/s |")
        print("|---|---|---|---|---|")
        for r in srows:
            shape = "×".join(map(str, r["shape"]))
            print(
                f"| {r['model']} {r['layer']} ({shape}) | {r['arch']} | {r['params'] / 1e6:.2f}M "
                f"| {r['imgs_s']:.2f} | {r['dec_imgs_s']:.2f} |"
            )
    return None


if __name__ == "__main__":
    main()
