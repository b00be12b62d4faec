"""Reproduce the ClaDec paper's claims (Schneider & Vlachos 2022) with cladec.

For each data set (Fashion-MNIST, MNIST, CIFAR-10) and classifier (vgg-paper, resnet10):

1. train the classifier (kept in ``OUT/<dataset>-<arch>/classifier``; reused when present);
2. run an α sweep (:func:`cladec.evaluation.run_sweep`) over two layers (``model.default_layers``: the last conv
   block and a middle block), several seeds, with one RefAE per (layer, seed) as the control;
3. print a table: the classifier's test accuracy; test MSE of ClaDec (α = 0.001) vs RefAE; the classifier's
   accuracy on ClaDec vs RefAE reconstructions; the evaluation classifier's accuracy; and the α trade-off
   (MSE and accuracy at the smallest and largest α);
4. append it (date, machine, command, figures) under "## Reproduction of the paper's claims" in
   ``benchmarks/RESULTS.md``.

Everything is resumable: re-running the same command skips trained classifiers and finished sweep cells.

Usage::

    python benchmarks/reproduce_paper.py --config reduced --data-root ../shared/data --out /tmp/repro
    python benchmarks/reproduce_paper.py --config full --data-root DATA --out repro-full      # on a GPU

``--config reduced`` is the configuration measured on 2 CPU cores: 3k training images, 2 decoder epochs, 1k test
images, α ∈ {0, 0.001, 0.9}, 3 seeds, resnet10 at width 0.5 — 44.5 min with part of it on a shared CPU, about
39 min idle (``--seeds 0`` takes about a third); ``--config full`` uses all images and the authors' 5 epochs per
phase (for a GPU).
Any setting can be overridden (``--datasets``, ``--archs``, ``--limit``, ``--seeds``, ``--alphas``, ...).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from cladec.defaults import DEFAULT_RECIPE, RECIPE_NAMES  # noqa: E402  (torch-free)

CONFIGS = {
    "reduced": dict(
        datasets=["fashion-mnist", "mnist", "cifar10"],
        archs=["vgg-paper", "resnet10"],
        size=32,
        limit=3000,
        test_limit=1000,
        clf_epochs=3,
        epochs=2,
        seeds=[0, 1, 2],
        alphas=[0.0, 0.001, 0.9],
        eval_classifier=True,
        eval_epochs=1,
        arch_kwargs={"resnet10": {"width": 0.5}},
    ),
    "full": dict(
        datasets=["fashion-mnist", "mnist", "cifar10"],
        archs=["vgg-paper", "resnet10"],
        size=32,
        limit=None,
        test_limit=None,
        clf_epochs=5,
        epochs=5,
        seeds=[0, 1, 2],
        alphas=[0.0, 0.001, 0.01, 0.1, 0.5, 0.9, 0.99, 0.999, 1.0],
        eval_classifier=True,
        eval_epochs=5,
        arch_kwargs={},
    ),
}

REFERENCE = (
    "Reference (authors' code, Fashion-MNIST, 60k images, 5 epochs per phase, last conv block (512-d), "
    "α = 0.001): classifier test accuracy 0.925; test MSE ClaDec 0.032 vs RefAE 0.015; classifier accuracy "
    "on ClaDec reconstructions 0.906 vs 0.764 on RefAE reconstructions."
)
HEADING = "## Reproduction of the paper's claims"


def _csv(conv):
    return lambda s: [conv(t) for t in s.split(",") if t.strip()]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", choices=sorted(CONFIGS), default="reduced")
    p.add_argument("--out", default="repro", help="work directory (classifiers, sweeps, table.md)")
    p.add_argument("--data-root", default=None)
    p.add_argument("--datasets", type=_csv(str), default=None)
    p.add_argument("--archs", type=_csv(str), default=None)
    p.add_argument("--limit", type=int, default=None, help="training images (0 = all)")
    p.add_argument("--test-limit", type=int, default=None, help="test images (0 = all)")
    p.add_argument("--clf-epochs", type=int, default=None)
    p.add_argument("--epochs", type=int, default=None, help="decoder epochs")
    p.add_argument("--seeds", type=_csv(int), default=None)
    p.add_argument("--alphas", type=_csv(float), default=None)
    p.add_argument("--eval-epochs", type=int, default=None)
    p.add_argument("--no-eval-classifier", action="store_true")
    p.add_argument("--resnet-width", type=float, default=None, help="width of resnet10 (reduced: 0.5)")
    p.add_argument("--device", default=None)
    p.add_argument(
        "--recipe",
        choices=RECIPE_NAMES,
        default=DEFAULT_RECIPE,
        help=f"the explainers' training recipe (default: {DEFAULT_RECIPE})",
    )
    p.add_argument("--no-results", action="store_true", help="do not append to benchmarks/RESULTS.md")
    p.add_argument("--report-only", action="store_true", help="only tabulate what is finished")
    return p.parse_args(argv)


def settings(args) -> dict:
    cfg = json.loads(json.dumps(CONFIGS[args.config]))
    for k in ("datasets", "archs", "clf_epochs", "epochs", "seeds", "alphas", "eval_epochs"):
        v = getattr(args, k)
        if v is not None:
            cfg[k] = v
    for k in ("limit", "test_limit"):
        v = getattr(args, k)
        if v is not None:
            cfg[k] = None if v == 0 else v
    if args.no_eval_classifier:
        cfg["eval_classifier"], cfg["eval_epochs"] = False, None
    if args.resnet_width is not None:
        cfg["arch_kwargs"].setdefault("resnet10", {})["width"] = args.resnet_width
    cfg["recipe"] = args.recipe
    if 0.001 not in cfg["alphas"]:
        cfg["alphas"].insert(0, 0.001)
    return cfg


def train_classifier_dir(path: Path, dataset: str, arch: str, cfg: dict, data_root, device) -> dict:
    import torch

    from cladec.data.load import load_dataset
    from cladec.models import create_model
    from cladec.models.checkpoint import load_classifier, save_classifier
    from cladec.models.predict import accuracy
    from cladec.models.training import train_classifier

    if (path / "classifier.json").is_file():
        _, info = load_classifier(path)
        n_train = cfg["limit"]
        if n_train is None:  # the whole training split: count it
            n_train = len(load_dataset(dataset, root=data_root, split="train", size=cfg["size"]))
        problems = classifier_mismatch(info, dataset, arch, cfg, n_train)
        if problems:
            raise SystemExit(
                f"[repro] {path} holds a classifier trained with other settings than this run asks for "
                f"({'; '.join(problems)}): delete that folder or give another --out"
            )
        return info
    train = load_dataset(dataset, root=data_root, split="train", size=cfg["size"], limit=cfg["limit"])
    test = load_dataset(dataset, root=data_root, split="test", size=cfg["size"], limit=cfg["test_limit"])
    torch.manual_seed(0)
    net = create_model(
        arch, in_channels=train.image_shape[0], num_classes=train.num_classes, **cfg["arch_kwargs"].get(arch, {})
    )
    if device:
        net.to(device)
    t0 = time.perf_counter()
    hist = train_classifier(net, train, cfg["clf_epochs"], seed=0, verbose=False)
    secs = time.perf_counter() - t0
    acc = accuracy(net, test)
    save_classifier(path, net, dataset=train, metrics={"test_acc": acc, "train_seconds": round(secs, 1)}, history=hist)
    print(f"[repro] {dataset}/{arch}: classifier test accuracy {acc:.4f} ({secs:.0f} s)", flush=True)
    _, info = load_classifier(path)
    return info


def classifier_mismatch(info: dict, dataset: str, arch: str, cfg: dict, n_train: int) -> list[str]:
    """How a saved classifier's recorded settings differ from what this run would train (empty: reusable)."""
    out = []
    ds = info.get("dataset") or {}
    hist = info.get("history") or {}

    def differ(what, got, want):
        if got != want:
            out.append(f"{what} {got!r}, wanted {want!r}")

    differ("architecture", info.get("arch"), arch)
    from cladec.models import list_models, model_kwargs

    if arch in list_models():  # every argument but the data's, with the defaults filled in on both sides
        defaults = {k: v for k, v in model_kwargs(arch).items() if k not in ("in_channels", "num_classes")}
        got = {**defaults, **{k: v for k, v in (info.get("arch_kwargs") or {}).items() if k in defaults}}
        want = {**defaults, **cfg["arch_kwargs"].get(arch, {})}
        for k in sorted(want):
            differ(f"arch_kwargs[{k!r}]", got.get(k), want[k])
    differ("data set", ds.get("name"), dataset)
    size = ds.get("size") or (ds.get("image_shape") or [None])[1:]
    differ("image size", list(size), [cfg["size"], cfg["size"]])
    differ("training images", ds.get("n_images"), n_train)
    differ("epochs", len(hist.get("epoch", [])), cfg["clf_epochs"])
    return out


