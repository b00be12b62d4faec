"""The ``Examples:`` sections of cladec's docstrings are run: each docstring's examples are one test.

Every module of the package is imported and its doctests collected (:class:`doctest.DocTestFinder`); each runs in
a fresh temporary working directory (files an example writes land there), with its module's globals and a
namespace built once per session (:func:`namespace`): a small trained classifier, data, a fitted ClaDec and
RefAE, a saved classifier checkpoint and a run directory, so that an example can show real use without
building them itself. An example marked ``# doctest: +SKIP`` says why on its line (downloads, minutes).
"""

from __future__ import annotations

import copy
import doctest
import importlib
import io
import pkgutil
from pathlib import Path
from typing import Any

import pytest

import cladec

OPTIONFLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _modules() -> list[Any]:
    mods = [cladec]
    for info in pkgutil.walk_packages(cladec.__path__, prefix="cladec."):
        mods.append(importlib.import_module(info.name))
    return mods


def _doctests() -> list[doctest.DocTest]:
    finder = doctest.DocTestFinder()  # exclude_empty: docstrings without examples are not tests
    tests: list[doctest.DocTest] = []
    for module in _modules():
        tests.extend(t for t in finder.find(module, module.__name__) if t.examples)
    return sorted(tests, key=lambda t: t.name)


DOCTESTS = _doctests()


def test_the_examples_are_found():
    """The finder sees the package's modules: a silently empty collection would test nothing."""
    names = {t.name for t in DOCTESTS}
    assert len(DOCTESTS) > 100
    assert {
        "cladec.models",
        "cladec.runs.fit.fit_run",
        "cladec.explainers.cladec.ClaDec",
        "cladec.cli.main.main",
    } <= names
    assert len(names) == len(DOCTESTS)  # the ids are unique


@pytest.fixture(scope="session")
def namespace(tmp_path_factory) -> dict[str, Any]:
    """What the examples may use without building it, made once per session (~15 s on one busy core).

    * ``torch``, ``nn``, ``np``, ``Path``, ``cladec``;
    * ``train`` (the first 2,000 training images of the embedded ``fashion-mnist-mini``) and ``test`` (its
      first 200 test images), :class:`cladec.data.ImageDataset` s; ``x``, ``y``: the first 16 test images
      (a float tensor ``(16, 1, 28, 28)`` in [0, 1]) and their labels;
    * ``classifier``: ``vgg-paper`` at width 0.25 trained 1 epoch on ``train`` (eval mode; examples must not
      train it further), saved as the checkpoint directory ``clf_dir``;
    * ``explainer``: a ClaDec (α = 0.001) for ``conv4`` of ``classifier``, and ``refae``, its RefAE, each
      fitted 1 epoch on the first 1,000 images of ``train`` (``helpers.core.QUICK`` settings);
    * ``run_dir``: a run directory (:func:`cladec.runs.fit_run`) for ``conv2`` of the checkpoint, fitted
      1 epoch on 500 images;
    * ``sweep_dir``: a sweep directory (:func:`cladec.evaluation.run_sweep`) of the checkpoint's ``conv2`` at
      α = 0 and 0.001, seed 0, fitted as ``run_dir``, without evaluation classifiers (examples must not
      write into it: ``cladec.cli.sweep.cmd_sweep``'s example resumes a copy).
    """
    import numpy as np
    import torch
    from torch import nn

    from cladec.data.load import load_dataset
    from cladec.evaluation.sweep import run_sweep
    from cladec.explainers.cladec import ClaDec
    from cladec.explainers.refae import RefAE
    from cladec.models import create_model
    from cladec.models.checkpoint import save_classifier
    from cladec.models.training import train_classifier
    from cladec.runs import fit_run
    from helpers.core import QUICK

    base = tmp_path_factory.mktemp("docstring-examples")
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # small convolutions on a busy 2-core machine (conftest.one_torch_thread)
    try:
        train = load_dataset("fashion-mnist-mini", split="train", limit=2000)
        test = load_dataset("fashion-mnist-mini", split="test", limit=200)
        torch.manual_seed(0)
        classifier = create_model("vgg-paper", in_channels=1, num_classes=10, width=0.25)
        hist = train_classifier(classifier, train, 1, test_data=test, seed=0, device="cpu", verbose=False)
        assert hist["test_acc"][-1] > 0.5
        clf_dir = save_classifier(base / "clf", classifier, dataset=train, history=hist)
        fit_data = train.subset(range(1000))  # at conv4 (1×1) fewer images risk a collapsed decoder
        explainer = ClaDec(classifier, "conv4", alpha=0.001).fit(fit_data, epochs=1, verbose=False, **QUICK)
        refae = RefAE.like(explainer).fit(fit_data, epochs=1, verbose=False, **QUICK)
        assert not explainer.collapsed and not refae.collapsed
        run = fit_run(
            base / "run",
            classifier_dir=clf_dir,
            dataset="fashion-mnist-mini",
            layer="conv2",
            epochs=1,
            limit=500,
            test_limit=100,
            device="cpu",
            verbose=False,
            **QUICK,
        )
        assert not run.cladec.collapsed and run.refae is not None and not run.refae.collapsed
        sweep = run_sweep(
            base / "sweep",
            classifier_dir=clf_dir,
            dataset="fashion-mnist-mini",
            layers=["conv2"],
            alphas=[0, 0.001],
            seeds=[0],
            epochs=1,
            limit=500,
            test_limit=100,
            eval_classifier=False,
            device="cpu",
            verbose=False,
            **QUICK,
        )
        assert len(sweep["rows"]) == 4  # original, refae, cladec at each α
    finally:
        torch.set_num_threads(before)
    x, y = test.tensors()
    return {
        "torch": torch,
        "nn": nn,
        "np": np,
        "Path": Path,
        "cladec": cladec,
        "train": train,
        "test": test,
        "x": x[:16],
        "y": y[:16],
        "classifier": classifier,
        "clf_dir": Path(clf_dir),
        "explainer": explainer,
        "refae": refae,
        "run_dir": base / "run",
        "sweep_dir": base / "sweep",
    }


@pytest.mark.parametrize("test", DOCTESTS, ids=[t.name for t in DOCTESTS])
def test_docstring_examples(test: doctest.DocTest, namespace, tmp_path, monkeypatch, one_torch_thread):
    monkeypatch.chdir(tmp_path)
    test = copy.copy(test)  # the runner clears its globals afterwards; the collected test stays intact
    test.globs = {**test.globs, **namespace}
    runner = doctest.DocTestRunner(verbose=False, optionflags=OPTIONFLAGS)
    report = io.StringIO()
    result = runner.run(test, out=report.write)
    if result.failed:
        pytest.fail(f"{result.failed} of {result.attempted} examples failed:\n{report.getvalue()}", pytrace=False)
    skipped = sum(bool(ex.options.get(doctest.SKIP)) for ex in test.examples)
    if skipped == len(test.examples):
        pytest.skip(f"its {skipped} example(s) are marked +SKIP")
