"""Benchmark: ClaDec relevance maps against saliency baselines (deletion/insertion, ROAD, ROAR).

For each data set (Fashion-MNIST, CIFAR-10) and architecture (vgg-paper, resnet10): train a classifier,
fit ClaDec and RefAE on its middle layer (``model.default_layers["middle"]``: ``conv2`` / ``layer2``),
then run :func:`cladec.saliency.compare_saliency` with every ClaDec variant and every baseline.
Prints one table per cell and appends them, with date, machine and command, to ``benchmarks/RESULTS.md``
under "## Saliency comparison".

Configs
    ``reduced`` (CPU: 30 min for Fashion-MNIST and 36 min for CIFAR-10, run side by side with one thread
    each on 2 cores shared with other jobs; 1.4 min on an H200): width-0.25 classifiers on 4,000 training images
    (3 epochs), ClaDec/RefAE 3 epochs, 200 test images, ROAR for a subset of methods with k = 10, 50, 90
    on 2,000 training images (2 epochs), one seed.
    ``full`` (GPU, about 5 min per cell on an H200): full-width classifiers on the whole training sets
    (10 epochs), ClaDec/RefAE 5 epochs, 1,000 test images, 64 steps, ROAR for six methods with
    k = 10, 30, 50, 70, 90 on 10,000 images (3 epochs), two seeds.
    ``smoke``: a seconds-long run of everything, for checking the script.

Usage::

    .venv/bin/python benchmarks/compare_saliency.py --config reduced [--data-root ../shared/data]
        [--out /tmp/cladec-cmp] [--datasets fashion-mnist,cifar10] [--archs vgg-paper,resnet10] [--no-append]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
RESULTS_MD = HERE / "RESULTS.md"
HEADING = "## Saliency comparison"

CONFIGS = {
    "smoke": dict(
        width=0.25,
        train=1000,
        clf_epochs=1,
        dec_epochs=1,
        n=32,
        steps=8,
        roar_k="10,50",
        roar_epochs=1,
        roar_train=500,
        seeds="0",
        methods="cladec,cladec-kept,cladec-evidence,cladec-swap,cladec-roundtrip,saliency,gradcam,random,sobel",
        roar_methods="cladec,gradcam,random",
    ),
    "reduced": dict(
        width=0.25,
        train=4000,
        clf_epochs=3,
        dec_epochs=3,
        n=200,
        steps=32,
        roar_k="10,50,90",
        roar_epochs=2,
        roar_train=2000,
        seeds="0",
        methods="cladec-kept,cladec-evidence,cladec-swap,cladec-roundtrip,saliency,input-x-gradient,"
        "integrated-gradients,guided-backprop,gradcam,guided-gradcam,occlusion,random,sobel",
        roar_methods="cladec,saliency,integrated-gradients,gradcam,random,sobel",
    ),
    "full": dict(
        width=1.0,
        train=None,
        clf_epochs=10,
        dec_epochs=5,
        n=1000,
        steps=64,
        roar_k="10,30,50,70,90",
        roar_epochs=3,
        roar_train=10000,
        seeds="0,1",
        methods="cladec-kept,cladec-evidence,cladec-swap,cladec-roundtrip,saliency,input-x-gradient,"
        "integrated-gradients,guided-backprop,gradcam,guided-gradcam,occlusion,random,sobel",
        roar_methods="cladec,saliency,integrated-gradients,gradcam,random,sobel",
    ),
}
NORMS = {"fashion-mnist": ([0.2861], [0.3530]), "cifar10": ([0.491, 0.482, 0.447], [0.247, 0.243, 0.261])}


def cell(ds: str, arch: str, cfg: dict, out: Path, data_root: str, device: str, verbose: bool) -> dict:
    """Train (or reuse) classifier and run, then compare; returns a summary dict."""
    from cladec.data.load import load_dataset
    from cladec.models import create_model
    from cladec.models.checkpoint import load_classifier, save_classifier
    from cladec.models.predict import accuracy
    from cladec.models.training import train_classifier
    from cladec.runs import fit_run, load_run
    from cladec.saliency.compare import compare_saliency
    from cladec.saliency.results import format_table

    t0 = time.perf_counter()
    base = out / f"{ds}__{arch}"
    clf_dir, run_dir = base / "classifier", base / "run"
    train = load_dataset(ds, root=data_root, split="train", limit=cfg["train"])
    test = load_dataset(ds, root=data_root, split="test", limit=2000)
    norm = NORMS[ds]
    if not (clf_dir / "classifier.json").is_file():
        torch.manual_seed(0)
        net = create_model(arch, in_channels=train.image_shape[0], num_classes=10, width=cfg["width"]).to(device)
        hist = train_classifier(net, train, cfg["clf_epochs"], input_norm=norm, seed=0, device=device, verbose=verbose)
        acc = accuracy(net, test, input_norm=norm)
        # dataset given as a dict without "size": runs.fit_run reads info["dataset"]["size"] as an image size
        meta = {
            "name": ds,
            "image_shape": list(train.image_shape),
            "classes": list(train.classes),
            "n_train": len(train),
        }
        save_classifier(clf_dir, net, dataset=meta, input_norm=norm, metrics={"test_acc": acc}, history=hist)
    net, info = load_classifier(clf_dir, device=device)
    clf_acc = info["metrics"]["test_acc"]
    layer = net.default_layers["middle"]
    if not (run_dir / "run.json").is_file():
        fit_run(
            run_dir,
            classifier_dir=clf_dir,
            dataset=ds,
            layer=layer,
            epochs=cfg["dec_epochs"],
            limit=cfg["train"],
            data_root=data_root,
            device=device,
            seed=0,
            verbose=verbose,
        )
    run = load_run(run_dir, device=device)
    t_fit = time.perf_counter() - t0
    common = dict(
        n=cfg["n"],
        steps=cfg["steps"],
        seeds=[int(s) for s in cfg["seeds"].split(",")],
        data_root=data_root,
        device=device,
        verbose=verbose,
    )
    res = compare_saliency(run, out=base / "cmp", methods=cfg["methods"], scores="deletion,insertion,road", **common)
    res_roar = compare_saliency(
        run,
        out=base / "cmp-roar",
        methods=cfg["roar_methods"],
        scores="roar",
        roar_k=cfg["roar_k"],
        roar_epochs=cfg["roar_epochs"],
        roar_train_limit=cfg["roar_train"],
        **common,
    )
    return {
        "dataset": ds,
        "arch": arch,
        "layer": layer,
        "classifier_test_acc": clf_acc,
        "run_metrics": {
            k: run.config["metrics"].get(k) for k in ("mse_cladec", "mse_refae", "accuracy_cladec", "accuracy_refae")
        },
        "table": format_table(res),
        "roar_table": format_table(res_roar),
        "results": res,
        "roar": res_roar,
        "seconds": round(time.perf_counter() - t0, 1),
        "fit_seconds": round(t_fit, 1),
    }


def verdict(c: dict) -> list[str]:
    """Plain-language findings for one cell: where ClaDec's maps rank among the methods."""
    lines = []
    r = c["results"]["results"]
    for score, key, better in (
        ("deletion", "auc_mean", min),
        ("insertion", "auc_mean", max),
        ("road", "gap_mean", max),
    ):
        vals = {m: v[score][key] for m, v in r.items() if score in v}
        if not vals:
            continue
        order = sorted(vals, key=vals.get, reverse=(better is max))
        best_cladec = next(m for m in order if m.startswith("cladec"))
        rank = order.index(best_cladec) + 1
        beats = [m for m in ("random", "sobel") if m in vals and order.index(best_cladec) < order.index(m)]
        base = [m for m in order if not m.startswith("cladec") and m not in ("random", "sobel")]
        lines.append(
            f"{score}: best ClaDec variant {best_cladec} ({vals[best_cladec]:.3f}) ranks {rank}/{len(order)}; "
            f"best baseline {base[0]} ({vals[base[0]]:.3f}); beats {', '.join(beats) or 'neither random nor sobel'}"
        )
    rr = c["roar"]["results"]
    if rr:
        aucs = {m: v["roar"]["auc"] for m, v in rr.items() if "roar" in v}
        order = sorted(aucs, key=aucs.get)
        lines.append(
            "ROAR (mean accuracy over k, lower = removes more information): "
            + ", ".join(f"{m} {aucs[m]:.3f}" for m in order)
        )
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", choices=sorted(CONFIGS), default="reduced")
    ap.add_argument("--data-root", default=str(HERE.parent.parent / "shared" / "data"))
    ap.add_argument("--out", default=None, help="work directory (default /tmp/cladec-cmp-<config>)")
    ap.add_argument("--datasets", default="fashion-mnist,cifar10")
    ap.add_argument("--archs", default="vgg-paper,resnet10")
    ap.add_argument("--seeds", default=None, help="override the config's seeds, e.g. 0,1,2")
    ap.add_argument("--device", default=None)
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1: on 2 busy cores more threads make small convolutions slower)",
    )
    ap.add_argument("--no-append", action="store_true", help="do not append to benchmarks/RESULTS.md")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument(
        "--append-summary",
        default=None,
        metavar="SUMMARY_JSON",
        help="only append the cells of a summary.json written elsewhere (e.g. on a GPU machine) to "
        "RESULTS.md; give --machine, --command and --minutes with it",
    )
    ap.add_argument("--machine", default=None)
    ap.add_argument("--command", default=None)
    ap.add_argument("--minutes", type=float, default=None)
    args = ap.parse_args(argv)
    if args.append_summary:
        cells = json.loads(Path(args.append_summary).read_text())
        cfg = dict(CONFIGS[args.config])
        if args.seeds:
            cfg["seeds"] = args.seeds
        append_results(
            cells, args, cfg, "given", (args.minutes or 0) * 60, machine_text=args.machine, command=args.command
        )
        return 0
    cfg = dict(CONFIGS[args.config])
    if args.seeds:
        cfg["seeds"] = args.seeds
    device = args.device or ("cuda:0" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        torch.set_num_threads(args.threads)
    out = Path(args.out or f"/tmp/cladec-cmp-{args.config}")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    cells = []
    for ds in args.datasets.split(","):
        for arch in args.archs.split(","):
            print(f"=== {ds} / {arch} ({args.config}) ===", flush=True)
            c = cell(ds, arch, cfg, out, args.data_root, device, not args.quiet)
            cells.append(c)
            print(f"classifier test accuracy {c['classifier_test_acc']:.3f}; run {c['run_metrics']}")
            print(c["table"])
            print(c["roar_table"])
            for line in verdict(c):
                print("  " + line)
            print(f"({c['seconds']} s)", flush=True)
            (out / "summary.json").write_text(json.dumps([dict(cc) for cc in cells], indent=1, default=str))
    total = time.perf_counter() - t0
    print(f"total {total:.0f} s")
    if not args.no_append:
        append_results(cells, args, cfg, device, total)
    return 0


def machine(device: str) -> str:
    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return (
        f"{platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} thread)"
    )


def append_results(cells, args, cfg, device, total, machine_text=None, command=None) -> None:
    cmd = command or "python " + " ".join(
        shlex.quote(a) for a in [os.path.relpath(sys.argv[0], HERE.parent)] + sys.argv[1:]
    )
    lines = [
        "",
        f"### {args.config} config — {dt.datetime.now():%Y-%m-%d %H:%M}",
        "",
        f"Machine: {machine_text or machine(device)}. Command: `{cmd}`. Total {total / 60:.1f} min.",
        f"Settings: classifiers width {cfg['width']}, {cfg['train'] or 'all'} training images, "
        f"{cfg['clf_epochs']} epochs; "
        f"ClaDec/RefAE {cfg['dec_epochs']} epochs on the middle layer; {cfg['n']} test images; deletion to black, "
        f"insertion from black ({cfg['steps']} steps); ROAD 10–90 % noisy linear imputation; ROAR k = {cfg['roar_k']} "
        f"on {cfg['roar_train']} images, {cfg['roar_epochs']} epochs; seeds {cfg['seeds']}. "
        "Maps explain the predicted class.",
        "",
    ]
    for c in cells:
        lines += (
            [
                f"#### {c['dataset']} / {c['arch']} (layer {c['layer']}; "
                f"classifier test accuracy {c['classifier_test_acc']:.3f}; "
                f"ClaDec MSE {c['run_metrics']['mse_cladec']:.4f}, RefAE MSE {c['run_metrics']['mse_refae']:.4f})",
                "",
                "```",
                c["table"],
                "",
                c["roar_table"],
                "```",
                "",
            ]
            + [f"* {v}" for v in verdict(c)]
            + [
                f"* ROAR's `cladec` row is the variant that was the default when it ran: "
                f"`cladec-{c['roar'].get('cladec_default_variant', '?')}`.",
                "",
            ]
        )
    text = "\n".join(lines) + "\n"
    if RESULTS_MD.exists():
        cur = RESULTS_MD.read_text()
    else:
        cur = "# Benchmark results\n"
    if HEADING not in cur:
        cur = cur.rstrip("\n") + f"\n\n{HEADING}\n\nWritten by `benchmarks/compare_saliency.py`.\n"
        RESULTS_MD.write_text(cur)
    # insert at the end of our own section (before the next "## " heading, if any)
    cur = RESULTS_MD.read_text()
    start = cur.index(HEADING)
    nxt = cur.find("\n## ", start + len(HEADING))
    if nxt == -1:
        new = cur.rstrip("\n") + "\n" + text
    else:
        new = cur[:nxt].rstrip("\n") + "\n" + text + cur[nxt:]
    tmp = RESULTS_MD.with_suffix(".md.tmp")
    tmp.write_text(new)
    os.replace(tmp, RESULTS_MD)


if __name__ == "__main__":
    raise SystemExit(main())
