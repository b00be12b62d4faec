"""Fixtures of the report and study tests: a tiny real sweep (built once per session) and a headless Chromium.

The sweep: a quarter-width ``vgg-paper`` classifier trained 2 epochs on 2,000 Fashion-MNIST images, then
:func:`cladec.evaluation.run_sweep` over layers conv2 and conv4 × α ∈ {0.001, 0.5} (1 epoch on 2,000 images,
no evaluation classifiers). Its reference cells are ordinary run directories with ``eval/`` inside; a demo
directory is assembled from them. Browser tests drive Debian's Chromium through Playwright; without it they
fail and say how to install it (``bash scripts/install_browser.sh``).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
INSTALL_HINT = "run `bash scripts/install_browser.sh` (installs Debian's chromium and the playwright client)"


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """``test-artifacts/`` at the repository root (git-ignored): screenshots of the pages."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def tiny_sweep(tmp_path_factory, data_root):
    """A real 2-layer × 2-α sweep directory on Fashion-MNIST (see the module docstring); ~15–40 s on 2 cores."""
    import torch

    from cladec.data.load import load_dataset
    from cladec.evaluation.sweep import run_sweep
    from cladec.models import create_model
    from cladec.models.checkpoint import save_classifier
    from cladec.models.training import train_classifier

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: one thread is as fast and immune to a busy machine
    try:
        base = tmp_path_factory.mktemp("report-fixture")
        t0 = time.perf_counter()
        torch.manual_seed(0)
        train = load_dataset("fashion-mnist", root=data_root, split="train", limit=2000)
        net = create_model("vgg-paper", 1, 10, width=0.25)
        train_classifier(net, train, 2, lr=0.05, lr_decay=None, seed=0, verbose=False)
        clf = save_classifier(
            base / "clf",
            net,
            dataset={"name": train.name, "image_shape": list(train.image_shape), "classes": list(train.classes)},
        )
        sweep = base / "sweep"
        run_sweep(
            sweep,
            classifier_dir=clf,
            dataset="fashion-mnist",
            layers=["conv2", "conv4"],
            alphas=[0.001, 0.5],
            seeds=[0],
            epochs=1,
            lr=3e-3,
            limit=2000,
            test_limit=300,
            data_root=str(data_root),
            eval_classifier=False,
            verbose=False,
        )
        print(f"\n[report fixture] classifier + sweep built in {time.perf_counter() - t0:.1f} s")
    finally:
        torch.set_num_threads(before)
    state = json.loads((sweep / "sweep.json").read_text())
    assert all(c["status"] == "done" for c in state["cells"]), state["cells"]
    return sweep


@pytest.fixture(scope="session")
def run_dir(tiny_sweep) -> Path:
    """The conv2 reference cell of the sweep: a run directory with a RefAE and ``eval/``."""
    state = json.loads((tiny_sweep / "sweep.json").read_text())
    return tiny_sweep / state["refae"]["conv2/s0"]


#: Class names of the image-folder fixture: markup that must survive the pages' HTML and JSON intact.
FOLDER_CLASSES = ("<!--<script>", 'a&b "quoted"', "plain")


def write_image_folder(root: Path, data_root: Path, *, per_class: dict[str, int], classes=FOLDER_CLASSES) -> Path:
    """Write an image folder (``root/<split>/<class>/NNNNN.png``) of real Fashion-MNIST images.

    Fashion-MNIST classes 0, 1, 2, … (read through :func:`cladec.data.load_dataset`) are saved as grey PNGs
    under the folder classes ``classes`` in that order; ``per_class`` gives the images per class and split.
    """
    import numpy as np
    from PIL import Image

    from cladec.data.load import load_dataset

    for split, n in per_class.items():
        ds = load_dataset("fashion-mnist", root=data_root, split=split, limit=40 * n)
        x, y = ds.tensors()
        for k, name in enumerate(classes):
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in (y == k).nonzero().flatten().tolist()[:n]:
                Image.fromarray((x[i, 0].numpy() * 255 + 0.5).astype(np.uint8)).save(d / f"{i:05d}.png")
    return root


@pytest.fixture(scope="session")
def make_image_folder(data_root):
    """:func:`write_image_folder` with the real data sets' folder filled in."""
    return lambda root, per_class, classes=FOLDER_CLASSES: write_image_folder(
        root, data_root, per_class=per_class, classes=classes
    )


@pytest.fixture(scope="session")
def folder_run(tmp_path_factory, tiny_sweep, data_root) -> Path:
    """A run on a 3-class image folder (class names with ``<!--``, ``&``, quotes) that explains the sweep's
    10-class Fashion-MNIST classifier: more classifier outputs than data-set classes, and other class names."""
    import torch

    from cladec import CollapseWarning
    from cladec.runs import fit_run

    base = tmp_path_factory.mktemp("folder-run")
    folder = write_image_folder(base / "images", data_root, per_class={"train": 20, "test": 8})
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CollapseWarning)  # one training step: the pages need no good decoder
            fit_run(
                base / "run",
                classifier_dir=tiny_sweep.parent / "clf",
                dataset=f"imagefolder:{folder}",
                layer="conv2",
                epochs=1,
                device="cpu",
                seed=0,
                verbose=False,
            )
    finally:
        torch.set_num_threads(before)
    return base / "run"


