"""Saliency baselines (captum) and the compare-saliency command, on a tiny real classifier."""

import argparse
import json

import pytest
import torch

from cladec import ConfigError
from cladec.saliency.baselines import random_map, saliency_maps, sobel_map
from cladec.saliency.methods import available_methods, canonical_method
from helpers.stability import margin

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def images(fmnist_small):
    _, test = fmnist_small
    x, y = test.tensors()
    return x[:8], y[:8]


def test_every_method_gives_finite_maps_of_the_input_size(saliency_run, images):
    x, _ = images
    run = saliency_run
    maps = saliency_maps(
        run.classifier, x, None, available_methods(), layer="conv2", cladec=run.cladec, refae=run.refae, batch_size=4
    )
    assert list(maps) == available_methods()
    for name, m in maps.items():
        assert m.shape == (8, 28, 28), name
        assert m.dtype == torch.float32, name
        assert torch.isfinite(m).all(), name
        if name not in ("random",):
            assert m.abs().sum() > 0, f"{name} gave an all-zero map"


def test_gradcam_defaults_to_the_models_last_layer_and_aliases_work(saliency_run, images):
    x, y = images
    maps = saliency_maps(saliency_run.classifier, x, y, "grad-cam,IG,edge")
    assert list(maps) == ["gradcam", "integrated-gradients", "sobel"]
    assert all(m.shape == (8, 28, 28) for m in maps.values())


def test_gradcam_uses_a_spatial_layer_never_a_1x1_one(saliency_run, images):
    # the paper's VGG ends in a 512×1×1 block at this size: Grad-CAM there is one number per image, a constant
    # map that ranks pixels arbitrarily
    from cladec.saliency.baselines import gradcam_layer

    x, y = images
    model = saliency_run.classifier
    assert model.default_layers["last"] == "conv4" and gradcam_layer(model, x) == "conv4a"
    with pytest.raises(ConfigError, match=r"'conv4' outputs \(\d+, 1, 1\)\. Layers with one, last first: conv4a"):
        saliency_maps(model, x, y, ["gradcam"], layer="conv4")
    m = saliency_maps(model, x, y, ["gradcam"])["gradcam"]
    spread = (m.flatten(1).max(1).values - m.flatten(1).min(1).values) / m.flatten(1).max(1).values.clamp_min(1e-12)
    margin("grad-cam: smallest relative spread of a map", spread.min(), ">", 0.05)  # a real map, not a constant


def test_input_norm_is_applied_inside_the_model(saliency_run, images):
    x, y = images
    a = saliency_maps(saliency_run.classifier, x, y, ["saliency"])["saliency"]
    b = saliency_maps(saliency_run.classifier, x, y, ["saliency"], input_norm=([0.5], [0.25]))["saliency"]
    assert not torch.allclose(a, b)


def test_unknown_method_lists_the_valid_names(saliency_run, images):
    x, _ = images
    with pytest.raises(ConfigError) as e:
        saliency_maps(saliency_run.classifier, x, None, ["saliency", "lime"])
    msg = str(e.value)
    assert "lime" in msg and "integrated-gradients" in msg and "gradcam" in msg
    with pytest.raises(ConfigError, match="did you mean"):
        canonical_method("gradcm")


def test_cladec_method_needs_the_explainers(saliency_run, images):
    x, _ = images
    with pytest.raises(ConfigError, match="ClaDec and RefAE"):
        saliency_maps(saliency_run.classifier, x, None, ["cladec"])


def test_bad_targets_are_rejected(saliency_run, images):
    x, _ = images
    with pytest.raises(ConfigError, match="one class per image"):
        saliency_maps(saliency_run.classifier, x, [1, 2, 3], ["saliency"])


def test_sanity_baselines():
    x = torch.zeros(2, 3, 6, 6)
    x[:, :, :, 3:] = 1
    s = sobel_map(x)
    assert s.shape == (2, 6, 6) and s[:, :, 0].abs().max() == 0 and s[:, :, 2:4].min() > 0
    assert torch.equal(random_map(x, 3), random_map(x, 3))
    assert not torch.equal(random_map(x, 3), random_map(x, 4))


