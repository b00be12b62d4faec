"""The benchmark scripts' own logic (benchmarks/ is not part of the package)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

from helpers.core import COLLAPSE_OK, png_size

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_reproduce_paper_reuses_a_classifier_only_when_trained_with_the_same_settings(
    data_root, tmp_path, one_torch_thread
):
    repro = _script("reproduce_paper")
    cfg = dict(size=32, limit=300, test_limit=200, clf_epochs=1, arch_kwargs={"vgg-paper": {"width": 0.25}})
    path = tmp_path / "fashion-mnist-vgg-paper" / "classifier"
    info = repro.train_classifier_dir(path, "fashion-mnist", "vgg-paper", cfg, str(data_root), "cpu")
    assert info["dataset"]["n_images"] == 300
    weights = (path / "model.safetensors").read_bytes()
    again = repro.train_classifier_dir(path, "fashion-mnist", "vgg-paper", cfg, str(data_root), "cpu")
    assert again == info and (path / "model.safetensors").read_bytes() == weights  # reused, not retrained
    for change, words in [
        ({"clf_epochs": 2}, "epochs 1, wanted 2"),
        ({"limit": 600}, "training images 300, wanted 600"),
        ({"size": 28}, "image size [32, 32], wanted [28, 28]"),
        ({"arch_kwargs": {"vgg-paper": {"width": 0.5}}}, "arch_kwargs['width'] 0.25, wanted 0.5"),
    ]:
        with pytest.raises(
            SystemExit, match="trained with other settings.*" + words.replace("[", r"\[").replace("]", r"\]")
        ):
            repro.train_classifier_dir(path, "fashion-mnist", "vgg-paper", {**cfg, **change}, str(data_root), "cpu")
    with pytest.raises(SystemExit, match=r"arch_kwargs\['width'\] 0.25, wanted 1.0"):  # settings naming no width
        repro.train_classifier_dir(
            path, "fashion-mnist", "vgg-paper", {**cfg, "arch_kwargs": {}}, str(data_root), "cpu"
        )
    with pytest.raises(SystemExit, match="data set 'fashion-mnist', wanted 'mnist'"):
        repro.train_classifier_dir(path, "mnist", "vgg-paper", cfg, str(data_root), "cpu")


def test_reproduce_paper_passes_its_recipe_to_the_sweep_and_records_it():
    repro = _script("reproduce_paper")
    from cladec.defaults import DEFAULT_RECIPE

    assert repro.settings(repro.parse_args([]))["recipe"] == DEFAULT_RECIPE  # recorded in the results' settings
    cfg = repro.settings(repro.parse_args(["--recipe", "fast-cosine", "--seeds", "0"]))
    assert cfg["recipe"] == "fast-cosine" and cfg["seeds"] == [0]
    with pytest.raises(SystemExit):  # refused before any classifier is trained
        repro.parse_args(["--recipe", "slow"])


def test_decoder_quality_quick_run_prints_both_decoders(data_root, capsys, one_torch_thread):
    """`benchmarks/decoder_quality.py --quick`: a smoke run of the quality table (paper and scaled decoders)."""
    bench = _script("decoder_quality")
    bench.main(["--quick", "--no-speed", "--data-root", str(data_root)])
    out = capsys.readouterr().out
    assert "| 64 | resnet18 layer4 (512×2×2) | paper | 9.31M |" in out
    assert "| 64 | resnet18 layer4 (512×2×2) | scaled | 3.08M |" in out


def test_scale_benchmark_measures_fast_and_plain_paths_in_child_processes(data_root, capsys):
    """`benchmarks/scale.py` at toy settings: one child process per phase, a row each and the table."""
    bench = _script("scale")
    argv = ["--models", "resnet18", "--kinds", "cladec", "--paths", "fast,plain", "--size", "32", "--images", "8"]
    assert bench.main([*argv, "--batch-size", "4", "--data-root", str(data_root), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [(r["kind"], r["path"]) for r in rows] == [("cladec", "fast"), ("cladec", "plain")]
    for r in rows:
        assert r["layer"] == "layer4" and r["images_per_s"] > 0 and r["peak_mb"] > 100
        assert math.isfinite(r["final_loss"]) and r["imagenet_epoch_h"] > 0
    assert rows[0]["decoder_params_M"] == rows[1]["decoder_params_M"]  # the same decoder on both paths
    assert "| resnet18 | layer4 | cladec | fast |" in out and "ImageNet epoch (h)" in out


@COLLAPSE_OK  # 256 images, 4 steps: a smoke run of the memory table, not of what the decoder learns
def test_data_memory_quick_run_prints_lazy_and_in_memory_rows(data_root, tmp_path, capsys):
    """`benchmarks/data_memory.py --quick`: a smoke run of the memory table (a lazy fit in a child process with 2
    workers, an in-memory one) on a 32 px JPEG folder written from CIFAR-10."""
    bench = _script("data_memory")
    rows = bench.main(["--quick", "--workers", "2", "--data-root", str(data_root), "--folder", str(tmp_path / "f")])
    out = capsys.readouterr().out
    assert [(r["mode"], r["n"], r["workers"]) for r in rows] == [("lazy", 256, 2), ("in memory", 128, 0)]
    assert all(r["rss_mb"] > 0 and r["images_per_s"] > 0 for r in rows) and rows[0]["workers_rss_mb"] > 0
    assert "| lazy | 256 | 2 |" in out and "| in memory | 128 | 0 |" in out
    assert len(list((tmp_path / "f" / "train").rglob("*.jpg"))) == 256


def test_time_to_quality_smoke_run_prints_the_ratio_table_and_a_png_per_recipe(
    data_root, tmp_path, capsys, one_torch_thread
):
    """`benchmarks/time_to_quality.py` at toy settings: both recipes fitted, the targets, the table, the PNGs."""
    bench = _script("time_to_quality")
    argv = [
        "--data-root",
        str(data_root),
        "--limit",
        "128",
        "--test-limit",
        "32",
        "--width",
        "0.25",
        "--batch-size",
        "32",
    ]
    argv += ["--clf-epochs", "1", "--paper-epochs", "1", "--budgets", "paper=1", "fast=1", "--out", str(tmp_path)]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    assert (
        "| kind | target (paper, 1 ep) | recipe | paper: time | recipe: time | ratio (epochs) | ratio (seconds) |"
        in out
    )
    assert "| cladec | MSE ≤ " in out and "| refae | MSE ≤ " in out and "paper 1 ep:" in out
    assert out.count("| fast | ") == 2  # a row per kind
    for recipe in ("paper", "fast"):
        assert png_size(tmp_path / f"time_to_quality_{recipe}.png")[0] > 100
    target = {"mse": 0.03, "acc": 0.8}
    points = [{"epochs": 1, "mse": 0.04, "acc": 0.9}, {"epochs": 2, "mse": 0.03, "acc": 0.79}]
    assert bench.time_to_quality(points, target, 0.0) is None  # the MSE, then the accuracy is missed
    assert bench.time_to_quality(points, target, 0.02)["epochs"] == 2


@COLLAPSE_OK  # 256 images, one epoch: a smoke run of the speed table, not of what the decoders learn
def test_distributed_benchmark_runs_one_and_two_ranks(data_root, capsys):
    """`benchmarks/distributed.py --quick`: a torchrun job per configuration (gloo on loopback), a row each."""
    bench = _script("distributed")
    rows = bench.main(["--quick", "--images", "128", "--configs", "1x1,2x1", "--data-root", str(data_root)])
    assert [(r["ranks"], r["threads"]) for r in rows] == [(1, 1), (2, 1)]
    assert all(r["images_per_s"] > 0 and 0 < r["engine_s"] <= r["wall_s"] for r in rows)
    out = capsys.readouterr().out
    assert "| 2 | 1 |" in out and "ImageNet-sized epoch" in out
