"""cladec.evaluation.sweep: cells, one shared RefAE per (layer, seed), resume, configuration checks, summary."""

import argparse
import csv
import json

import pytest

from cladec import ConfigError
from cladec.evaluation.sweep import cell_name, run_sweep
from cladec.evaluation.sweep_summary import summarize_sweep
from helpers.core import assert_bad_devices_refused
from helpers.stability import margin

# the tiny cells (600 images, 1 epoch) may collapse; these tests check the sweep's bookkeeping, not quality
pytestmark = pytest.mark.filterwarnings("ignore::cladec.CollapseWarning")

SMALL = dict(
    dataset="fashion-mnist",
    layers=["conv2"],
    seeds=[0],
    epochs=1,
    limit=600,
    test_limit=200,
    eval_classifier=False,
    verbose=False,
)


@pytest.fixture(scope="module")
def sweep_dir(eval_setup, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "sw"
    run_sweep(out, classifier_dir=eval_setup.clf_dir, alphas=[0.0, 1.0], data_root=str(eval_setup.data_root), **SMALL)
    return out


def test_cells_and_shared_refae(sweep_dir):
    state = json.loads((sweep_dir / "sweep.json").read_text())
    assert state["format"] == "cladec-sweep"
    cells = {(c["layer"], c["alpha"], c["seed"]): c for c in state["cells"]}
    assert set(cells) == {("conv2", 0.0, 0), ("conv2", 1.0, 0)}
    assert all(c["status"] == "done" for c in cells.values())
    first, second = cells[("conv2", 0.0, 0)], cells[("conv2", 1.0, 0)]
    # the first cell of (layer, seed) holds the RefAE; the second points at it and has none of its own
    assert state["refae"] == {"conv2/s0": first["run"]}
    assert (sweep_dir / first["run"] / "refae" / "cladec.json").is_file()
    assert not (sweep_dir / second["run"] / "refae").exists() and second["refae"] == first["run"]
    for c in cells.values():
        assert (sweep_dir / c["run"] / "run.json").is_file()
        assert (sweep_dir / c["eval"] / "metrics.json").is_file()
    assert second["run"] == f"cells/{cell_name('conv2', 1.0, 0)}"


def test_summary_outputs(sweep_dir):
    for f in ("summary.csv", "summary.json", "tradeoff.png"):
        assert (sweep_dir / f).is_file()
    rows = list(csv.DictReader((sweep_dir / "summary.csv").open()))
    assert [(r["method"], r["alpha"]) for r in rows] == [
        ("original", ""),
        ("refae", ""),
        ("cladec", "0"),
        ("cladec", "1"),
    ]
    s = summarize_sweep(sweep_dir, write=False)
    by = {(r["method"], r["alpha"]): r for r in s["rows"]}
    # one seed: a mean without a spread (not "± 0"), and how many cells had the metric
    assert by[("cladec", 1.0)]["n_seeds"] == 1 and by[("cladec", 1.0)]["mse_std"] is None
    assert by[("cladec", 1.0)]["mse_n"] == 1 and rows[-1]["mse_std"] == "" and rows[-1]["mse_n"] == "1"
    assert cell_name("conv2", 0.9999999, 0) != cell_name("conv2", 1.0, 0)  # :g once gave both "a1"
    # α = 1 ignores reconstruction: a much larger error than α = 0
    margin(
        "sweep: MSE at alpha 1 / at alpha 0",
        by[("cladec", 1.0)]["mse_mean"] / by[("cladec", 0.0)]["mse_mean"],
        ">",
        1.0,
    )


def test_resume_adds_only_new_cells(eval_setup, sweep_dir):
    before = {p.name: (p / "run.json").stat().st_mtime_ns for p in (sweep_dir / "cells").iterdir()}
    run_sweep(
        sweep_dir,
        classifier_dir=eval_setup.clf_dir,
        alphas=[0.0, 1.0, 0.5],
        data_root=str(eval_setup.data_root),
        **SMALL,
    )
    after = {p.name: (p / "run.json").stat().st_mtime_ns for p in (sweep_dir / "cells").iterdir()}
    assert {k: after[k] for k in before} == before  # finished cells were not recomputed
    new = set(after) - set(before)
    assert new == {cell_name("conv2", 0.5, 0)}
    state = json.loads((sweep_dir / "sweep.json").read_text())
    assert state["alphas"] == [0.0, 1.0, 0.5]
    assert not (sweep_dir / "cells" / cell_name("conv2", 0.5, 0) / "refae").exists()


def test_other_configuration_is_refused(eval_setup, sweep_dir):
    cfg = dict(SMALL, epochs=2)
    with pytest.raises(ConfigError, match=r"another configuration.*epochs: 1 .* vs 2"):
        run_sweep(sweep_dir, classifier_dir=eval_setup.clf_dir, alphas=[0.0], **cfg)
    with pytest.raises(ConfigError, match="dataset: 'fashion-mnist'.*'mnist'"):
        run_sweep(sweep_dir, classifier_dir=eval_setup.clf_dir, alphas=[0.0], **dict(SMALL, dataset="mnist"))
    recorded = json.loads((sweep_dir / "sweep.json").read_text())["config"]["recipe"]
    other = "fast" if recorded != "fast" else "paper"
    with pytest.raises(ConfigError, match=f"recipe: '{recorded}' in the directory vs '{other}' now"):
        run_sweep(sweep_dir, classifier_dir=eval_setup.clf_dir, alphas=[0.0], recipe=other, **SMALL)


def test_the_recipe_and_its_rate_are_recorded_and_an_older_sweep_is_the_papers(eval_setup, sweep_dir, tmp_path):
    """Every cell is fitted with the sweep's recipe; a sweep from before recipes (no "recipe", lr 3e-4 recorded)
    was fitted with the paper's and resumes with recipe="paper" and no lr."""
    import shutil

    from cladec.defaults import DEFAULT_RECIPE
    from cladec.training.schedule import RECIPES

    state = json.loads((sweep_dir / "sweep.json").read_text())
    assert state["config"]["recipe"] == DEFAULT_RECIPE and state["config"]["lr"] == RECIPES[DEFAULT_RECIPE].lr
    for c in state["cells"]:
        run = json.loads((sweep_dir / c["run"] / "run.json").read_text())
        assert (run["recipe"], run["lr"]) == (DEFAULT_RECIPE, RECIPES[DEFAULT_RECIPE].lr)
    old = tmp_path / "old"
    shutil.copytree(sweep_dir, old)
    del state["config"]["recipe"]
    state["config"]["lr"] = 3e-4
    (old / "sweep.json").write_text(json.dumps(state))
    before = {p.name: (p / "run.json").stat().st_mtime_ns for p in (old / "cells").iterdir()}
    kw = dict(SMALL, classifier_dir=eval_setup.clf_dir, alphas=[0.0, 1.0], data_root=str(eval_setup.data_root))
    run_sweep(old, recipe="paper", **kw)
    assert {p.name: (p / "run.json").stat().st_mtime_ns for p in (old / "cells").iterdir()} == before
    with pytest.raises(ConfigError, match="recipe: 'paper' in the directory vs 'fast-cosine' now"):
        run_sweep(old, recipe="fast-cosine", **kw)
    with pytest.raises(ConfigError, match=r"^unknown recipe 'slow'; valid: paper, fast, fast-cosine, warm-cosine"):
        run_sweep(tmp_path / "new", recipe="slow", **kw)
    assert not (tmp_path / "new").exists()


def test_older_sweep_with_eval_epochs_but_no_evaluation_classifiers_resumes(eval_setup, sweep_dir, tmp_path):
    """Earlier versions recorded eval_epochs even with eval_classifier=False (now refused as ignored): such a sweep
    must still resume with the same settings, which can no longer name eval_epochs."""
    import shutil

    old = tmp_path / "old"
    shutil.copytree(sweep_dir, old)
    state = json.loads((old / "sweep.json").read_text())
    assert state["config"]["eval_classifier"] is False
    state["config"]["eval_epochs"] = 1
    (old / "sweep.json").write_text(json.dumps(state))
    s = run_sweep(
        old, classifier_dir=eval_setup.clf_dir, alphas=[0.0, 1.0], data_root=str(eval_setup.data_root), **SMALL
    )
    assert {("cladec", 0.0), ("cladec", 1.0)} <= {(r["method"], r["alpha"]) for r in s["rows"]}


def test_cli_sweep_refuses_other_configuration(eval_setup, sweep_dir):
    from cladec.cli.sweep import register

    parser = argparse.ArgumentParser(prog="cladec")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "sweep",
            "--model",
            str(eval_setup.clf_dir),
            "--dataset",
            "fashion-mnist",
            "--layers",
            "conv2",
            "--alphas",
            "0,1",
            "--seeds",
            "0",
            "--epochs",
            "1",
            "--limit",
            "999",
            "--test-limit",
            "200",
            "--no-eval-classifier",
            "--out",
            str(sweep_dir),
            "--quiet",
        ]
    )
    assert args.layers == ["conv2"] and args.alphas == [0.0, 1.0]
    with pytest.raises(ConfigError, match="limit: 600"):
        args.func(args)
    args.limit, args.recipe = 600, "fast" if args.recipe != "fast" else "paper"  # --recipe reaches the sweep
    with pytest.raises(ConfigError, match=f"recipe: .* vs '{args.recipe}' now"):
        args.func(args)
    with pytest.raises(SystemExit):
        parser.parse_args(["sweep", "--recipe", "slow"])


