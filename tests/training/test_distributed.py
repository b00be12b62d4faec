"""Data-parallel training over two gloo ranks on this CPU (``torchrun --standalone``, traffic on 127.0.0.1 only).

A fit on 2 ranks with global batch B equals a fit in one process with batch B and the same seed: the same
optimiser steps over the same images. For ClaDec (a decoder without BatchNorm or dropout) it is the same
computation up to the order of float sums; RefAE's encoder and the classifier normalise over each rank's half of
the batch (BatchNorm) and draw their own dropout masks, so they agree as two fits of one recipe do. The tolerances
below were measured over seeds 0-4 ($CLADEC_STABILITY_SEED; the spread next to each), on a busy 2-core machine; each
process trains with one torch thread (torchrun's ranks: OMP_NUM_THREADS=1; this process: one_torch_thread), so
the thread count of the suite does not enter.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cladec.cli import main
from cladec.training.distributed import shard_order
from helpers.stability import margin, seed

SCRIPT = Path(__file__).resolve().parents[1] / "helpers" / "ddp_script.py"
#: Whatever the test does, a torchrun job that runs longer than this has hung.
TIMEOUT_S = 300


def start(args: list[str], data_root: Path, cwd: Path, *, module: bool = True) -> subprocess.Popen:
    """Start ``torchrun --standalone --nproc_per_node=2`` of ``python -m cladec ARGS`` (or of a script), on
    loopback; :func:`finish` waits for it."""
    env = dict(os.environ, CLADEC_DATA=str(data_root), OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo")
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[2] / "src"), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += ["-m", "cladec", *args] if module else args
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> subprocess.CompletedProcess:
    try:
        out, err = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def torchrun(args: list[str], data_root: Path, cwd: Path, *, module: bool = True) -> subprocess.CompletedProcess:
    return finish(start(args, data_root, cwd, module=module))


def history(path: Path) -> list[float]:
    return [h["loss"] for h in json.loads(path.read_text())["history"]]


@pytest.fixture(scope="module")
def runs(data_root, tmp_path_factory, one_torch_thread):
    """A classifier (one process), and ClaDec + RefAE fitted for its conv3 on one process and on two ranks."""
    base = tmp_path_factory.mktemp("ddp")
    s = str(seed(0))
    clf = ["train-classifier", "--dataset", "fashion-mnist", "--limit", "2048", "--test-limit", "500"]
    clf += ["--width", "0.25", "--epochs", "2", "--batch-size", "64", "--seed", s, "-q"]
    # the two ranks' jobs run beside the one-process jobs (one thread each: all of the 2 cores busy)
    proc = start([*clf, "--out", str(base / "clf2")], data_root, base)
    assert main([*clf, "--data-root", str(data_root), "--out", str(base / "clf1")]) == 0
    clf2 = finish(proc)
    assert clf2.returncode == 0, clf2.stderr[-3000:]
    fit = ["fit", "--model", str(base / "clf1"), "--layer", "conv3", "--epochs", "2", "--limit", "1024"]
    fit += ["--test-limit", "500", "--batch-size", "64", "--lr", "1e-3", "--seed", s, "-q"]
    proc = start([*fit, "--out", str(base / "run2")], data_root, base)
    assert main([*fit, "--data-root", str(data_root), "--out", str(base / "run1")]) == 0
    two = finish(proc)
    assert two.returncode == 0, two.stderr[-3000:]
    return base, two, clf2


def test_shard_order_splits_every_global_batch_into_equal_rank_slices():
    order = torch.randperm(23, generator=torch.Generator().manual_seed(0))
    parts = [shard_order(order, 8, r, 2) for r in range(2)]
    assert {b for _, b in parts} == {4}
    for step in range(2):  # full batches: rank r's slice is the r-th half of the batch one process trains on
        got = torch.cat([p[step * 4 : (step + 1) * 4] for p, _ in parts])
        assert torch.equal(got, order[step * 8 : (step + 1) * 8])
    # the last batch of 7 images: 3 each, one image left out of this epoch
    assert [len(p) for p, _ in parts] == [11, 11]
    assert torch.equal(torch.cat([parts[0][0][8:], parts[1][0][8:]]), order[16:22])


def test_fit_on_two_ranks_equals_one_process(runs):
    base, two, _ = runs
    one_cfg = json.loads((base / "run1" / "run.json").read_text())
    two_cfg = json.loads((base / "run2" / "run.json").read_text())
    assert (one_cfg["world_size"], two_cfg["world_size"]) == (1, 2)
    fit2 = json.loads((base / "run2" / "cladec" / "cladec.json").read_text())["fit_config"]
    assert fit2["world_size"] == 2 and fit2["batch_size"] == 64 and fit2["steps"] == 2 * 16  # global steps
    assert "layer conv3" in two.stdout and two.stdout.count("wrote run directory") == 1  # rank 0 prints only
    # ClaDec: the same computation up to float sums; epoch losses rel. diff. measured 0..3.8e-4, test MSE 0..2.2e-3
    h1, h2 = (history(base / r / "cladec" / "cladec.json") for r in ("run1", "run2"))
    for a, b in zip(h1, h2, strict=True):
        margin("ddp: ClaDec epoch loss, 2 ranks vs 1 (rel. diff.)", abs(a - b) / a, "<", 2e-3)
    m1, m2 = one_cfg["metrics"], two_cfg["metrics"]
    margin(
        "ddp: ClaDec test MSE, 2 ranks vs 1 (rel. diff.)",
        abs(m1["mse_cladec"] - m2["mse_cladec"]) / m1["mse_cladec"],
        "<",
        0.01,
    )
    # RefAE: BatchNorm over each rank's half batch; rel. diff. measured: epoch losses 0.15-2.2%, test MSE 0.8-4.7%
    h1, h2 = (history(base / r / "refae" / "cladec.json") for r in ("run1", "run2"))
    for a, b in zip(h1, h2, strict=True):
        margin("ddp: RefAE epoch loss, 2 ranks vs 1 (rel. diff.)", abs(a - b) / a, "<", 0.1)
    margin(
        "ddp: RefAE test MSE, 2 ranks vs 1 (rel. diff.)",
        abs(m1["mse_refae"] - m2["mse_refae"]) / m1["mse_refae"],
        "<",
        0.15,
    )


def test_run_of_two_ranks_loads_and_explains_in_one_process(runs, data_root, tmp_path, one_torch_thread):
    from cladec.runs import load_run

    base, _, _ = runs
    run = load_run(base / "run2")
    x, _ = run.dataset("test", limit=500, data_root=str(data_root)).tensors()
    # the metrics rank 0 recorded, from the saved weights in this process; MSE / mean image's MSE measured
    # ClaDec 0.50-0.58, RefAE 0.63-0.78 (seeds 0-4)
    for kind in ("cladec", "refae"):
        mse = float(((getattr(run, kind).reconstruct(x) - x) ** 2).mean())
        assert mse == pytest.approx(run.config["metrics"][f"mse_{kind}"], rel=1e-4)
        margin(
            f"ddp: {kind} run of 2 ranks beats the mean image (MSE ratio)",
            mse / float(((x - x.mean(0)) ** 2).mean()),
            "<",
            0.9,
        )
    out = tmp_path / "triplets.png"
    assert (
        main(["explain", "--run", str(base / "run2"), "--n", "8", "--out", str(out), "--data-root", str(data_root)])
        == 0
    )
    assert out.stat().st_size > 1000


def test_train_classifier_on_two_ranks(runs, data_root):
    from cladec.data import load_dataset
    from cladec.models import accuracy, load_classifier

    base, _, clf2 = runs
    assert clf2.stdout.count("wrote classifier checkpoint") == 1
    one = json.loads((base / "clf1" / "classifier.json").read_text())
    two = json.loads((base / "clf2" / "classifier.json").read_text())
    assert len(two["history"]["train_loss"]) == 2
    # BatchNorm per half batch and per-rank dropout: two fits of one recipe; |Δ acc| measured 0.006-0.034
    margin(
        "ddp: classifier test accuracy, 2 ranks vs 1 (abs. diff.)",
        abs(one["metrics"]["test_acc"] - two["metrics"]["test_acc"]),
        "<",
        0.12,
    )
    model, _ = load_classifier(base / "clf2")  # a checkpoint of 2 ranks in one process
    test = load_dataset("fashion-mnist", root=data_root, split="test", limit=500)
    assert accuracy(model, test) == pytest.approx(two["metrics"]["test_acc"], abs=1e-6)


def test_train_classifier_on_two_ranks_streams_a_lazily_read_data_set_in_shards(data_root, tmp_path):
    """`--lazy`: each rank decodes its shard (DistributedSampler) and the engine trains the model in DDP."""
    from cladec.data import load_dataset
    from cladec.models import accuracy, load_classifier

    clf = ["train-classifier", "--dataset", "fashion-mnist", "--lazy", "--limit", "1024", "--test-limit", "300"]
    clf += ["--width", "0.25", "--epochs", "2", "--batch-size", "64", "--seed", str(seed(0)), "-q"]
    res = torchrun([*clf, "--out", str(tmp_path / "clf")], data_root, tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    info = json.loads((tmp_path / "clf" / "classifier.json").read_text())
    loss = info["history"]["train_loss"]
    assert len(loss) == 2 and loss[1] < loss[0]
    # learned: test accuracy measured 0.527-0.693 over seeds 0-4, 1 thread per rank (chance: 0.1)
    margin("ddp: lazily streamed classifier, test accuracy", info["metrics"]["test_acc"], ">", 0.4)
    model, _ = load_classifier(tmp_path / "clf")
    test = load_dataset("fashion-mnist", root=data_root, split="test", limit=300)
    assert accuracy(model, test) == pytest.approx(info["metrics"]["test_acc"], abs=1e-6)


def test_users_own_torchrun_script_fits_and_saves_on_rank_0(runs, data_root, tmp_path):
    import cladec
    from cladec.models import load_classifier

    base, _, _ = runs
    out = tmp_path / "e"
    res = torchrun(
        [str(SCRIPT), "fit", str(base / "clf1"), str(data_root), str(out), "0"], data_root, tmp_path, module=False
    )
    assert res.returncode == 0, res.stderr[-3000:]
    losses = dict(re.findall(r"rank (\d): losses (\[[^\]]*\])", res.stdout))
    assert len(losses) == 2 and len(set(losses.values())) == 1  # all-reduced: every rank reports the same figures
    assert res.stdout.count("refused: batch_size is the global batch over all 2 ranks and must be a multiple of 2") == 2
    model, _ = load_classifier(base / "clf1")
    e = cladec.load(out, model)
    assert e.fit_config["world_size"] == 2 and e.fitted and e.fit_config["n_val"] == 128
    assert "val_mse" in e.history[-1]


def test_a_failing_rank_stops_every_rank_and_writes_nothing(runs, data_root, tmp_path):
    base, _, _ = runs
    out = tmp_path / "run"
    res = torchrun(
        [str(SCRIPT), "fail", str(base / "clf1"), str(data_root), str(out), "0"], data_root, tmp_path, module=False
    )
    assert res.returncode != 0  # within TIMEOUT_S (else TimeoutExpired): torchrun stopped rank 0, training 50 epochs
    assert "not-on-this-node" in res.stderr  # the failing rank's error
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".run")]


def test_other_commands_refuse_to_run_data_parallel(runs, monkeypatch, capsys):
    base, _, _ = runs
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["explain", "--run", str(base / "run2"), "--out", str(base / "t.png")]) == 2
    assert "does not run data-parallel" in capsys.readouterr().err and not (base / "t.png").exists()


def test_sweep_and_its_evaluation_classifiers_on_two_ranks(runs, data_root):
    base, _, _ = runs
    out = base / "sweep"
    args = ["sweep", "--model", str(base / "clf1"), "--dataset", "fashion-mnist", "--layers", "conv3"]
    args += ["--alphas", "0.001", "--epochs", "1", "--eval-epochs", "1", "--limit", "512", "--test-limit", "256"]
    args += ["--batch-size", "64", "--lr", "1e-3", "-q", "--out", str(out)]
    res = torchrun(args, data_root, base)
    assert res.returncode == 0, res.stderr[-3000:]
    cells = json.loads((out / "sweep.json").read_text())["cells"]
    assert [c["status"] for c in cells] == ["done"]
    assert json.loads((out / cells[0]["run"] / "run.json").read_text())["world_size"] == 2
    metrics = json.loads((out / cells[0]["eval"] / "metrics.json").read_text())
    assert metrics  # the evaluation (with its evaluation classifiers, trained on both ranks) was written once
    assert not list(out.rglob("*.tmp"))


def test_an_interrupted_fit_on_two_ranks_resumes_in_one_process(runs, data_root, tmp_path, capsys, one_torch_thread):
    """Interrupted by SIGTERM after its epoch-1 checkpoint, a 2-rank fit is resumed by `cladec fit --resume`."""
    import signal

    from cladec.runs import load_run

    base, _, _ = runs
    out = tmp_path / "run"
    ckpt = tmp_path / "run.checkpoint" / "cladec+refae.pt"
    s = str(seed(0))
    proc = start(
        [str(SCRIPT), "resume", str(base / "clf1"), str(data_root), str(out), s], data_root, tmp_path, module=False
    )
    try:
        while not ckpt.is_file() and proc.poll() is None:  # the first epoch's checkpoint: then interrupt the fit
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=TIMEOUT_S)
    finally:
        proc.kill()
    assert ckpt.is_file() and not out.exists(), "interrupted after its first epoch, before the run was written"
    argv = ["fit", "--model", str(base / "clf1"), "--dataset", "fashion-mnist", "--data-root", str(data_root)]
    argv += ["--layer", "conv3", "--epochs", "2", "--limit", "1024", "--test-limit", "500", "--lr", "1e-3"]
    argv += ["--seed", s, "--out", str(out), "--resume", "-q"]
    assert main([*argv, "--batch-size", "32"]) == 2  # the command line, in this one process
    assert "batch_size 64 there, 32 now" in capsys.readouterr().err and ckpt.is_file() and not out.exists()
    assert main([*argv, "--batch-size", "64"]) == 0  # resumed from the checkpoint of two ranks
    run = load_run(out)
    assert run.cladec.fit_config["resumed_from_epoch"] == 1 and not ckpt.parent.exists()
    assert [h["epoch"] for h in run.cladec.history] == [1, 2]
    # equals the uninterrupted fit of one process (run1): ClaDec to the float-sum tolerance above
    h1 = history(base / "run1" / "cladec" / "cladec.json")
    for a, b in zip(h1, [h["loss"] for h in run.cladec.history], strict=True):
        margin("ddp: ClaDec epoch loss, resumed vs uninterrupted (rel. diff.)", abs(a - b) / a, "<", 2e-3)
    h1 = history(base / "run1" / "refae" / "cladec.json")
    for a, b in zip(h1, [h["loss"] for h in run.refae.history], strict=True):
        margin("ddp: RefAE epoch loss, resumed vs uninterrupted (rel. diff.)", abs(a - b) / a, "<", 0.1)