# ------------------------------------------------------------------------------------------------
# compare-saliency (library function and command line)
# ------------------------------------------------------------------------------------------------


def _parser():
    from cladec.cli.saliency import register

    p = argparse.ArgumentParser(prog="cladec")
    register(p.add_subparsers(dest="command"))
    return p


def test_compare_saliency_writes_all_outputs_and_resumes(saliency_run, tmp_path, data_root):
    from cladec.saliency.compare import compare_saliency
    from cladec.saliency.methods import DEFAULT_VARIANT
    from cladec.saliency.results import format_table

    out = tmp_path / "cmp"
    kw = dict(
        out=out,
        methods="cladec,gradcam,random",
        scores="deletion,insertion,road,roar",
        n=24,
        steps=8,
        roar_k=[50],
        roar_epochs=1,
        roar_train_limit=300,
        road_fractions=(0.3, 0.7),
        data_root=str(data_root),
        verbose=False,
    )
    res = compare_saliency(saliency_run, **kw)
    assert res["format"] == "cladec-saliency"
    for f in ("results.json", "results.csv", "curves.png", "maps.png"):
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    stored = json.loads((out / "results.json").read_text())
    assert stored["methods"] == ["cladec", "gradcam", "random"]
    r = stored["results"]["gradcam"]
    assert 0 <= r["deletion"]["auc_mean"] <= 1 and 0 <= r["insertion"]["auc_mean"] <= 1
    assert len(r["road"]["morf"]) == 2 and r["roar"]["k"] == [0, 50]
    header, *rows = (out / "results.csv").read_text().splitlines()
    assert header.startswith("method,deletion_auc_mean,deletion_auc_std")
    # one seed: no spread over seeds to report (null / empty, never "± 0")
    assert (
        r["deletion"]["auc_std"] is None and r["road"]["gap_std"] is None and r["roar"]["accuracy_std"] == [None, None]
    )
    assert rows[0].split(",")[2] == "" and "±" not in format_table(stored)
    # a second run reuses every finished unit: change one stored unit and see it come back unchanged
    assert (out / "units" / f"cladec-{DEFAULT_VARIANT}__deletion__0__0.json").is_file()  # stored under its variant
    unit = out / "units" / "gradcam__deletion__0__0.json"
    d = json.loads(unit.read_text())
    d["result"]["auc"] = 0.123456
    unit.write_text(json.dumps(d))
    res2 = compare_saliency(saliency_run, **kw)
    assert res2["results"]["gradcam"]["deletion"]["auc_mean"] == pytest.approx(0.123456)
    assert res2["results"]["gradcam"]["roar"] == res["results"]["gradcam"]["roar"]
    assert res2["gradcam_layer"] == "conv2"  # the run's layer (a 4×4 map)
    # other settings never reuse these results (they once came back unchanged, reported under the new settings)
    with pytest.raises(ConfigError, match=r"holds results computed with other settings \(steps: 8 -> 16\)"):
        compare_saliency(saliency_run, **dict(kw, steps=16))
    assert json.loads((out / "units" / "gradcam__deletion__0__0.json").read_text())["result"]["auc"] == 0.123456


def test_cli_validates_methods_scores_and_k_before_loading(tmp_path):
    from cladec.cli.saliency import cmd_compare_saliency

    p = _parser()
    base = ["compare-saliency", "--run", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]
    with pytest.raises(ConfigError, match="unknown saliency method 'lime'"):
        cmd_compare_saliency(p.parse_args(base + ["--methods", "cladec,lime"]))
    with pytest.raises(ConfigError, match="unknown score 'auc'.*deletion, insertion, road, roar"):
        cmd_compare_saliency(p.parse_args(base + ["--scores", "deletion,auc"]))
    for k in ("100", "-5", "10,abc"):
        with pytest.raises(ConfigError, match=r"\[0, 100\)"):
            cmd_compare_saliency(p.parse_args(base + ["--roar-k", k]))
    with pytest.raises(SystemExit):  # argparse usage error: "--seeds: cannot read 'a' ..."
        p.parse_args(base + ["--seeds", "a"])


