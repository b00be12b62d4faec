"""Time to quality (issue 19): epochs and wall seconds until a fit's test MSE (and the classifier's accuracy on
ClaDec's reconstructions) reach target figures, for the paper's recipe (Adam 3e-4, constant) against others.

The targets are what the paper recipe reaches after ``--paper-epochs`` epochs (on a reduced data set, its own
targets). A recipe whose learning rate never changes (``paper``) is fitted once, for its largest budget, and
evaluated after every epoch: its fit of k epochs is the first k epochs of the longer one (same seed, same
shuffling order). A scheduled recipe (warm-up, decay) depends on its budget, so each budget in its
``--budgets`` list is a separate fit from the same initial weights. Seconds are fit wall time (test evaluation
excluded). A recipe's time to quality is its smallest budget that meets every target of its kind: ClaDec's test
MSE ≤ the paper's and its reconstructions' accuracy ≥ the paper's (− ``--acc-slack``), RefAE's test MSE ≤ the
paper's. The table prints, per kind and recipe, both times and their ratios in epochs (the same per-step cost
for every recipe: the ratio a loaded machine cannot blur) and in seconds. One PNG per recipe plots test MSE
against seconds (``--out``). ``--recipes`` takes the names of :data:`cladec.training.schedule.RECIPES` and the
search candidates of :data:`CANDIDATES`.

Examples::

    python benchmarks/time_to_quality.py --data-root /work/shared/data --threads 1 \\
        --budgets paper=5 fast=1,2 --recipes fast                                   # ~40 min on 1 CPU thread
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
from cladec.training.schedule import RECIPES, Recipe

KINDS = ("cladec", "refae")

#: Candidates of the recipe search (issue 19), beside :data:`RECIPES`: ``kP`` = linear warm-up over 5 % of the
#: steps to peak P, then constant; ``cP`` = the same warm-up, then cosine down to 0.05 × P at the last step.
CANDIDATES: dict[str, Recipe] = {
    "k1e-3": Recipe("k1e-3", lr=1e-3, warmup=0.05),
    "k2e-3": Recipe("k2e-3", lr=2e-3, warmup=0.05),
    "c1e-3": Recipe("c1e-3", lr=1e-3, warmup=0.05, decay="cosine", final=0.05),
    "c2e-3": Recipe("c2e-3", lr=2e-3, warmup=0.05, decay="cosine", final=0.05),
    "c3e-3": Recipe("c3e-3", lr=3e-3, warmup=0.05, decay="cosine", final=0.05),  # = RECIPES["fast-cosine"]
    "c5e-3": Recipe("c5e-3", lr=5e-3, warmup=0.05, decay="cosine", final=0.05),
}


def recipe(name: str) -> Recipe:
    """A recipe of :data:`RECIPES` or :data:`CANDIDATES` by name."""
    if name in RECIPES:
        return RECIPES[name]
    if name in CANDIDATES:
        return CANDIDATES[name]
    raise SystemExit(f"unknown recipe {name!r}; valid: {', '.join([*RECIPES, *CANDIDATES])}")


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
    p.add_argument("--paper-epochs", type=int, default=5, help="the targets: the paper recipe after this many")
    p.add_argument("--recipes", nargs="+", default=["fast"], help="the recipes compared with the paper's")
    p.add_argument(
        "--budgets",
        nargs="+",
        default=["paper=5", "fast=1,2"],
        metavar="RECIPE=E,E",
        help="epoch budgets per recipe (the paper's largest must be at least --paper-epochs)",
    )
    p.add_argument("--kinds", default="cladec,refae")
    p.add_argument("--acc-slack", type=float, default=0.0, help="accuracy target: the paper's minus this")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/out", help="folder for the PNGs")
    return p.parse_args(argv)


def fit_eval(kind: str, model, rname: str, epochs: int, train, test, a) -> list[dict[str, Any]]:
    """One fit of ``epochs`` epochs with recipe ``rname``: a point (epochs, seconds, test MSE, ClaDec's accuracy)
    after every epoch for a constant recipe, else one point at the end."""
    rcp = recipe(rname)
    xt, yt = test.tensors()
    points: list[dict[str, Any]] = []
    clock = {"eval": 0.0, "t0": 0.0}

    def evaluate(e, done: int) -> None:
        t = time.perf_counter()
        rec = e.reconstruct(xt)
        mse = float(((rec - xt) ** 2).mean())
        acc = accuracy(model, (rec, yt)) if kind == "cladec" else None
        seconds = t - clock["t0"] - clock["eval"]
        points.append({"kind": kind, "recipe": rname, "epochs": done, "seconds": seconds, "mse": mse, "acc": acc})
        clock["eval"] += time.perf_counter() - t

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", cladec.CollapseWarning)  # a short paper fit may collapse: its MSE says so
        warnings.filterwarnings("ignore", message=".*has not been fitted")  # evaluated mid-fit: it is being fitted
        if kind == "cladec":
            e = cladec.ClaDec(model, a.layer, alpha=a.alpha)
        else:
            e = cladec.RefAE(model, a.layer, init_seed=a.seed)
        if not rcp.scheduled:  # evaluated after every epoch, through the engine task's epoch hook
            begin = e._fit_begin

            def fit_begin(*args, **kw):
                task = begin(*args, **kw)
                task.on_epoch_end = lambda rec: (evaluate(e, int(rec["epoch"])), rec)[1]
                return task

            e._fit_begin = fit_begin  # type: ignore[method-assign]
        clock["t0"] = time.perf_counter()
        e.fit(train, epochs=epochs, batch_size=a.batch_size, recipe=rcp, seed=a.seed, verbose=False)
        if rcp.scheduled:
            evaluate(e, epochs)
    return points


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


def plot(rname: str, points: list[dict[str, Any]], targets: dict[str, dict], path: Path) -> None:
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
    ax.set_title(f"recipe {rname}: test MSE vs seconds (dashed: targets)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _fmt(hit: dict[str, Any] | None) -> str:
    return f"{hit['epochs']} ep, {hit['seconds']:.1f} s" if hit else "not reached"


def _ratio(hit_p: dict[str, Any] | None, hit_r: dict[str, Any] | None, key: str) -> str:
    return f"{hit_p[key] / hit_r[key]:.1f}×" if hit_p and hit_r else "—"


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    plan = budgets(a.budgets)
    for name in plan:
        recipe(name)  # an unknown name: refused before any fit
    paper_budget = max(plan.get("paper", [0]))
    if paper_budget < a.paper_epochs or (recipe("paper").scheduled and a.paper_epochs not in plan["paper"]):
        raise SystemExit(f"--budgets paper=... must reach --paper-epochs {a.paper_epochs}")
    missing = [r for r in a.recipes if r not in plan]
    if missing:
        raise SystemExit(f"--budgets needs {missing[0]}=E,... for --recipes {missing[0]}")
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
    names = ["paper", *[r for r in a.recipes if r != "paper"]]
    points: dict[str, list[dict[str, Any]]] = {r: [] for r in names}
    for kind in kinds:
        for r in names:
            fits = [max(plan[r])] if not recipe(r).scheduled else plan[r]
            for epochs in fits:
                pts = fit_eval(kind, model, r, epochs, train, test, a)
                points[r].extend(p for p in pts if p["epochs"] in plan[r] or not recipe(r).scheduled)
                for p in pts:
                    acc = f", acc {p['acc']:.3f}" if p["acc"] is not None else ""
                    print(
                        f"  {kind} {r} {p['epochs']} ep: {p['seconds']:.1f} s, test MSE {p['mse']:.4f}{acc}", flush=True
                    )
    targets = {}
    for kind in kinds:
        ref = next(p for p in points["paper"] if p["kind"] == kind and p["epochs"] == a.paper_epochs)
        targets[kind] = {"mse": ref["mse"], "acc": ref["acc"]}
    print()
    print(
        f"| kind | target (paper, {a.paper_epochs} ep) | recipe | paper: time | recipe: time "
        "| ratio (epochs) | ratio (seconds) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for kind in kinds:
        t = targets[kind]
        goal = f"MSE ≤ {t['mse']:.4f}" + (f", acc ≥ {t['acc'] - a.acc_slack:.3f}" if t["acc"] is not None else "")
        hit_p = time_to_quality([p for p in points["paper"] if p["kind"] == kind], t, a.acc_slack)
        for r in names[1:]:
            hit_r = time_to_quality([p for p in points[r] if p["kind"] == kind], t, a.acc_slack)
            row = [
                kind,
                goal,
                r,
                _fmt(hit_p),
                _fmt(hit_r),
                _ratio(hit_p, hit_r, "epochs"),
                _ratio(hit_p, hit_r, "seconds"),
            ]
            print("| " + " | ".join(row) + " |")
    for r, pts in points.items():
        path = Path(a.out) / f"time_to_quality_{r}.png"
        plot(r, pts, targets, path)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