def test_cli_sweep_with_one_seed_prints_its_table(eval_setup, sweep_dir, capsys):
    """The default (one seed) has no spread: the table shows values alone (it once crashed on the None std)."""
    from cladec.cli.sweep import register
    from cladec.evaluation.sweep_summary import format_summary_table

    parser = argparse.ArgumentParser(prog="cladec")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "sweep",
            "--model",
            str(eval_setup.clf_dir),
            "--dataset",
            "fashion-mnist",
            "--layers",
            "conv2",
            "--alphas",
            "0,1",
            "--seeds",
            "0",
            "--epochs",
            "1",
            "--limit",
            "600",
            "--test-limit",
            "200",
            "--no-eval-classifier",
            "--data-root",
            str(eval_setup.data_root),
            "--out",
            str(sweep_dir),
            "--quiet",
        ]
    )
    assert args.func(args) == 0  # every cell is done: resumes, summarises, prints
    out = capsys.readouterr().out
    s = summarize_sweep(sweep_dir, write=False)
    mse = {(r["method"], r["alpha"]): r["mse_mean"] for r in s["rows"]}
    assert f"{mse[('cladec', 1.0)]:.4f}" in out and "±" not in out
    assert format_summary_table(s) in out


def test_bad_arguments(eval_setup, tmp_path):
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        run_sweep(tmp_path / "s", classifier_dir=eval_setup.clf_dir, alphas=[1.5], **SMALL)
    with pytest.raises(ConfigError, match="classifier.json"):
        run_sweep(tmp_path / "s", classifier_dir=tmp_path, alphas=[0.0], **SMALL)


