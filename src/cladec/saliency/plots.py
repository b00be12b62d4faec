"""The plots of a saliency comparison: curves.png and maps.png."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .._io import atomic_path


def _savefig(fig, path: Path) -> None:

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def plot_curves(path: Path, result: dict) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    panels: list[tuple[str, str, str | None]] = []  # (title, score, sub-curve)
    sc = result["scores"]
    if "deletion" in sc:
        panels.append(("deletion (↓ AUC)", "deletion", None))
    if "insertion" in sc:
        panels.append(("insertion (↑ AUC)", "insertion", None))
    if "road" in sc:
        panels.append(("ROAD MoRF (↓)", "road", "morf"))
        panels.append(("ROAD LeRF (↑)", "road", "lerf"))
    if "roar" in sc:
        panels.append(("ROAR test accuracy (↓)", "roar", None))
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.1), squeeze=False)
    for ax, (title, score, sub) in zip(axes[0], panels, strict=True):
        ax.set_prop_cycle(color=list(plt.cm.tab20.colors))  # type: ignore[attr-defined]  # a ListedColormap
        for method, r in result["results"].items():
            if score not in r:
                continue
            e = r[score]
            style: dict[str, Any] = dict(lw=2.2) if method.startswith("cladec") else dict(lw=1.0)
            if method in ("random", "sobel"):
                style["ls"] = "--"
            if score in ("deletion", "insertion"):
                ax.plot(e["fractions"], e["curve"], label=f"{method} ({e['auc_mean']:.3f})", **style)
                ax.set_xlabel("fraction of pixels")
                ax.set_ylabel("p(target)")
            elif score == "road":
                ax.plot(e["fractions"], e[sub], marker=".", label=method, **style)
                ax.set_xlabel("fraction removed")
                ax.set_ylabel("accuracy (target)")
            else:
                ax.plot(e["k"], e["accuracy_mean"], marker=".", label=method, **style)
                ax.set_xlabel("k (% removed)")
                ax.set_ylabel("test accuracy after retraining")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=6)
    if len(panels) > 1:
        axes[0][1].legend(fontsize=6)
    fig.suptitle(f"{result['dataset']['name']}, layer {result['layer']}, n = {result['dataset']['n']}", fontsize=9)
    fig.tight_layout()
    _savefig(fig, path)
    plt.close(fig)


def plot_maps(path: Path, x, x_r, x_e, maps: dict, classes, target) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    def show(ax, img):
        a = img.detach().float().clamp(0, 1).cpu()
        if a.shape[0] == 1:
            ax.imshow(a[0].numpy(), cmap="gray", vmin=0, vmax=1)
        else:
            ax.imshow(a.permute(1, 2, 0).numpy())

    cols = [("input", None), ("RefAE x̂_R", None), ("ClaDec x̂_E", None)] + [(m, m) for m in maps]
    rows = x.shape[0]
    fig, axes = plt.subplots(rows, len(cols), figsize=(1.15 * len(cols), 1.2 * rows + 0.3), squeeze=False)
    for i in range(rows):
        for j, (title, m) in enumerate(cols):
            ax = axes[i][j]
            ax.axis("off")
            if j == 0:
                show(ax, x[i])
                name = classes[int(target[i])] if classes else str(int(target[i]))
                ax.text(0.5, -0.05, f"pred: {name}"[:16], transform=ax.transAxes, ha="center", va="top", fontsize=5)
            elif j == 1:
                if x_r is not None:
                    show(ax, x_r[i])
            elif j == 2:
                show(ax, x_e[i])
            else:
                mp = maps[m][i].float().cpu()
                lim = float(mp.abs().max()) or 1.0
                if float(mp.min()) < 0:
                    ax.imshow(mp.numpy(), cmap="bwr", vmin=-lim, vmax=lim)
                else:
                    ax.imshow(mp.numpy(), cmap="inferno", vmin=0, vmax=lim)
            if i == 0:
                ax.set_title(title, fontsize=6)
    fig.tight_layout(pad=0.3)
    _savefig(fig, path)
    plt.close(fig)
