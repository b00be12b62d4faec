"""Speed benchmark: cladec's fast training path against a plain PyTorch loop doing the same work.

Phases (Fashion-MNIST at 32×32, the paper's VGG-style classifier, batch 128, α = 0.001):

* ``classifier`` — SGD training of the classifier;
* ``cladec`` — ClaDec on a layer (default: the last conv block, 512-d);
* ``refae`` — the reference auto-encoder for the same layer;
* ``cladec-streamed`` — ClaDec with a cache budget too small for the activations (streamed path);
* ``together`` — ClaDec and its RefAE fitted at once (``cladec.fit_together``: on CUDA one graph, a stream each).

For each phase the fast path (``fast=True``) and a plain loop written out below run in the same process
on the same data; the table reports images/s, steady-state seconds per epoch (epochs after the first,
which includes warm-up, activation caching and CUDA-graph capture), peak memory and the final quality
(test MSE, the classifier's accuracy on reconstructions) so that speed is never bought with quality.
``--pipeline-epochs N`` also times the whole pipeline (classifier + RefAE + ClaDec, N epochs each), each
part with its fastest measured variant; ``--pipeline-only`` with ``--pipeline-variants`` runs just the pipeline
(e.g. in a fresh process with an empty compile cache, for a cold-start figure).

Examples::

    python benchmarks/speed.py --device cpu --train 4096 --epochs 2            # CPU, 2 cores
    python benchmarks/speed.py --device cuda --train 60000 --epochs 5 --pipeline-epochs 64
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import cladec
from cladec.capture import LayerCapture
from cladec.data.load import load_dataset
from cladec.decoder import build_decoder
from cladec.models import create_model
from cladec.models.training import train_classifier


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def reset_peak(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)


def peak_mb(dev: torch.device) -> float:
    if dev.type == "cuda":
        return torch.cuda.max_memory_allocated(dev) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS


def autocast(dev):
    return torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")


# --------------------------------------------------------------------------------------------------
# The plain loops: what a user would write by hand, GPU-resident data, loss read every step.
# --------------------------------------------------------------------------------------------------
def plain_classifier(model, x, y, epochs, bs, lr=0.1):
    dev = x.device
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    times = []
    for _ in range(epochs):
        t = time.perf_counter()
        model.train()
        perm = torch.randperm(len(x), device=dev)
        for i in range(0, len(x), bs):
            b = perm[i : i + bs]
            with autocast(dev):
                loss = F.cross_entropy(model(x[b]).float(), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss.item()
        sync(dev)
        times.append(time.perf_counter() - t)
    model.eval()
    return times


def plain_cladec(model, layer, x, y, epochs, bs, alpha=0.001, lr=3e-4):
    dev = x.device
    cap = LayerCapture(model, layer)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        a_shape = cap(x[:2]).shape[1:]
    dec = build_decoder(tuple(a_shape), tuple(x.shape[1:])).to(dev)
    dec.init_output_bias(x.mean(dim=(0, 2, 3)))  # the same initialisation as cladec's
    opt = torch.optim.Adam(dec.parameters(), lr=lr, weight_decay=1e-5)
    times = []
    for _ in range(epochs):
        t = time.perf_counter()
        dec.train()
        perm = torch.randperm(len(x), device=dev)
        for i in range(0, len(x), bs):
            b = perm[i : i + bs]
            xb, yb = x[b], y[b]
            with autocast(dev):
                with torch.no_grad():
                    a = cap(xb)
                xh = dec(a)
                mse = F.mse_loss(xh.float(), xb)
                ce = F.cross_entropy(model(xh).float(), yb)
                loss = (1 - alpha) * mse + alpha * ce
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss.item()
        sync(dev)
        times.append(time.perf_counter() - t)
    for p in model.parameters():
        p.requires_grad_(True)
    dec.eval()
    return times, lambda xs: dec(cap(xs))


def plain_refae(model, layer, x, epochs, bs, lr=3e-4):
    dev = x.device
    ref = cladec.RefAE(model, layer, image_shape=tuple(x.shape[1:]))  # same fresh encoder + decoder
    enc, dec, cap = ref.encoder, ref.decoder, ref.capture
    dec.init_output_bias(x.mean(dim=(0, 2, 3)))  # the same initialisation as cladec's
    params = ref._reached_params() + list(dec.parameters())
    opt = torch.optim.Adam(params, lr=lr, weight_decay=1e-5)
    times = []
    for _ in range(epochs):
        t = time.perf_counter()
        enc.train()
        dec.train()
        perm = torch.randperm(len(x), device=dev)
        for i in range(0, len(x), bs):
            xb = x[perm[i : i + bs]]
            with autocast(dev):
                loss = F.mse_loss(dec(cap(xb)).float(), xb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss.item()
        sync(dev)
        times.append(time.perf_counter() - t)
    enc.eval()
    dec.eval()
    return times, lambda xs: dec(cap(xs))


# --------------------------------------------------------------------------------------------------
def quality(recon, model, xt, yt, bs=1000):
    with torch.no_grad():
        outs = [recon(xt[i : i + bs]).float() for i in range(0, len(xt), bs)]
        r = torch.cat(outs)
        acc = float((torch.cat([model(r[i : i + bs]).argmax(1) for i in range(0, len(r), bs)]) == yt).float().mean())
    return float((r - xt).pow(2).mean()), acc


# fast-path variants: keyword arguments of fit/train_classifier, and process-wide settings ("module.attr")
VARIANTS = {
    "default": ({}, {}),
    "nocl": ({"channels_last": False}, {}),
    "bench": ({}, {"cladec.training.engine.CUDNN_BENCHMARK": True}),  # cuDNN autotuning on
    "fp32": ({"amp": False}, {}),  # no bf16 autocast (TF32 convolutions on CUDA)
    "compile": ({"compile": True}, {}),
    "compile-max": ({"compile": "max-autotune-no-cudagraphs"}, {}),  # Inductor tunes its kernels (slow compile)
    # Inductor's horizontal fusion of independent small kernels (e.g. the per-step bf16 casts of the weights)
    "compile-combo": ({"compile": True}, {"torch._inductor.config.combo_kernels": True}),
    "fp32-compile": ({"amp": False, "compile": True}, {}),
    "compile-nocl": ({"compile": True, "channels_last": False}, {}),
    "compile-nocl-nolayout": (
        {"compile": True, "channels_last": False},
        {"torch._inductor.config.layout_optimization": False},
    ),
}


@contextlib.contextmanager
def variant_globals(v):
    """Apply a variant's process-wide settings for a block (and restore them)."""
    import importlib

    old = []
    for key, val in VARIANTS[v][1].items():
        mod, attr = key.rsplit(".", 1)
        m = importlib.import_module(mod)
        old.append((m, attr, getattr(m, attr)))
        setattr(m, attr, val)
    try:
        yield
    finally:
        for m, attr, val in old:
            setattr(m, attr, val)


