"""Time to quality (issue 19): wall seconds until a fit's test MSE (and the classifier's accuracy on ClaDec's
reconstructions) reach target figures, for the paper's recipe (Adam 3e-4, constant) against another recipe.

The targets are what the paper recipe reaches after ``--paper-epochs`` epochs (on a reduced data set, its own
targets). Each recipe is fitted with every budget in its ``--budgets`` list, each budget a separate fit from the
same initial weights (a scheduled recipe's learning rate depends on its budget, so it cannot be read off one
long fit); a fit's seconds are its wall time (``fit()``), test evaluation excluded. The recipes' fits alternate
(paper budget 1, other budget 1, paper budget 2, ...) so that the load of a shared machine falls on both alike.
A recipe's time to quality is the seconds of its smallest budget that meets every target of its kind: ClaDec's
test MSE ≤ the paper's and its reconstructions' accuracy ≥ the paper's (− ``--acc-slack``), RefAE's test
MSE ≤ the paper's. The table prints both times and their ratio; one PNG per recipe plots test MSE against
seconds (``--out``).

Examples::

    python benchmarks/time_to_quality.py --data-root /work/shared/data               # ~15 min on 2 CPU cores
    python benchmarks/time_to_quality.py --data-root /work/shared/data --limit 300 --test-limit 100 \\
        --width 0.25 --clf-epochs 1 --paper-epochs 1 --budgets paper=1 fast=1          # smoke run, seconds
"""

from __future__ import annotations

import argparse
import datetime as _dt
import platform
import time
import warnings
from pathlib import Path
from typing import Any

import torch

import cladec
from cladec.data import load_dataset
from cladec.models import create_model
from cladec.models.predict import accuracy
from cladec.models.training import train_classifier

KINDS = ("cladec", "refae")


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", default=None)
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--limit", type=int, default=10000, help="training images (default: 10,000)")
    p.add_argument("--test-limit", type=int, default=1000)
    p.add_argument("--arch", default="vgg-paper")
    p.add_argument("--width", type=float, default=0.5, help="classifier width (conv4: 512·width channels)")
    p.add_argument("--clf-epochs", type=int, default=3)
    p.add_argument("--layer", default="conv4")
    p.add_argument("--alpha", type=float, default=0.001)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--paper-epochs", type=int, default=4, help="the targets: the paper recipe after this many")
    p.add_argument("--recipe", default="fast", help="the recipe compared with the paper's")
    p.add_argument(
        "--budgets",
        nargs="+",
        default=["paper=1,2,4", "fast=1,2"],
        metavar="RECIPE=E,E",
        help="epoch budgets per recipe (the paper's must include --paper-epochs)",
    )
    p.add_argument("--kinds", default="cladec,refae")
    p.add_argument("--acc-slack", type=float, default=0.0, help="accuracy target: the paper's minus this")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/out", help="folder for the PNGs")
    return p.parse_args(argv)


def fit_eval(kind: str, model, layer: str, recipe: str, epochs: int, train, test, a) -> dict[str, Any]:
    """One fit of ``epochs`` epochs with ``recipe``: its wall seconds, test MSE and (ClaDec) accuracy."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", cladec.CollapseWarning)  # a short paper fit may collapse: its MSE says so
        if kind == "cladec":
            e = cladec.ClaDec(model, layer, alpha=a.alpha)
        else:
            e = cladec.RefAE(model, layer, init_seed=a.seed)
        t0 = time.perf_counter()
        e.fit(train, epochs=epochs, batch_size=a.batch_size, recipe=recipe, seed=a.seed, verbose=False)
        seconds = time.perf_counter() - t0
    xt, yt = test.tensors()
    rec = e.reconstruct(xt)
    mse = float(((rec - xt) ** 2).mean())
    acc = accuracy(model, (rec, yt)) if kind == "cladec" else None
    return {"kind": kind, "recipe": recipe, "epochs": epochs, "seconds": seconds, "mse": mse, "acc": acc}


def reached(point: dict[str, Any], target: dict[str, Any], slack: float) -> bool:
    """Whether a fit meets the targets of its kind (MSE, and for ClaDec the accuracy on its reconstructions)."""
    ok = point["mse"] <= target["mse"] + 1e-12
    if point["acc"] is not None and target["acc"] is not None:
        ok = ok and point["acc"] >= target["acc"] - slack - 1e-12
    return ok


def time_to_quality(points: list[dict[str, Any]], target: dict[str, Any], slack: float) -> dict[str, Any] | None:
    """The smallest budget's fit that meets the targets, or None."""
    hits = [p for p in sorted(points, key=lambda p: p["epochs"]) if reached(p, target, slack)]
    return hits[0] if hits else None


