"""Run directories (fit_run / load_run): the classifier's training size is reused, user folders are kept."""

import json

import pytest
import torch

from cladec import SaveFormatError
from cladec.classifier import save_classifier
from cladec.data import load_dataset
from cladec.models import create_model
from cladec.runs import fit_run, load_run


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
    run = fit_run(tmp_path / "run", classifier_dir=tmp_path / "clf", dataset="fashion-mnist", layer="conv2",
                  epochs=1, limit=256, test_limit=64, data_root=str(data_root), device="cpu", verbose=False)
    assert run.config["image_shape"] == [1, 32, 32] and run.cladec.image_shape == (1, 32, 32)
    assert load_run(tmp_path / "run", device="cpu").config["dataset"]["size"] == [32, 32]
    # a non-empty folder that is not a run is refused, not replaced
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(SaveFormatError, match="not a cladec run directory.*no run.json"):
        fit_run(mine, classifier_dir=tmp_path / "clf", dataset="fashion-mnist", layer="conv2", epochs=1,
                limit=128, test_limit=32, data_root=str(data_root), device="cpu", verbose=False, refae=False)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]


def test_fit_finds_the_data_where_the_classifier_was_trained(tmp_path, data_root, monkeypatch):
    # no data root given and none in the environment: the checkpoint's recorded root is used
    monkeypatch.delenv("CLADEC_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    torch.manual_seed(0)
    net = create_model("vgg-paper", in_channels=1, num_classes=10, width=0.25)
    meta = {"name": "fashion-mnist", "image_shape": [1, 28, 28], "classes": [str(i) for i in range(10)],
            "root": str(data_root)}
    save_classifier(tmp_path / "clf", net, dataset=meta)
    run = fit_run(tmp_path / "run", classifier_dir=tmp_path / "clf", dataset="fashion-mnist", layer="conv2",
                  epochs=1, limit=128, test_limit=32, device="cpu", verbose=False, refae=False)
    assert run.config["dataset"]["n_train"] == 128