@contextlib.contextmanager
def no_cuda_graph():
    """Run the fast path without CUDA graphs (for a per-kernel profile)."""
    import cladec.training.engine as tr

    setup = tr.Engine._setup  # every engine (single or joint) is set up here

    def patched(self, *a, **k):
        setup(self, *a, **k)
        self.cfg.cuda_graph = False

    tr.Engine._setup = patched
    try:
        yield
    finally:
        tr.Engine._setup = setup


def profile_phase(make, x, y, dev, out_dir, name, steps=40, bs=128, variant="default"):
    """Kernel-level profile of ``steps`` training steps of one phase, with and without CUDA graphs.

    A first fit warms cuDNN's autotuning cache; the profiled fit then runs one warm-up step, the graph
    capture and the replays (or eager steps). Prints and saves the 25 kernels with most GPU time.
    """
    from torch.profiler import ProfilerActivity, profile

    n = steps * bs
    xs, ys = x[:n], y[:n]
    kw = dict(epochs=1, batch_size=bs, verbose=False, seed=0, **VARIANTS[variant][0])
    name = name if variant == "default" else f"{name}-{variant}"
    with variant_globals(variant):
        make().fit((xs, ys), **kw)
    for label, ctx in (("graph", contextlib.nullcontext), ("eager", no_cuda_graph)):
        with ctx(), variant_globals(variant):
            make().fit((xs, ys), **kw)  # warm (autotune, compile)
            sync(dev)
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                make().fit((xs, ys), **kw)
                sync(dev)
        ev = [
            e
            for e in prof.key_averages()
            if getattr(e, "device_type", None) is not None and str(e.device_type).endswith("CUDA")
        ]
        total_us = sum(getattr(e, "self_device_time_total", 0) or getattr(e, "self_cuda_time_total", 0) for e in ev)
        count = sum(e.count for e in ev)
        head = (
            f"# profile {name} ({label}): {steps} steps, {count} GPU kernels/ops ({count / steps:.0f} per step), "
            f"GPU time {total_us / 1e3:.1f} ms ({total_us / steps:.0f} us per step)"
        )
        table = prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=25, max_name_column_width=70)
        print(head, flush=True)
        print(table, flush=True)
        if out_dir:
            Path(out_dir, f"profile_{name}_{label}.txt").write_text(head + "\n" + table)