@pytest.fixture(scope="session")
def fake_saliency_png(tmp_path_factory) -> Path:
    """A small PNG standing in for a figure."""
    from PIL import Image

    p = tmp_path_factory.mktemp("png") / "fig.png"
    img = Image.new("RGB", (240, 120), (250, 250, 250))
    for x in range(20, 220):
        img.putpixel((x, 60 + (x % 40) - 20), (60, 80, 200))
    img.save(p)
    return p


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory, tiny_sweep, fake_saliency_png) -> Path:
    """A ``cladec demo``-like directory: ``runs/<layer>/`` (the sweep's reference cells), ``eval/<layer>/``,
    ``summary.txt`` and a saliency comparison ``cmp/`` (results.json/csv, curves.png, maps.png)."""
    state = json.loads((tiny_sweep / "sweep.json").read_text())
    demo = tmp_path_factory.mktemp("demo") / "cladec-demo"
    for layer in ("conv2", "conv4"):
        cell = tiny_sweep / state["refae"][f"{layer}/s0"]
        shutil.copytree(cell, demo / "runs" / layer, ignore=shutil.ignore_patterns("eval"))
        shutil.copytree(cell / "eval", demo / "eval" / layer)
    (demo / "summary.txt").write_text("cladec demo (test fixture)\nclassifier: vgg-paper, width 0.25\n")
    cmp = demo / "cmp"
    cmp.mkdir()
    (cmp / "results.json").write_text(
        json.dumps(
            {
                "format": "cladec-saliency",
                "format_version": 1,
                "run": str(demo / "runs" / "conv2"),
                "layer": "conv2",
                "methods": ["cladec", "gradcam", "random"],
                "scores": ["deletion", "insertion"],
                "results": {
                    m: {"deletion": {"auc_mean": a, "auc_std": 0.01}, "insertion": {"auc_mean": 1 - a, "auc_std": 0.02}}
                    for m, a in (("cladec", 0.21), ("gradcam", 0.25), ("random", 0.4))
                },
            }
        )
    )
    (cmp / "results.csv").write_text(
        "method,deletion_auc_mean,deletion_auc_std,insertion_auc_mean,insertion_auc_std\n"
        "cladec,0.21,0.01,0.79,0.02\ngradcam,0.25,0.01,0.75,0.02\nrandom,0.4,0.01,0.6,0.02\n"
    )
    shutil.copyfile(fake_saliency_png, cmp / "curves.png")
    shutil.copyfile(fake_saliency_png, cmp / "maps.png")
    return demo


def _chromium_path() -> str | None:
    env = os.environ.get("CLADEC_CHROMIUM")
    if env:
        return env if Path(env).exists() else None
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="session")
def browser():
    """A headless Chromium (Debian's, driven by Playwright). Fails — never skips — when it is missing."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(f"the browser tests need the playwright Python client: {INSTALL_HINT}", pytrace=False)
    exe = _chromium_path()
    if exe is None:
        where = (
            f"CLADEC_CHROMIUM={os.environ['CLADEC_CHROMIUM']} does not exist"
            if os.environ.get("CLADEC_CHROMIUM")
            else "no chromium on PATH"
        )
        pytest.fail(f"the browser tests need Chromium ({where}): {INSTALL_HINT}", pytrace=False)
    pw = sync_playwright().start()
    try:
        b = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
    except Exception as e:  # noqa: BLE001 - any launch failure gets the same advice
        pw.stop()
        pytest.fail(f"could not start Chromium at {exe}: {e}\n{INSTALL_HINT}", pytrace=False)
    yield b
    b.close()
    pw.stop()


class PageProbe:
    """A page with its console errors, uncaught exceptions and failed requests recorded."""

    def __init__(self, context):
        self.context = context
        self.page = context.new_page()
        self.errors: list[str] = []
        self.page.on(
            "console", lambda m: self.errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None
        )
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        self.page.on("requestfailed", lambda r: self.errors.append(f"requestfailed: {r.url} {r.failure}"))

    def open(self, index: Path) -> None:
        self.page.goto(index.resolve().as_uri(), wait_until="load")

    def broken_images(self) -> list[str]:
        """``src`` of every image that has one but did not load (naturalWidth 0); waits for pending loads."""
        self.page.wait_for_function("Array.from(document.images).every(i => i.complete)", timeout=10_000)
        return self.page.evaluate(
            "Array.from(document.images).filter(i => i.getAttribute('src') && !(i.naturalWidth > 0))"
            ".map(i => i.getAttribute('src'))"
        )


@pytest.fixture
def probe(browser):
    """A fresh browser context (own localStorage, downloads accepted) and a :class:`PageProbe` in it."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    p = PageProbe(ctx)
    yield p
    ctx.close()
