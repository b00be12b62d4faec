"""Run directories (fit_run / load_run): the classifier's training size is reused, user folders are kept."""

import json

import pytest
import torch

from cladec import ConfigError, DataError, SaveFormatError
from cladec.data.load import load_dataset
from cladec.models import create_model
from cladec.models.checkpoint import save_classifier
from cladec.runs import fit_run, load_run
from helpers.core import COLLAPSE_OK


@COLLAPSE_OK  # an untrained (random) classifier and <= 256 images: checks the sizes a run records, not its decoder
def test_fit_uses_the_size_the_classifier_was_trained_at(tmp_path, data_root):
    # a classifier trained on Fashion-MNIST resized to 32×32 (as in the paper) through the Python API: the run
    # must decode 32×32 images, not the native 28×28 ones the classifier never saw
    train = load_dataset("fashion-mnist", root=data_root, split="train", size=32, limit=256)
    assert train.resized_to == (32, 32) and train.subset(range(10)).resized_to == (32, 32)
    torch.manual_seed(0)
    net = create_model("vgg-paper", in_channels=1, num_classes=10, width=0.25)
    save_classifier(tmp_path / "clf", net, dataset=train)
    info = json.loads((tmp_path / "clf" / "classifier.json").read_text())
    assert info["dataset"]["size"] == [32, 32]
    run = fit_run(
        tmp_path / "run",
        classifier_dir=tmp_path / "clf",
        dataset="fashion-mnist",
        layer="conv2",
        epochs=1,
        limit=256,
        test_limit=64,
        data_root=str(data_root),
        device="cpu",
        verbose=False,
    )
    assert run.config["image_shape"] == [1, 32, 32] and run.cladec.image_shape == (1, 32, 32)
    assert load_run(tmp_path / "run", device="cpu").config["dataset"]["size"] == [32, 32]
    # a non-empty folder that is not a run is refused, not replaced
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(SaveFormatError, match="not a cladec run directory.*no run.json"):
        fit_run(
            mine,
            classifier_dir=tmp_path / "clf",
            dataset="fashion-mnist",
            layer="conv2",
            epochs=1,
            limit=128,
            test_limit=32,
            data_root=str(data_root),
            device="cpu",
            verbose=False,
            refae=False,
        )
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]


