"""Shared pytest fixtures. Real data sets live in ../shared/data relative to the repository root
(see ``helpers.core.DATA_ROOT`` for how they are found)."""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_configure(config):
    """Settings of a stability measurement (``tests/stability/measure.py``): ``$CLADEC_TEST_THREADS`` sets the
    torch thread count, ``$CLADEC_STABILITY_BF16`` (0/1) what the training engine takes this CPU's native bf16
    support to be (bf16 autocast on its fast path, as on CPUs with AVX512-BF16/AMX)."""
    import os

    threads = os.environ.get("CLADEC_TEST_THREADS")
    if not threads and os.environ.get("PYTEST_XDIST_WORKER"):
        # a pytest-xdist worker (scripts/test.sh runs two on the 2-core machine): one torch thread each, and for
        # the processes it starts (OMP_NUM_THREADS), so the workers do not fight over the cores
        threads = "1"
        os.environ.setdefault("OMP_NUM_THREADS", "1")
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    # The suite trains in float32 on every CPU: the training engine's default, bf16 autocast on CPUs with
    # AVX512-BF16/AMX, would give a CI machine of another CPU type other learned figures (a claim test failed on
    # one by 0.001). Tests of the bf16 path ask for it (amp=True). CLADEC_STABILITY_BF16=1 measures the spread
    # with that default on (tests/STABILITY.md).
    import cladec.training.engine

    bf16 = os.environ.get("CLADEC_STABILITY_BF16", "0") == "1"
    cladec.training.engine.cpu_has_bf16 = lambda: bf16
    import torch

    from helpers import stability

    stability.SESSION_THREADS = torch.get_num_threads()


#: Test modules that share a session-scoped fixture which trains (``eval_setup``, ``saliency_run``, the report
#: fixtures): under pytest-xdist each group runs in one worker, so the fixture is built once.
XDIST_GROUPS = {
    "tests/evaluation/test_evaluation.py": "eval_setup",
    "tests/evaluation/test_sweep.py": "eval_setup",
    "tests/saliency/test_relevance.py": "saliency_run",
    "tests/saliency/test_saliency.py": "saliency_run",
    "tests/saliency/test_scores.py": "saliency_run",
    "tests/test_runs.py": "saliency_run",
    "tests/report/test_report_browser.py": "report",
    "tests/report/test_report_inputs.py": "report",
    "tests/report/test_study_browser.py": "report",
}

#: The groups that take longest, longest first (wall seconds of a run with two workers, 2026-12-07, 2 cores shared
#: with other jobs: eval_setup 1,100, test_lazy 530, test_explainer 240, report 230, test_real_models 134,
#: test_readme 131, test_docstring_examples 111, saliency_run 67, the others < 50): a worker takes the next group
#: when it is done, so starting with the long ones keeps both busy to the end. Every other module is its own
#: group and follows in file order.
XDIST_LONGEST_FIRST = [
    "eval_setup",
    "tests/data/test_lazy.py",
    "tests/explainers/test_explainer.py",
    "report",
    "tests/models/test_real_models.py",
    "tests/test_readme.py",
    "tests/test_docstring_examples.py",
    "saliency_run",
    "tests/cli/test_cli.py",
    "tests/test_demo.py",
    "tests/test_decoder_scaled.py",
    "tests/test_benchmarks.py",
]