def test_cli_runs_end_to_end(saliency_run, tmp_path, data_root, capsys):
    args = _parser().parse_args(
        [
            "compare-saliency",
            "--run",
            str(saliency_run.path),
            "--out",
            str(tmp_path / "c"),
            "--methods",
            "cladec,saliency,random",
            "--scores",
            "deletion,insertion",
            "--n",
            "16",
            "--steps",
            "4",
            "--data-root",
            str(data_root),
            "--quiet",
        ]
    )
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "cladec" in out and "deletion_auc" in out
    assert "paired: cladec − method" in out and "deletion_img_sd" in out
    assert json.loads((tmp_path / "c" / "results.json").read_text())["format"] == "cladec-saliency"


# ------------------------------------------------------------------------------------------------
# per-image spread and the paired comparison with ClaDec
# ------------------------------------------------------------------------------------------------


def test_paired_comparison_matches_hand_computed_statistics():
    import numpy as np
    from scipy import stats

    from cladec import DataError
    from cladec.evaluation.stats import holm, paired_comparison

    # a known shift: every difference positive and distinct -> exact Wilcoxon p = 2 / 2**n
    d = np.arange(5, 15) / 100
    a = np.linspace(0.2, 0.6, 10)
    r = paired_comparison(a, a - d, lower_is_better=True, names=("cladec", "gradcam"))
    assert r["n"] == 10 and r["mean_diff"] == pytest.approx(0.095) and r["median_diff"] == pytest.approx(0.095)
    assert r["p_value"] == pytest.approx(2 / 2**10)
    assert d.min() < r["ci_low"] < 0.095 < r["ci_high"] < d.max()
    assert r["better"] == "gradcam"  # ClaDec's AUC is higher: worse for deletion ...
    assert paired_comparison(a, a - d, lower_is_better=False, names=("cladec", "gradcam"))["better"] == "cladec"
    assert paired_comparison(a, a - d, lower_is_better=True) == r | {"better": "other"}  # seeded: reproducible
    # a larger sample: the CI is close to the normal-theory one, p to the hand-computed normal approximation
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, 400)
    diff = rng.normal(0.01, 0.1, 400)
    r = paired_comparison(x + diff, x, lower_is_better=False)
    half = 1.96 * diff.std(ddof=1) / np.sqrt(400)
    assert r["mean_diff"] == pytest.approx(diff.mean())
    assert r["ci_low"] == pytest.approx(diff.mean() - half, abs=0.0015)
    assert r["ci_high"] == pytest.approx(diff.mean() + half, abs=0.0015)
    d2 = (x + diff) - x
    t_plus = stats.rankdata(np.abs(d2))[d2 > 0].sum()
    z = (t_plus - 400 * 401 / 4) / np.sqrt(400 * 401 * 801 / 24)
    assert r["p_value"] == pytest.approx(2 * stats.norm.sf(abs(z)), rel=1e-6)
    # no difference at all
    r = paired_comparison(a, a, lower_is_better=True)
    assert (r["mean_diff"], r["ci_low"], r["ci_high"], r["p_value"], r["better"]) == (0, 0, 0, 1.0, "tie")
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    with pytest.raises(DataError, match=r"equally long.*\(3,\) and \(2,\)"):
        paired_comparison([1, 2, 3], [1, 2], lower_is_better=True)
    with pytest.raises(ConfigError, match=r"confidence must be in \(0, 1\)"):
        paired_comparison([1, 2], [1, 3], lower_is_better=True, confidence=95)