@COLLAPSE_OK  # an untrained (random) classifier and <= 256 images: checks the sizes a run records, not its decoder
def test_fit_finds_the_data_where_the_classifier_was_trained(tmp_path, data_root, monkeypatch):
    # no data root given and none in the environment: the checkpoint's recorded root is used
    monkeypatch.delenv("CLADEC_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    torch.manual_seed(0)
    net = create_model("vgg-paper", in_channels=1, num_classes=10, width=0.25)
    meta = {
        "name": "fashion-mnist",
        "image_shape": [1, 28, 28],
        "classes": [str(i) for i in range(10)],
        "root": str(data_root),
    }
    save_classifier(tmp_path / "clf", net, dataset=meta)
    run = fit_run(
        tmp_path / "run",
        classifier_dir=tmp_path / "clf",
        dataset="fashion-mnist",
        layer="conv2",
        epochs=1,
        limit=128,
        test_limit=32,
        device="cpu",
        verbose=False,
        refae=False,
    )
    assert run.config["dataset"]["n_train"] == 128


def _copy_run_and_classifier(saliency_run, dest):
    """The session's saliency run and its classifier, copied side by side (run/ finds ../clf)."""
    import shutil

    shutil.copytree(saliency_run.path.parent / "clf", dest / "clf")
    shutil.copytree(saliency_run.path, dest / "run")
    return dest / "clf", dest / "run"


def test_load_run_refuses_a_classifier_replaced_since(saliency_run, tmp_path, one_torch_thread):
    clf, run_dir = _copy_run_and_classifier(saliency_run, tmp_path)
    cfg = json.loads((run_dir / "run.json").read_text())
    recorded = json.loads((clf / "classifier.json").read_text())["weights_sha256"]
    assert cfg["classifier"]["weights_sha256"] == recorded
    assert load_run(run_dir, device="cpu").layer == "conv2"
    # another classifier saved to the same path (what `cladec train-classifier --out` does): the run's decoders
    # would explain a model they were not fitted on
    torch.manual_seed(1)
    other = create_model("vgg-paper", in_channels=1, num_classes=10, width=0.25)
    save_classifier(
        clf,
        other,
        dataset={
            "name": "fashion-mnist",
            "image_shape": [1, 28, 28],
            "classes": saliency_run.config["dataset"]["classes"],
        },
    )
    with pytest.raises(SaveFormatError, match="not the one the run .* was fitted with.*SHA-256"):
        load_run(run_dir, device="cpu")
    # a run of an earlier version records no identity: it still loads
    del cfg["classifier"]["weights_sha256"]
    (run_dir / "run.json").write_text(json.dumps(cfg))
    assert load_run(run_dir, device="cpu").cladec is not None


@COLLAPSE_OK  # an untrained (random) classifier and <= 256 images: checks the sizes a run records, not its decoder
def test_fit_defaults_to_the_classifiers_size_on_another_data_set(tmp_path, data_root, one_torch_thread):
    # a classifier trained at 32×32 (Fashion-MNIST resized, as in the paper) explained on MNIST: without --size the
    # images must reach it at 32×32, the size it was trained at, not MNIST's own 28×28
    train = load_dataset("fashion-mnist", root=data_root, split="train", size=32, limit=64)
    torch.manual_seed(0)
    save_classifier(
        tmp_path / "clf", create_model("vgg-paper", in_channels=1, num_classes=10, width=0.25), dataset=train
    )
    run = fit_run(
        tmp_path / "run",
        classifier_dir=tmp_path / "clf",
        dataset="mnist",
        layer="conv2",
        epochs=1,
        limit=128,
        test_limit=32,
        data_root=str(data_root),
        device="cpu",
        verbose=False,
        refae=False,
    )
    assert run.config["image_shape"] == [1, 32, 32] and run.cladec.image_shape == (1, 32, 32)
    assert run.config["dataset"]["name"] == "mnist"


def test_fit_run_refuses_settings_it_would_ignore(saliency_run, tmp_path):
    clf = saliency_run.path.parent / "clf"
    common = dict(dataset="fashion-mnist", layer="conv2", epochs=1, limit=64, device="cpu", verbose=False)
    with pytest.raises(ConfigError, match="input_norm cannot go with classifier_dir"):
        fit_run(tmp_path / "a", classifier_dir=clf, input_norm=([0.5], [0.5]), **common)
    with pytest.raises(ConfigError, match="factory, factory_kwargs cannot go with classifier_dir"):
        fit_run(
            tmp_path / "b",
            classifier_dir=clf,
            factory="helpers.user_model:make_net",
            factory_kwargs={"hidden": 4},
            **common,
        )
    with pytest.raises(ConfigError, match="refae_epochs .* refae=False"):
        fit_run(tmp_path / "c", classifier_dir=clf, refae=False, refae_epochs=2, **common)
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_run_dataset_finds_moved_data_through_cladec_data(saliency_run, tmp_path, data_root, monkeypatch):
    _, run_dir = _copy_run_and_classifier(saliency_run, tmp_path)
    cfg = json.loads((run_dir / "run.json").read_text())
    cfg["dataset"]["root"] = str(tmp_path / "moved-away")  # the data folder the run was fitted with is gone
    (run_dir / "run.json").write_text(json.dumps(cfg))
    monkeypatch.setenv("CLADEC_DATA", str(data_root))
    test = load_run(run_dir, device="cpu").dataset("test", limit=5)
    assert test.name == "fashion-mnist" and len(test) == 5
    # while the recorded folder exists it is used, whatever $CLADEC_DATA says (every command finds the same data)
    cfg["dataset"]["root"] = str(data_root)
    (run_dir / "run.json").write_text(json.dumps(cfg))
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("CLADEC_DATA", str(tmp_path / "empty"))
    assert len(load_run(run_dir, device="cpu").dataset("test", limit=5)) == 5
    # a recorded folder that still exists but no longer holds the data set: $CLADEC_DATA is looked in next
    cfg["dataset"]["root"] = str(tmp_path / "empty")
    (run_dir / "run.json").write_text(json.dumps(cfg))
    monkeypatch.setenv("CLADEC_DATA", str(data_root))
    assert len(load_run(run_dir, device="cpu").dataset("test", limit=5)) == 5
    monkeypatch.setenv("CLADEC_DATA", str(tmp_path / "empty"))  # in neither place: both are named
    with pytest.raises(DataError, match="did not have it either"):
        load_run(run_dir, device="cpu").dataset("test", limit=5)
    # files in the recorded folder that are damaged are an error, not replaced by another copy from $CLADEC_DATA
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(data_root / "FashionMNIST", bad / "FashionMNIST")
    labels = next((bad / "FashionMNIST" / "raw").glob("t10k-labels-idx1-ubyte*"))
    labels.write_bytes(labels.read_bytes()[:20])
    cfg["dataset"]["root"] = str(bad)
    (run_dir / "run.json").write_text(json.dumps(cfg))
    monkeypatch.setenv("CLADEC_DATA", str(data_root))
    with pytest.raises(DataError, match="IDX file"):
        load_run(run_dir, device="cpu").dataset("test", limit=5)


def test_same_dataset_reads_relative_and_absolute_image_folders_as_one(tmp_path, monkeypatch):
    from cladec.data.recorded import same_dataset

    monkeypatch.chdir(tmp_path)
    assert same_dataset("imagefolder:imgs", f"imagefolder:{tmp_path.resolve() / 'imgs'}")
    assert not same_dataset("imagefolder:imgs", f"imagefolder:{tmp_path.resolve() / 'other'}")
    assert same_dataset("fmnist", "fashion-mnist") and not same_dataset("mnist", "fashion-mnist")


# -- the library functions behind `cladec fit` and `cladec explain` ------------------------------------------------


def test_classifier_entry_builds_one_entry_and_names_the_arguments_as_told(saliency_run, tmp_path):
    from cladec.models.spec import classifier_entry

    clf = saliency_run.path.parent / "clf"
    assert classifier_entry(clf) == {"type": "checkpoint", "path": str(clf.resolve())}
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"")
    entry = classifier_entry(
        factory="helpers.user_model:make_net", weights=weights, factory_kwargs={"hidden": 4}, input_norm=([0.5], [0.5])
    )
    assert entry == {
        "type": "factory",
        "factory": "helpers.user_model:make_net",
        "weights": str(weights.resolve()),
        "kwargs": {"hidden": 4},
        "input_norm": ([0.5], [0.5]),
    }
    with pytest.raises(ConfigError, match="weights: file not found"):
        classifier_entry(factory="helpers.user_model:make_net", weights=tmp_path / "missing")
    with pytest.raises(ConfigError, match="give the classifier: classifier_dir .* or factory"):
        classifier_entry()
    with pytest.raises(ConfigError, match="weights cannot go with classifier_dir.*drop weights"):
        classifier_entry(clf, weights=weights)
    # the command line's names: every message names the options the user typed
    cli = {"classifier_dir": "--model", "factory": "--factory", "weights": "--weights", "input_norm": "--input-norm"}
    with pytest.raises(ConfigError, match="--factory cannot go with --model.*not both"):
        classifier_entry(clf, factory="helpers.user_model:make_net", names=cli)
    with pytest.raises(ConfigError, match=r"--input-norm cannot go with --model.*\(--input-norm goes with --factory\)"):
        classifier_entry(clf, input_norm=([0.5], [0.5]), names=cli)
    with pytest.raises(ConfigError, match="--weights: file not found"):
        classifier_entry(factory="helpers.user_model:make_net", weights="missing", names=cli)