def test_layers_device_and_lr_are_checked_before_anything_is_written(eval_setup, tmp_path):
    """sweep.json was written first, then the cell failed on the unknown layer / device (a traceback)."""
    out = tmp_path / "s"
    kw = dict(SMALL, classifier_dir=eval_setup.clf_dir, alphas=[0.0], data_root=str(eval_setup.data_root))
    with pytest.raises(ConfigError, match="unknown layer 'nope'"):
        run_sweep(out, **dict(kw, layers=["conv2", "nope"]))
    with pytest.raises(ConfigError, match="'nope' is not a device"):
        run_sweep(out, device="nope", **kw)
    with pytest.raises(ConfigError, match="lr must be a positive number"):
        run_sweep(out, lr=float("nan"), **kw)
    with pytest.raises(ConfigError, match="eval_epochs sets the evaluation classifiers"):  # it would be ignored
        run_sweep(out, eval_epochs=2, **kw)  # SMALL has eval_classifier=False
    assert not out.exists()


def test_cli_sweep_refuses_a_bad_device_before_any_work(eval_setup, tmp_path, capsys):
    from cladec.cli.main import main

    base = [
        "sweep",
        "--model",
        str(eval_setup.clf_dir),
        "--dataset",
        "fashion-mnist",
        "--layers",
        "conv2",
        "--alphas",
        "0",
        "--epochs",
        "1",
        "--limit",
        "600",
        "--test-limit",
        "200",
        "--no-eval-classifier",
        "--data-root",
        str(eval_setup.data_root),
        "--out",
        str(tmp_path / "sw"),
        "--quiet",
    ]
    assert_bad_devices_refused(base, capsys)
    assert main(base + ["--eval-epochs", "2"]) == 2  # only the evaluation classifiers use it
    assert "--eval-epochs sets up the evaluation classifiers" in capsys.readouterr().err
    assert not (tmp_path / "sw").exists()


def test_layer_roles_name_the_architecture_layers_and_q_is_quiet(eval_setup, sweep_dir, capsys):
    """`fit --layer middle` worked but `sweep --layers middle` was refused; the role resumes the conv2 cells."""
    from cladec.cli.main import main

    before = {p.name: (p / "run.json").stat().st_mtime_ns for p in (sweep_dir / "cells").iterdir()}
    assert (
        main(
            [
                "sweep",
                "--model",
                str(eval_setup.clf_dir),
                "--dataset",
                "fashion-mnist",
                "--layers",
                "middle",
                "--alphas",
                "0,1",
                "--seeds",
                "0",
                "--epochs",
                "1",
                "--limit",
                "600",
                "--test-limit",
                "200",
                "--no-eval-classifier",
                "--data-root",
                str(eval_setup.data_root),
                "--out",
                str(sweep_dir),
                "-q",
            ]
        )
        == 0
    )
    out = capsys.readouterr()
    assert out.err == "" and "conv2" in out.out
    after = {p.name: (p / "run.json").stat().st_mtime_ns for p in (sweep_dir / "cells").iterdir()}
    assert after == before  # the cells of conv2 (vgg-paper's "middle" layer) were resumed, none recomputed
    assert json.loads((sweep_dir / "sweep.json").read_text())["layers"] == ["conv2"]