def test_compare_saliency_reports_per_image_spread_and_paired_comparison(saliency_run, tmp_path, data_root):
    import numpy as np
    from scipy import stats

    from cladec.saliency.compare import compare_saliency
    from cladec.saliency.results import format_table

    out = tmp_path / "cmp"
    kw = dict(
        out=out,
        methods="cladec,gradcam,random",
        scores="deletion,insertion",
        n=24,
        steps=8,
        seeds=(0, 1),
        data_root=str(data_root),
        verbose=False,
    )
    res = compare_saliency(saliency_run, **kw)
    assert json.loads((out / "results.json").read_text())["paired"] == res["paired"]
    for score in ("deletion", "insertion"):
        for method in ("cladec", "gradcam", "random"):
            e = res["results"][method][score]
            assert len(e["auc_per_image"]) == 24
            assert np.mean(e["auc_per_image"]) == pytest.approx(e["auc_mean"])  # seeds and images commute
            assert e["auc_image_std"] > 0 and e["auc_image_q25"] <= e["auc_image_q75"]
        paired = res["paired"][score]
        assert set(paired) == {"gradcam", "random"}
        for p in paired.values():
            assert 0 <= p["p_value"] <= p["p_holm"] <= 1 and p["n"] == 24
            assert p["ci_low"] <= p["mean_diff"] <= p["ci_high"]
        # ClaDec against the random map: the per-image difference agrees with the two mean AUCs
        ref, rnd = res["results"]["cladec"][score], res["results"]["random"][score]
        p = paired["random"]
        assert p["mean_diff"] == pytest.approx(ref["auc_mean"] - rnd["auc_mean"])
        d = np.subtract(ref["auc_per_image"], rnd["auc_per_image"])
        assert p["p_value"] == pytest.approx(stats.wilcoxon(d).pvalue)
        cladec_better = ref["auc_mean"] < rnd["auc_mean"] if score == "deletion" else ref["auc_mean"] > rnd["auc_mean"]
        assert p["better"] == ("cladec" if cladec_better else "random")
    assert res["paired_info"]["reference"] == "cladec"
    csv_rows = (out / "results.csv").read_text().splitlines()
    assert csv_rows[0].startswith("method,deletion_auc_mean,deletion_auc_std")
    assert "deletion_auc_image_std" in csv_rows[0] and csv_rows[0].endswith("insertion_paired_better")
    table = format_table(res)
    assert "deletion_img_sd" in table and "paired: cladec − method" in table

    # units of an older cladec (no per-image AUCs): reused, their paired comparison reported as missing
    for seed in (0, 1):
        unit = out / "units" / f"random__deletion__0__{seed}.json"
        u = json.loads(unit.read_text())
        del u["result"]["auc_per_image"]
        unit.write_text(json.dumps(u))
    res2 = compare_saliency(saliency_run, **kw)
    assert res2["results"]["random"]["deletion"]["auc_mean"] == res["results"]["random"]["deletion"]["auc_mean"]
    assert res2["results"]["random"]["deletion"]["auc_image_std"] is None
    gone = res2["paired"]["deletion"]["random"]
    assert gone["mean_diff"] is None and gone["p_value"] is None and "older cladec" in gone["missing"]
    kept = ("mean_diff", "ci_low", "ci_high", "p_value", "n", "better")
    assert {k: res2["paired"]["deletion"]["gradcam"][k] for k in kept} == {
        k: res["paired"]["deletion"]["gradcam"][k] for k in kept
    }
    assert res2["paired"]["deletion"]["gradcam"]["p_holm"] == res["paired"]["deletion"]["gradcam"]["p_value"]
    assert res2["paired"]["insertion"] == res["paired"]["insertion"]
    assert "missing (older units without per-image AUCs)" in format_table(res2)
    assert ",missing" in [r for r in (out / "results.csv").read_text().splitlines() if r.startswith("random,")][0]
    # an older results.json without any of it still prints
    old = json.loads(json.dumps(res))
    del old["paired"], old["paired_info"]
    for r in old["results"].values():
        for score in ("deletion", "insertion"):
            for k in ("auc_per_image", "auc_image_std", "auc_image_q25", "auc_image_q75"):
                del r[score][k]
    assert "not in this results.json (written by an older cladec)" in format_table(old)