def test_check_fit_fits_counts_images_at_the_recorded_size_and_batches(monkeypatch):
    from cladec.models.spec import check_fit_fits

    net = create_model("vgg-paper", in_channels=1, num_classes=10, width=0.25)
    info = {"dataset": {"name": "fashion-mnist", "image_shape": [1, 28, 28]}}
    check_fit_fits("fashion-mnist", net, info, limit=64, test_limit=32, batch_size=64)  # fits here
    with pytest.raises(ConfigError, match=r"^size 100000 \(100000×100000 images of fashion-mnist\) needs about"):
        check_fit_fits("fashion-mnist", net, info, size=100000, limit=64, test_limit=32)
    with pytest.raises(ConfigError, match=r"^--size 100000 .*TB"):
        check_fit_fits("fashion-mnist", net, info, size=100000, limit=64, names={"size": "--size"})
    # on a machine with 4 MB: the 96 images (300 kB) and the weights (1.2 MB) fit, the activations of a training
    # batch of 64 images (5 MB, twice: the decoder mirrors the layers) do not
    monkeypatch.setattr("cladec._limits.memory_limit", lambda device=None: 4_000_000)
    with pytest.raises(ConfigError, match=r"batches of 64 1×28×28 images \(batch_size\).*smaller batch_size or size"):
        check_fit_fits("fashion-mnist", net, info, limit=64, test_limit=32, batch_size=64)
    check_fit_fits("fashion-mnist", net, info, limit=64, test_limit=32, batch_size=2)
    # no size given: the images are counted at the size the classifier records
    with pytest.raises(ConfigError, match=r"the classifier's recorded image size \[28, 28\] \(28×28 images"):
        check_fit_fits("fashion-mnist", net, info, limit=6000, test_limit=32, batch_size=2)