def _row(rows, layer, method, alpha=None):
    for r in rows:
        if r["layer"] == layer and r["method"] == method and (alpha is None or r["alpha"] == alpha):
            return r
    return None


def _ms(r, key, digits=3):
    if r is None or r.get(f"{key}_mean") is None:
        return "–"
    m, s = r[f"{key}_mean"], r.get(f"{key}_std")
    return f"{m:.{digits}f} ± {s:.{digits}f}" if s is not None else f"{m:.{digits}f} (n=1)"


def table(results: list[dict]) -> str:
    head = (
        "| data set | classifier (test acc) | layer | MSE ClaDec α=0.001 | MSE RefAE | acc on ClaDec | "
        "acc on RefAE | eval-clf acc ClaDec / RefAE / orig | α sweep: MSE (α min → max) | "
        "α sweep: acc (α min → max) | collapsed |"
    )
    lines = [head, "|" + "|".join(["---"] * (head.count("|") - 1)) + "|"]
    for res in results:
        rows = res["summary"]["rows"]
        for layer in res["layers"]:
            c = _row(rows, layer, "cladec", 0.001)
            r = _row(rows, layer, "refae")
            o = _row(rows, layer, "original")
            al = sorted({x["alpha"] for x in rows if x["layer"] == layer and x["method"] == "cladec"})
            lo, hi = (_row(rows, layer, "cladec", al[0]), _row(rows, layer, "cladec", al[-1])) if al else (None, None)
            coll = sum((x.get("collapsed") or 0) for x in rows if x["layer"] == layer and x["method"] != "original")
            ev = " / ".join(_ms(x, "eval_accuracy") for x in (c, r, o))
            lines.append(
                f"| {res['dataset']} | {res['arch']} ({res['clf_acc']:.3f}) "
                f"| {layer} ({res['layer_shapes'].get(layer, '')}) "
                f"| {_ms(c, 'mse', 4)} | {_ms(r, 'mse', 4)} | {_ms(c, 'accuracy')} | {_ms(r, 'accuracy')} | {ev} "
                f"| α={al[0]:g}: {_ms(lo, 'mse', 4)} → α={al[-1]:g}: {_ms(hi, 'mse', 4)} "
                f"| {_ms(lo, 'accuracy')} → {_ms(hi, 'accuracy')} | {coll} |"
                if al
                else f"| {res['dataset']} | – |"
            )
    return "\n".join(lines)


