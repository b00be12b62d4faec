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