def xdist_group(nodeid: str) -> str:
    """The group of a test under pytest-xdist: its module, or the shared fixture's name (``XDIST_GROUPS``)."""
    path = nodeid.split("::", 1)[0]
    return XDIST_GROUPS.get(path, path)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadfile`` (scripts/test.sh), with the modules of one ``XDIST_GROUPS`` entry as one unit.

    (xdist's own ``loadgroup`` marks tests by rewriting their node ids, which pytest 9 no longer lets it do.)
    """
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_group(nodeid)

    return GroupScheduling(config, log)


def pytest_collection_modifyitems(config, items):
    """In a pytest-xdist worker: the longest groups (``XDIST_LONGEST_FIRST``) first; the scheduler hands the
    groups out in collection order. Without xdist nothing changes."""
    import os

    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    rank = {g: i for i, g in enumerate(XDIST_LONGEST_FIRST)}
    # a stable sort: within a group, and among the groups not ranked, the collection order stays
    items.sort(key=lambda item: rank.get(xdist_group(item.nodeid), len(rank)))


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The folder with the real data sets (MNIST/raw, FashionMNIST/raw, cifar10-jpeg.zip)."""
    from helpers.core import DATA_ROOT as root

    if not (root / "FashionMNIST" / "raw").is_dir():
        pytest.fail(
            f"real data sets not found at {root}: the tests need ../shared/data beside the repository "
            "(or beside the checkout this one was cloned from), or CLADEC_TEST_DATA=<folder>"
        )
    return root


@pytest.fixture(scope="session")
def fmnist_small(data_root):
    """Fashion-MNIST as ImageDatasets: the first 3,000 training and the first 1,000 test images (28×28)."""
    from cladec.data.load import load_dataset

    train = load_dataset("fashion-mnist", root=data_root, split="train", limit=3000)
    test = load_dataset("fashion-mnist", root=data_root, split="test", limit=1000)
    return train, test


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a test module with one intra-op thread, restoring the setting afterwards.

    On this 2-core machine, with other processes busy, two OpenMP threads can make small convolutions
    ~100x slower (threads wait for each other); one thread is as fast for the tiny models in the tests.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def saliency_run(data_root, fmnist_small, tmp_path_factory):
    """For the saliency tests: a tiny classifier and a ClaDec/RefAE run on its ``conv2``, made once per session.

    vgg-paper at width 0.25 trained 2 epochs on the 3,000 ``fmnist_small`` training images, saved as a
    checkpoint; ClaDec (α = 0.001) and RefAE fitted 1 epoch on the same images. Returns the loaded
    :class:`cladec.runs.Run` (its directory is ``run.path``).
    """
    import torch

    from cladec.models import create_model
    from cladec.models.checkpoint import save_classifier
    from cladec.models.training import train_classifier
    from cladec.runs import fit_run, load_run
    from helpers.stability import seed

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train, _ = fmnist_small
        base = tmp_path_factory.mktemp("saliency")
        torch.manual_seed(seed(0))
        net = create_model("vgg-paper", in_channels=1, num_classes=10, width=0.25)
        hist = train_classifier(net, train, 2, seed=seed(0), device="cpu", verbose=False)
        meta = {"name": "fashion-mnist", "image_shape": list(train.image_shape), "classes": list(train.classes)}
        save_classifier(base / "clf", net, dataset=meta, history=hist)
        fit_run(
            base / "run",
            classifier_dir=base / "clf",
            dataset="fashion-mnist",
            layer="conv2",
            epochs=1,
            limit=3000,
            test_limit=200,
            data_root=str(data_root),
            device="cpu",
            seed=seed(0),
            verbose=False,
        )
        return load_run(base / "run", device="cpu")
    finally:
        torch.set_num_threads(before)


# --- evaluation (issue 4): a classifier, a run and a high-α ClaDec shared by test_evaluation/test_sweep ---


@pytest.fixture(scope="session")
def eval_setup(data_root, tmp_path_factory):
    """vgg-paper trained on 5,000 Fashion-MNIST images (2 epochs), saved as a checkpoint, and a run directory
    for its last conv layer ``conv4`` (ClaDec with alpha = 0.001 and the RefAE, 2 epochs each on the same 5,000
    images). Test images: the first 1,000.

    At this layer the class-information claims hold with a wide margin over 11 runs (seeds 0-9, 1 and 2
    threads, busy CPU); at ``conv2`` they did not (tests/STABILITY.md).
    """
    from types import SimpleNamespace

    import torch

    from helpers.core import claims_setup
    from helpers.stability import SESSION_THREADS, seed

    base = tmp_path_factory.mktemp("eval_setup")
    # training results depend on the thread count (reduction order): build this fixture with the session's
    # thread count (2 on the 2-core CI machine) whatever module-scoped setting (one_torch_thread) is active
    # when it is first requested
    threads = torch.get_num_threads()
    torch.set_num_threads(SESSION_THREADS)
    clf_dir, run, train, test = claims_setup(base, data_root, seed=seed(0))
    torch.set_num_threads(threads)
    return SimpleNamespace(clf_dir=clf_dir, run_dir=base / "run", run=run, train=train, test=test, data_root=data_root)
