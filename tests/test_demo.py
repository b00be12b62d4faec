"""Tests of ``cladec demo`` / :func:`cladec.demo.run_demo` (shrunk with the size options to stay fast)."""

from __future__ import annotations

import json

import pytest
import torch

from cladec.cli.main import main
from cladec.defaults import DEMO_SETTINGS
from cladec.demo import format_summary, run_demo
from helpers.core import DATA_ROOT, png_size

DATA = DATA_ROOT


@pytest.fixture(scope="module")
def demo_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_demo_defaults_are_the_documented_ones():
    full, quick = DEMO_SETTINGS["full"], DEMO_SETTINGS["quick"]
    assert full["limit"] == 6000 and full["test_limit"] == 1000 and full["width"] == 1.0
    assert quick["limit"] < full["limit"] and quick["width"] < 1.0
    import inspect

    sig = inspect.signature(run_demo)
    assert sig.parameters["out"].default == "cladec-demo"
    assert sig.parameters["dataset"].default == "fashion-mnist-mini"
    assert sig.parameters["alpha"].default == 0.001


def test_demo_quick_end_to_end_on_embedded_data(tmp_path, demo_threads, capsys):
    out = tmp_path / "demo"
    rc = main(
        [
            "demo",
            "--quick",
            "--out",
            str(out),
            "--limit",
            "1000",
            "--test-limit",
            "200",
            "--epochs",
            "2",
            "--decoder-epochs",
            "1",
            "--n-images",
            "8",
            "-q",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    s = json.loads((out / "summary.json").read_text())
    assert s["format"] == "cladec-demo" and s["quick"] is True and s["alpha"] == 0.001
    assert s["dataset"]["name"] == "fashion-mnist-mini" and s["dataset"]["n_train"] == 1000
    assert s["dataset"]["n_test"] == 200 and s["dataset"]["image_shape"] == [1, 28, 28]
    assert s["classifier"]["arch"] == "vgg-paper" and 0 <= s["classifier"]["test_accuracy"] <= 1
    assert [L["layer"] for L in s["layers"]] == ["conv4", "conv2"]
    assert [L["role"] for L in s["layers"]] == ["last", "middle"]
    for L in s["layers"]:
        for key in ("mse_cladec", "mse_refae", "accuracy_original", "accuracy_cladec", "accuracy_refae"):
            assert 0 <= L[key] <= 1, key
        assert isinstance(L["refae_reconstructs_better"], bool)
        assert isinstance(L["classifier_better_on_cladec"], bool)
        assert "cladec_refae_s" in L["timings"]  # ClaDec and RefAE fitted together (cladec.fit_together)
        assert (out / L["run"] / "run.json").is_file()
        w, h = png_size(out / L["triplets"])
        assert w >= 800 and 200 <= h < w  # 8 triplets, 4 per row
        assert str(out / L["triplets"]) in printed
    assert {"classifier_s", "total_s"} <= set(s["timings"])
    assert (out / "classifier" / "classifier.json").is_file()
    text = (out / "summary.txt").read_text()
    assert "Does RefAE reconstruct better than ClaDec?" in text
    assert "Does the classifier do better on ClaDec's reconstructions?" in text
    assert "Classifier test accuracy" in text
    assert str(out / "summary.txt") in printed
    try:
        from cladec.report.build import build_report  # noqa: F401 - only whether the report module imports
    except ImportError:
        assert s["report"] is None
    else:
        assert s["report"] and (out / s["report"]).is_file()
        assert str(out / s["report"]) in printed

    # the demo's own folder may be written again; a folder with other content may not (see test_demo_errors)
    from cladec.demo import _check_out

    _check_out(out)


def test_demo_on_a_full_data_set_via_data_root(tmp_path, demo_threads):
    s = run_demo(
        tmp_path / "d",
        quick=True,
        dataset="mnist",
        data_root=DATA,
        limit=300,
        test_limit=100,
        epochs=1,
        decoder_epochs=1,
        width=0.125,
        n_images=4,
        report=False,
        verbose=False,
        log=lambda _: None,
    )
    assert s["dataset"]["name"] == "mnist" and s["dataset"]["classes"][3] == "3"
    assert s["dataset"]["root"] == str(DATA.resolve())
    run = json.loads((tmp_path / "d" / "runs" / "conv2" / "run.json").read_text())
    assert run["dataset"]["name"] == "mnist" and run["dataset"]["limit"] == 300
    assert (tmp_path / "d" / "triplets-conv4.png").is_file() and s["report"] is None


def test_demo_errors(tmp_path, capsys):
    err_of = []
    for argv in (
        ["demo", "--dataset", "nope", "--out", str(tmp_path / "a")],
        ["demo", "--dataset", "fashion-mnist", "--data-root", str(tmp_path), "--out", str(tmp_path / "b")],
        ["demo", "--arch", "nope", "--out", str(tmp_path / "c"), "--limit", "10", "--test-limit", "10"],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("cladec: error: ") and "Traceback" not in err
        err_of.append(err)
    assert "unknown data set 'nope'" in err_of[0]
    assert str(tmp_path) in err_of[1] and "download" in err_of[1]
    assert "vgg-paper" in err_of[2]
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["demo", "--out", str(f)]) == 2
    assert "not a folder" in capsys.readouterr().err
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "mine.txt").write_text("keep me")
    assert main(["demo", "--out", str(busy)]) == 2
    assert "other content" in capsys.readouterr().err
    assert (busy / "mine.txt").read_text() == "keep me"


def _write_png_folder(root, per_class: int, per_class_test: int) -> None:
    """An image folder (``<split>/<class>/*.png``) of real Fashion-MNIST images, three classes."""
    from PIL import Image

    from cladec.data.load import load_dataset

    for split, n in (("train", per_class), ("test", per_class_test)):
        ds = load_dataset("fashion-mnist", root=DATA, split=split, limit=300)
        for c in (1, 5, 8):
            d = root / split / ds.classes[c]
            d.mkdir(parents=True)
            for k, i in enumerate((ds.labels == c).nonzero().flatten()[:n].tolist()):
                Image.fromarray((ds.images[i, 0] * 255).round().byte().numpy()).save(d / f"{k}.png")


def _snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_demo_keeps_the_previous_results_on_bad_options_and_interruption(tmp_path, demo_threads, capsys, monkeypatch):
    _write_png_folder(tmp_path / "imgs", 20, 5)
    monkeypatch.chdir(tmp_path)
    small = [
        "--limit",
        "60",
        "--test-limit",
        "15",
        "--epochs",
        "1",
        "--decoder-epochs",
        "1",
        "--width",
        "0.125",
        "--n-images",
        "3",
        "--no-report",
        "-q",
    ]
    assert main(["demo", "--dataset", "imagefolder:imgs", "--out", "d", *small]) == 0, capsys.readouterr().err
    out = tmp_path / "d"
    # a relative image folder is recorded as an absolute path: the results work from any folder
    absolute = f"imagefolder:{(tmp_path / 'imgs').resolve()}"
    assert json.loads((out / "summary.json").read_text())["dataset"]["name"] == absolute
    assert json.loads((out / "classifier" / "classifier.json").read_text())["dataset"]["name"] == absolute
    run = json.loads((out / "runs" / "conv2" / "run.json").read_text())
    assert run["dataset"]["name"] == absolute
    assert run["classifier"]["path"] == "../../classifier"
    assert run["classifier"]["abs_path"] == str(out.resolve() / "classifier")  # not the temporary folder
    before = _snapshot(out)
    assert ".cladec-demo" in before and "summary.json" in before and "runs/conv4/run.json" in before

    # bad options are refused before anything is touched
    for bad, msg in (
        (["--arch", "nope"], "vgg-paper"),
        (["--device", "nope"], "not a device"),
        (["--dataset", "nope"], "unknown data set"),
    ):
        assert main(["demo", "--dataset", "imagefolder:imgs", "--out", "d", *small, *bad]) == 2
        assert msg in capsys.readouterr().err
        assert _snapshot(out) == before, bad

    # interrupted (Ctrl-C) after the new classifier was trained: the previous results stay as they were
    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr("cladec.demo.fit_run", interrupted)  # where the demo looks it up
    assert main(["demo", "--dataset", "imagefolder:imgs", "--out", "d", *small, "--seed", "1"]) == 130
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "imgs"]  # no temporary folder left behind
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)

    # a complete rerun replaces the demo's own outputs and keeps what the user added to the folder
    (out / "notes.txt").write_text("mine")
    (out / "cmp" / "units").mkdir(parents=True)
    (out / "cmp" / "units" / "u.json").write_text("{}")
    old_summary = (out / "summary.json").read_text()
    assert main(["demo", "--dataset", "imagefolder:imgs", "--out", "d", *small, "--seed", "2"]) == 0
    assert (out / "notes.txt").read_text() == "mine" and (out / "cmp" / "units" / "u.json").read_text() == "{}"
    assert (out / "summary.json").read_text() != old_summary  # the new results (another seed)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "imgs"]