def steady(times):
    return sum(times[1:]) / len(times[1:]) if len(times) > 1 else times[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--data-root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--train", type=int, default=60000)
    ap.add_argument("--test", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=3, help="epochs per timed phase (≥ 2 for a steady-state figure)")
    ap.add_argument("--classifier-epochs", type=int, default=None)
    ap.add_argument("--layer", default="conv4")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--phases", default="classifier,cladec,refae,cladec-streamed,together")
    ap.add_argument("--pipeline-epochs", type=int, default=0)
    ap.add_argument(
        "--variants", default="default", help="fast-path variants to time, comma-separated: " + ",".join(VARIANTS)
    )
    ap.add_argument(
        "--profile",
        default=None,
        metavar="DIR",
        help="also profile 40 ClaDec and RefAE steps per kernel (with and without CUDA graphs), "
        "tables printed and saved in DIR",
    )
    ap.add_argument("--profile-variants", default="default", help="variants to profile (comma-separated)")
    ap.add_argument("--max-pipeline-s", type=float, default=0, help="shorten the pipeline run to fit this budget")
    ap.add_argument("--pipeline-only", action="store_true", help="run only the pipeline, with --pipeline-variants")
    ap.add_argument(
        "--pipeline-variants",
        default="classifier=default,together=default",
        help="with --pipeline-only: PART=VARIANT,... for classifier and either together or cladec+refae",
    )
    ap.add_argument("--json", default=None, help="also write the results as JSON here")
    args = ap.parse_args()

    dev = torch.device(args.device)
    torch.manual_seed(0)
    tr = load_dataset("fashion-mnist", root=args.data_root, split="train", size=32, limit=args.train)
    te = load_dataset("fashion-mnist", root=args.data_root, split="test", size=32, limit=args.test)
    x, y = (t.to(dev) for t in tr.tensors())
    xt, yt = (t.to(dev) for t in te.tensors())
    E, bs = args.epochs, args.batch_size
    phases = args.phases.split(",")
    rows = []

    def row(phase, path, times, n, extra=None):
        r = {
            "phase": phase,
            "path": path,
            "images_per_s": n / steady(times),
            "s_per_epoch": steady(times),
            "first_epoch_s": times[0],
            "peak_mb": peak_mb(dev),
            "device": str(dev),
        }
        r.update(extra or {})
        rows.append(r)
        print(json.dumps(r), flush=True)

    chosen = [v for v in args.variants.split(",") if v]
    bad = [v for v in chosen if v not in VARIANTS]
    if bad:
        ap.error(f"unknown variant(s) {bad}; valid: {sorted(VARIANTS)}")
    variants = {k: v[0] for k, v in VARIANTS.items()}

    def vname(v):
        return "cladec" if v == "default" else f"cladec-{v}"

    if args.pipeline_only:
        phases = []
    # classifier ------------------------------------------------------------------------------
    ce = args.classifier_epochs or E
    for v in chosen if "classifier" in phases else ["default"] if not args.pipeline_only else []:
        torch.manual_seed(0)
        m = create_model("vgg-paper", in_channels=1, num_classes=10).to(dev)
        reset_peak(dev)
        try:
            with variant_globals(v):
                hist = train_classifier(
                    m, (x, y), ce, test_data=(xt, yt), batch_size=bs, verbose=False, seed=0, **variants[v]
                )
        except Exception as ex:  # noqa: BLE001 - a variant that fails is reported, not fatal
            print(f"# classifier variant {v} failed: {type(ex).__name__}: {ex}", flush=True)
            continue
        if v == "default":
            clf = m
        with torch.no_grad():
            acc = float(
                (torch.cat([m(xt[i : i + 1000]).argmax(1) for i in range(0, len(xt), 1000)]) == yt).float().mean()
            )
        if "classifier" in phases:
            row("classifier", vname(v), hist["seconds"], len(x), {"test_acc": acc})
    if "classifier" in phases:
        torch.manual_seed(0)
        m2 = create_model("vgg-paper", in_channels=1, num_classes=10).to(dev)
        reset_peak(dev)
        t_plain = plain_classifier(m2, x, y, E, bs)
        with torch.no_grad():
            acc2 = float((m2(xt).argmax(1) == yt).float().mean())
        row("classifier", "plain", t_plain, len(x), {"test_acc": acc2})
    if not args.pipeline_only:
        clf.eval()
    if args.profile and not args.pipeline_only:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
        for pv in [v for v in args.profile_variants.split(",") if v]:
            if pv not in VARIANTS:
                ap.error(f"unknown profile variant {pv!r}; valid: {sorted(VARIANTS)}")
            profile_phase(
                lambda: cladec.ClaDec(clf, args.layer, alpha=0.001),
                x,
                y,
                dev,
                args.profile,
                "cladec",
                bs=bs,
                variant=pv,
            )
            profile_phase(lambda: cladec.RefAE(clf, args.layer), x, y, dev, args.profile, "refae", bs=bs, variant=pv)

    # ClaDec ------------------------------------------------------------------------------------
    if "cladec" in phases:
        for v in chosen:
            reset_peak(dev)
            try:
                with variant_globals(v):
                    e = cladec.ClaDec(clf, args.layer, alpha=0.001).fit(
                        (x, y), epochs=E, batch_size=bs, verbose=False, seed=0, **variants[v]
                    )
            except Exception as ex:  # noqa: BLE001 - a variant that fails is reported, not fatal
                print(f"# cladec variant {v} failed: {type(ex).__name__}: {ex}", flush=True)
                continue
            mse, acc_r = quality(lambda xs, e=e: e.decoder(e.capture(xs)), clf, xt, yt)
            row("cladec", vname(v), [h["seconds"] for h in e.history], len(x), {"test_mse": mse, "acc_on_recon": acc_r})
        reset_peak(dev)
        times, rec = plain_cladec(clf, args.layer, x, y, E, bs)
        mse, acc_r = quality(rec, clf, xt, yt)
        row("cladec", "plain", times, len(x), {"test_mse": mse, "acc_on_recon": acc_r})
    if "cladec-streamed" in phases:
        reset_peak(dev)
        e = cladec.ClaDec(clf, args.layer, alpha=0.001, cache_budget=1 << 20).fit(
            (x.cpu(), y.cpu()), epochs=E, batch_size=bs, verbose=False, seed=0
        )
        mse, acc_r = quality(lambda xs: e.decoder(e.capture(xs)), clf, xt, yt)
        row(
            "cladec-streamed",
            "cladec",
            [h["seconds"] for h in e.history],
            len(x),
            {"test_mse": mse, "acc_on_recon": acc_r},
        )
    if "refae" in phases:
        for v in chosen:
            reset_peak(dev)
            try:
                with variant_globals(v):
                    r = cladec.RefAE(clf, args.layer).fit(
                        (x, y), epochs=E, batch_size=bs, verbose=False, seed=0, **variants[v]
                    )
            except Exception as ex:  # noqa: BLE001 - a variant that fails is reported, not fatal
                print(f"# refae variant {v} failed: {type(ex).__name__}: {ex}", flush=True)
                continue
            mse, acc_r = quality(lambda xs, r=r: r.decoder(r.capture(xs)), clf, xt, yt)
            row("refae", vname(v), [h["seconds"] for h in r.history], len(x), {"test_mse": mse, "acc_on_recon": acc_r})
        reset_peak(dev)
        times, rec = plain_refae(clf, args.layer, x, E, bs)
        mse, acc_r = quality(rec, clf, xt, yt)
        row("refae", "plain", times, len(x), {"test_mse": mse, "acc_on_recon": acc_r})
    if "together" in phases:
        for v in chosen:
            reset_peak(dev)
            try:
                with variant_globals(v):
                    e = cladec.ClaDec(clf, args.layer, alpha=0.001)
                    r = cladec.RefAE.like(e, init_seed=0)
                    cladec.fit_together([e, r], (x, y), epochs=E, batch_size=bs, verbose=False, seed=0, **variants[v])
            except Exception as ex:  # noqa: BLE001 - a variant that fails is reported, not fatal
                print(f"# together variant {v} failed: {type(ex).__name__}: {ex}", flush=True)
                continue
            mse, acc_r = quality(lambda xs, e=e: e.decoder(e.capture(xs)), clf, xt, yt)
            mse2, acc_r2 = quality(lambda xs, r=r: r.decoder(r.capture(xs)), clf, xt, yt)
            row(
                "together",
                vname(v),
                [h["seconds"] for h in e.history],
                len(x),
                {"test_mse": mse, "acc_on_recon": acc_r, "refae_test_mse": mse2, "refae_acc_on_recon": acc_r2},
            )

    # whole pipeline ------------------------------------------------------------------------------
    pipeline = None
    P = args.pipeline_epochs
    best: dict[str, str] = {}
    est = 0.0
    if args.pipeline_only:
        try:
            best = dict(kv.split("=", 1) for kv in args.pipeline_variants.split(",") if kv)
        except ValueError:
            ap.error(f"--pipeline-variants must be PART=VARIANT,..., got {args.pipeline_variants!r}")
        if (
            "classifier" not in best
            or not ({"together"} <= set(best) or {"cladec", "refae"} <= set(best))
            or any(v not in VARIANTS for v in best.values())
        ):
            ap.error(
                "--pipeline-variants needs classifier= and together= (or cladec= and refae=) with variants "
                f"from {sorted(VARIANTS)}, got {args.pipeline_variants!r}"
            )
        P = P or 64
    elif P and not ({"classifier", "together"} <= set(phases) or {"classifier", "cladec", "refae"} <= set(phases)):
        print("# pipeline skipped: it needs the classifier phase and together (or cladec and refae)", flush=True)
        P = 0
    elif P:
        # each part runs with its fastest measured variant over P epochs (warm-up/compile counted); ClaDec and RefAE
        # together or one after the other, whichever the measurements say is faster
        def fastest(phase):
            cands = [r for r in rows if r["phase"] == phase and r["path"].startswith("cladec")]
            if not cands:
                return None
            b = min(cands, key=lambda r: r["first_epoch_s"] + (P - 1) * r["s_per_epoch"])
            return (
                b["path"].replace("cladec-", "") if b["path"] != "cladec" else "default",
                b["first_epoch_s"] + (P - 1) * b["s_per_epoch"],
            )

        found = {ph: fastest(ph) for ph in ("classifier", "cladec", "refae", "together")}
        found = {k: v for k, v in found.items() if v is not None}
        seq = found["cladec"][1] + found["refae"][1] if {"cladec", "refae"} <= set(found) else float("inf")
        parts = ["classifier"] + (
            ["together"] if found.get("together", (None, float("inf")))[1] < seq else ["cladec", "refae"]
        )
        best = {k: found[k][0] for k in parts}
        est = sum(found[k][1] for k in parts)
    if P:
        print(f"# pipeline variants: {best}", flush=True)
        kw = {k: variants[v] for k, v in best.items()}
        if args.max_pipeline_s and est > args.max_pipeline_s:
            P = max(1, int(P * args.max_pipeline_s / est))
            print(f"# pipeline shortened to {P} epochs each (estimated {est:.0f} s for {args.pipeline_epochs})")
        sync(dev)
        t0 = time.perf_counter()
        torch.manual_seed(1)
        c2 = create_model("vgg-paper", in_channels=1, num_classes=10).to(dev)
        with variant_globals(best["classifier"]):
            train_classifier(c2, (x, y), P, batch_size=bs, verbose=False, seed=1, **kw["classifier"])
        t1 = time.perf_counter()
        fit = dict(epochs=P, batch_size=bs, verbose=False, seed=1)
        e2 = cladec.ClaDec(c2, args.layer, alpha=0.001)
        r2 = cladec.RefAE.like(e2, init_seed=1)
        times = {"classifier_s": t1 - t0}
        if "together" in best:
            with variant_globals(best["together"]):
                cladec.fit_together([e2, r2], (x, y), **fit, **kw["together"])
            sync(dev)
            times["together_s"] = time.perf_counter() - t1
        else:
            with variant_globals(best["refae"]):
                r2.fit((x, y), **fit, **kw["refae"])
            t2 = time.perf_counter()
            with variant_globals(best["cladec"]):
                e2.fit((x, y), **fit, **kw["cladec"])
            sync(dev)
            times.update(refae_s=t2 - t1, cladec_s=time.perf_counter() - t2)
        t3 = time.perf_counter()
        c2.eval()
        with torch.no_grad():
            acc_c = float((c2(xt).argmax(1) == yt).float().mean())
        mse_e, acc_e = quality(lambda xs: e2.decoder(e2.capture(xs)), c2, xt, yt)
        mse_r, acc_r = quality(lambda xs: r2.decoder(r2.capture(xs)), c2, xt, yt)
        pipeline = {
            "variants": best,
            "epochs_each": P,
            "total_s": t3 - t0,
            **times,
            "compile_cache": os.environ.get("TORCHINDUCTOR_CACHE_DIR", "default"),
            "classifier_acc": acc_c,
            "cladec_mse": mse_e,
            "refae_mse": mse_r,
            "cladec_acc_on_recon": acc_e,
            "refae_acc_on_recon": acc_r,
        }
        print(json.dumps({"pipeline": pipeline}), flush=True)

    # table -----------------------------------------------------------------------------------
    name = (
        torch.cuda.get_device_name(dev)
        if dev.type == "cuda"
        else f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores)"
    )
    print(
        f"\n# speed benchmark {_dt.datetime.now().isoformat(timespec='seconds')} on {name}, torch {torch.__version__}"
    )
    print(
        f"# Fashion-MNIST 32x32, {len(x)} train / {len(xt)} test, layer {args.layer}, batch {bs}, {E} epochs per phase"
    )
    print(
        "| phase | path | images/s | s/epoch (steady) | first epoch s | peak MB | test MSE | acc on recon / test acc |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        q = f"{r.get('acc_on_recon', r.get('test_acc', float('nan'))):.3f}"
        mse = f"{r.get('test_mse', float('nan')):.4f}"
        if "refae_test_mse" in r:  # ClaDec and RefAE fitted together: both
            mse, q = f"{mse} / {r['refae_test_mse']:.4f}", f"{q} / {r['refae_acc_on_recon']:.3f}"
        print(
            f"| {r['phase']} | {r['path']} | {r['images_per_s']:.0f} | {r['s_per_epoch']:.3f} "
            f"| {r['first_epoch_s']:.3f} "
            f"| {r['peak_mb']:.0f} | {mse} | {q} |"
        )
    for phase in ("classifier", "cladec", "refae"):
        f = [r for r in rows if r["phase"] == phase and r["path"] == "cladec"]
        p = [r for r in rows if r["phase"] == phase and r["path"] == "plain"]
        if f and p:
            print(f"# {phase}: fast/plain throughput ratio {f[0]['images_per_s'] / p[0]['images_per_s']:.2f}x")
    if pipeline:
        print(
            f"# pipeline ({pipeline['epochs_each']} epochs each, {pipeline['variants']}): "
            f"{pipeline['total_s']:.1f} s total"
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"device": name, "torch": torch.__version__, "args": vars(args), "rows": rows, "pipeline": pipeline},
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