def budgets(specs: list[str]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for s in specs:
        name, _, eps = s.partition("=")
        out[name] = sorted({int(e) for e in eps.split(",")})
    return out


def plot(recipe: str, points: list[dict[str, Any]], targets: dict[str, dict], path: Path) -> None:
    """Test MSE against fit seconds for one recipe, one line per kind, the targets dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.4))
    for i, kind in enumerate(sorted({p["kind"] for p in points})):
        pts = sorted((p for p in points if p["kind"] == kind), key=lambda p: p["seconds"])
        color = f"C{i}"
        ax.plot([p["seconds"] for p in pts], [p["mse"] for p in pts], "o-", color=color, label=kind)
        for p in pts:
            ax.annotate(
                f"{p['epochs']} ep", (p["seconds"], p["mse"]), fontsize=7, xytext=(3, 3), textcoords="offset points"
            )
        ax.axhline(targets[kind]["mse"], color=color, ls="--", lw=0.8)
    ax.set_xlabel("fit wall time (s)")
    ax.set_ylabel("test MSE")
    ax.set_title(f"recipe {recipe}: test MSE vs seconds (dashed: targets)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    plan = budgets(a.budgets)
    if a.paper_epochs not in plan.get("paper", []):
        raise SystemExit(f"--budgets paper=... must include --paper-epochs {a.paper_epochs}")
    if a.recipe not in plan:
        raise SystemExit(f"--budgets needs {a.recipe}=E,... for --recipe {a.recipe}")
    kinds = a.kinds.split(",")
    train = load_dataset(a.dataset, root=a.data_root, split="train", limit=a.limit)
    test = load_dataset(a.dataset, root=a.data_root, split="test", limit=a.test_limit)
    torch.manual_seed(a.seed)
    model = create_model(a.arch, in_channels=train.image_shape[0], num_classes=train.num_classes, width=a.width)
    t0 = time.perf_counter()
    hist = train_classifier(model, train, a.clf_epochs, test_data=test, seed=a.seed, verbose=False)
    model.eval()
    print(
        f"# time to quality — {_dt.date.today()}, {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; {a.dataset} {len(train)} train / "
        f"{len(test)} test, {a.arch} width {a.width:g} (test accuracy {hist['test_acc'][-1]:.3f}, "
        f"{time.perf_counter() - t0:.0f} s), layer {a.layer}, α = {a.alpha:g}, batch {a.batch_size}"
    )
    points: dict[str, list[dict[str, Any]]] = {r: [] for r in ("paper", a.recipe)}
    for kind in kinds:
        steps = max(len(plan["paper"]), len(plan[a.recipe]))
        for i in range(steps):  # alternate the recipes' fits: the machine's load falls on both alike
            for r in ("paper", a.recipe):
                if i < len(plan[r]):
                    p = fit_eval(kind, model, a.layer, r, plan[r][i], train, test, a)
                    points[r].append(p)
                    acc = f", acc {p['acc']:.3f}" if p["acc"] is not None else ""
                    print(
                        f"  {kind} {r} {p['epochs']} ep: {p['seconds']:.1f} s, test MSE {p['mse']:.4f}{acc}", flush=True
                    )
    targets = {}
    for kind in kinds:
        ref = next(p for p in points["paper"] if p["kind"] == kind and p["epochs"] == a.paper_epochs)
        targets[kind] = {"mse": ref["mse"], "acc": ref["acc"]}
    print()
    print(f"| kind | target (paper, {a.paper_epochs} ep) | paper: time | {a.recipe}: time (epochs) | ratio |")
    print("| --- | --- | --- | --- | --- |")
    for kind in kinds:
        t = targets[kind]
        goal = f"MSE ≤ {t['mse']:.4f}" + (f", acc ≥ {t['acc'] - a.acc_slack:.3f}" if t["acc"] is not None else "")
        hit_p = time_to_quality([p for p in points["paper"] if p["kind"] == kind], t, a.acc_slack)
        hit_r = time_to_quality([p for p in points[a.recipe] if p["kind"] == kind], t, a.acc_slack)
        tp = f"{hit_p['seconds']:.1f} s ({hit_p['epochs']} ep)" if hit_p else "not reached"
        tr = f"{hit_r['seconds']:.1f} s ({hit_r['epochs']} ep)" if hit_r else "not reached"
        ratio = f"{hit_p['seconds'] / hit_r['seconds']:.1f}×" if hit_p and hit_r else "—"
        print(f"| {kind} | {goal} | {tp} | {tr} | {ratio} |")
    for r, pts in points.items():
        path = Path(a.out) / f"time_to_quality_{r}.png"
        plot(r, pts, targets, path)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