@COLLAPSE_OK  # 128 images: checks what the run records, not its decoder
def test_fit_run_takes_a_role_and_the_checkpoints_data_set(saliency_run, tmp_path, data_root, one_torch_thread):
    clf = saliency_run.path.parent / "clf"
    common = dict(epochs=1, limit=128, test_limit=32, data_root=str(data_root), device="cpu", verbose=False)
    run = fit_run(tmp_path / "run", classifier_dir=clf, layer="middle", refae=False, **common)
    assert run.layer == "conv2" and run.config["dataset"]["name"] == "fashion-mnist"
    with pytest.raises(ConfigError, match="unknown layer 'conv9'"):
        fit_run(tmp_path / "bad", classifier_dir=clf, layer="conv9", **common)
    # a factory model records no data set: it must be given, in the words the caller uses
    with pytest.raises(ConfigError, match=r"give the data set \(--dataset\)"):
        fit_run(tmp_path / "bad", factory="helpers.user_model:make_net", layer="bn", names={"dataset": "--dataset"})
    assert not (tmp_path / "bad").exists()


def test_explain_run_picks_seeded_images_and_names_another_label_space(saliency_run, data_root, one_torch_thread):
    from cladec.runs import explain_run

    ex, info = explain_run(saliency_run, n=6, seed=1, data_root=str(data_root))
    again, info_again = explain_run(saliency_run, n=6, seed=1, data_root=str(data_root))
    assert len(ex) == 6 and info["indices"] == info_again["indices"] == sorted(info["indices"])
    assert torch.equal(ex.x, again.x) and info["dataset"] == "fashion-mnist" and info["split"] == "test"
    assert info["notes"] == [] and ex.labels is not None and ex.classes[0] == "T-shirt/top"
    assert info["summary"].startswith("6 fashion-mnist test images, layer conv2: MSE ClaDec ")
    assert "accuracy originals" in info["summary"]
    assert explain_run(saliency_run, n=6, seed=2, data_root=str(data_root))[1]["indices"] != info["indices"]
    # MNIST digits for a Fashion-MNIST classifier: predictions named as the classifier's classes, no accuracy
    ex, info = explain_run(saliency_run, n=4, dataset="mnist", split="train", data_root=str(data_root))
    assert ex.labels is None and ex.classes[0] == "T-shirt/top" and len(info["notes"]) == 1
    assert "not the classifier's" in info["notes"][0] and "agrees" in info["summary"]
    assert info["summary"].startswith("4 mnist train images")
    with pytest.raises(ConfigError, match="n must be a positive integer"):
        explain_run(saliency_run, n=0)
    with pytest.raises(DataError, match="shape"):
        explain_run(saliency_run, n=2, dataset="cifar10", data_root=str(data_root))