def claims(results: list[dict]) -> str:
    out = []
    for res in results:
        rows = res["summary"]["rows"]
        for layer in res["layers"]:
            c, r = _row(rows, layer, "cladec", 0.001), _row(rows, layer, "refae")
            al = sorted({x["alpha"] for x in rows if x["layer"] == layer and x["method"] == "cladec"})
            if not (c and r and al):
                continue
            lo, hi = _row(rows, layer, "cladec", al[0]), _row(rows, layer, "cladec", al[-1])
            checks = [
                ("RefAE MSE < ClaDec MSE", r["mse_mean"] < c["mse_mean"]),
                ("acc on ClaDec > acc on RefAE", c["accuracy_mean"] > r["accuracy_mean"]),
                (f"acc rises from α={al[0]:g} to α={al[-1]:g}", hi["accuracy_mean"] > lo["accuracy_mean"]),
            ]
            out.append(
                f"* {res['dataset']} / {res['arch']} / {layer}: "
                + "; ".join(f"{name}: {'yes' if ok else 'NO'}" for name, ok in checks)
            )
    return "\n".join(out)


def machine() -> str:
    import torch

    dev = "CPU"
    if torch.cuda.is_available():
        dev = f"GPU {torch.cuda.get_device_name(0)}"
    import os

    return (
        f"{platform.node() or 'host'}: {platform.platform()}, Python {platform.python_version()}, torch "
        f"{torch.__version__}, {os.cpu_count()} CPU cores, {dev}"
    )