def test_balanced_pick():
    from cladec._sampling import balanced_indices

    labels = torch.tensor([0, 0, 1, 2, 1, 0, 2, 2])
    assert balanced_indices(labels, 4, order="class") == [0, 1, 2, 3]
    assert balanced_indices(labels, 100, order="class") == [0, 1, 5, 2, 4, 3, 6, 7]


def test_format_summary_states_the_findings():
    layer = {
        "role": "last",
        "layer": "conv4",
        "activation_shape": [512, 1, 1],
        "triplets": "triplets-conv4.png",
        "mse_cladec": 0.03,
        "mse_refae": 0.02,
        "accuracy_original": 0.9,
        "accuracy_cladec": 0.8,
        "accuracy_refae": 0.6,
        "refae_reconstructs_better": True,
        "classifier_better_on_cladec": True,
        "collapsed": {"cladec": False, "refae": True},
        "timings": {"cladec_s": 10, "refae_s": 12},
    }
    s = {
        "dataset": {
            "name": "fashion-mnist-mini",
            "image_shape": [1, 28, 28],
            "n_train": 6000,
            "n_test": 1000,
            "num_classes": 10,
        },
        "classifier": {"arch": "vgg-paper", "width": 1.0, "test_accuracy": 0.9, "epochs": 6},
        "alpha": 0.001,
        "layers": [
            layer,
            dict(layer, layer="conv2", role="middle", mse_refae=0.04, refae_reconstructs_better=False, collapsed=None),
        ],
        "timings": {"total_s": 100, "classifier_s": 30},
        "device": "cpu",
        "report": "report/index.html",
    }
    text = format_summary(s)
    assert "Does RefAE reconstruct better than ClaDec?  YES" in text
    assert "Does RefAE reconstruct better than ClaDec?  NO" in text
    assert "80.0 % on ClaDec's vs 60.0 % on RefAE's" in text
    assert "WARNING: refae collapsed" in text
    assert "(fit: ClaDec 10 s, RefAE 12 s)" in text
    s["layers"][0]["timings"] = {"cladec_refae_s": 15}
    assert "(fit: ClaDec + RefAE 15 s)" in format_summary(s)
    assert "report/index.html" in text