def append_results(text: str) -> None:
    path = ROOT / "benchmarks" / "RESULTS.md"
    content = path.read_text() if path.exists() else "# Benchmark results\n"
    if HEADING not in content:
        content = content.rstrip("\n") + f"\n\n{HEADING}\n"
    start = content.index(HEADING) + len(HEADING)
    nxt = content.find("\n## ", start)
    end = len(content) if nxt < 0 else nxt
    section = content[start:end].rstrip("\n") + "\n\n" + text.strip("\n") + "\n"
    content = content[:start] + section + ("\n" + content[end:].lstrip("\n") if nxt >= 0 else "")
    from cladec._io import write_bytes

    write_bytes(path, content.encode())


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = settings(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import torch

    from cladec.capture import LayerCapture
    from cladec.evaluation.sweep import run_sweep
    from cladec.evaluation.sweep_summary import summarize_sweep
    from cladec.models.checkpoint import load_classifier

    results = []
    t_all = time.perf_counter()
    for arch in cfg["archs"]:
        for dataset in cfg["datasets"]:
            base = out / f"{dataset}-{arch}"
            t0 = time.perf_counter()
            if args.report_only:
                if not (base / "sweep" / "sweep.json").is_file():
                    continue
                info = load_classifier(base / "classifier")[1]
            else:
                info = train_classifier_dir(base / "classifier", dataset, arch, cfg, args.data_root, args.device)
            model, _ = load_classifier(base / "classifier")
            layers = [model.default_layers["last"], model.default_layers["middle"]]
            shapes = {}
            for layer in layers:
                cap = LayerCapture(model, layer)
                shapes[layer] = "×".join(map(str, cap.probe(torch.zeros(2, *info["dataset"]["image_shape"]))))
            if args.report_only:
                summary = summarize_sweep(base / "sweep")
            else:
                summary = run_sweep(
                    base / "sweep",
                    classifier_dir=base / "classifier",
                    dataset=dataset,
                    layers=layers,
                    alphas=cfg["alphas"],
                    seeds=cfg["seeds"],
                    epochs=cfg["epochs"],
                    limit=cfg["limit"],
                    test_limit=cfg["test_limit"],
                    data_root=args.data_root,
                    size=cfg["size"],
                    eval_classifier=cfg["eval_classifier"],
                    eval_epochs=cfg["eval_epochs"],
                    device=args.device,
                    verbose=False,
                    recipe=cfg["recipe"],
                )
            results.append(
                {
                    "dataset": dataset,
                    "arch": arch,
                    "clf_acc": info["metrics"]["test_acc"],
                    "layers": layers,
                    "layer_shapes": shapes,
                    "summary": summary,
                    "seconds": round(time.perf_counter() - t0, 1),
                }
            )
            (out / "table.md").write_text(table(results) + "\n\n" + claims(results) + "\n")
            print(f"[repro] {dataset}/{arch} done in {results[-1]['seconds']:.0f} s", flush=True)
    tab = table(results)
    cl = claims(results)
    print(tab)
    print(cl)
    total = time.perf_counter() - t_all
    cmd = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
    text = "\n".join(
        [
            f"### {_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} — `--config {args.config}`",
            "",
            f"* machine: {machine()}",
            f"* command: `{cmd}`",
            f"* settings: {json.dumps(cfg)}",
            f"* wall time: {total / 60:.1f} min" + (" (report only)" if args.report_only else ""),
            "* figures: mean ± std over seeds on the test images; 'acc' = the explained classifier's accuracy on "
            "the reconstructions; eval-clf = a fresh classifier of the same architecture trained and tested on "
            "the image set.",
            "",
            tab,
            "",
            "Claims:",
            cl,
            "",
            f"{REFERENCE}",
        ]
    )
    (out / "results.md").write_text(text + "\n")
    if not args.no_results and results:
        append_results(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
