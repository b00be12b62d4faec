"""save → load reproduces reconstructions exactly; bad saves give clear errors; writes are atomic."""

import copy
import json

import pytest
import torch

import cladec
import cladec.explainers.base
from cladec import ClaDec, RefAE, SaveFormatError
from cladec.models import create_model
from helpers.core import QUICK, fmnist, tiny_vgg


@pytest.fixture(scope="module")
def fitted():
    x, y = fmnist("train", 512)
    e = ClaDec(tiny_vgg(), "conv2", alpha=0.01, neurons=list(range(0, 32, 2))).fit(
        (x, y), epochs=1, verbose=False, **QUICK
    )
    r = RefAE.like(e).fit((x, y), epochs=1, verbose=False, **QUICK)
    assert not e.collapsed and not r.collapsed
    return e, r


def test_save_load_reproduces_reconstructions_exactly(tmp_path, fitted):
    e, r = fitted
    xt, _ = fmnist("test", 100)
    e.save(tmp_path / "e")
    r.save(tmp_path / "r")
    e2 = cladec.load(tmp_path / "e", tiny_vgg())
    r2 = cladec.load(tmp_path / "r", tiny_vgg())
    assert isinstance(e2, ClaDec) and isinstance(r2, RefAE)
    assert torch.equal(e2.reconstruct(xt), e.reconstruct(xt))
    assert torch.equal(r2.reconstruct(xt), r.reconstruct(xt))
    assert e2.alpha == 0.01 and e2.neurons == e.neurons and e2.history == e.history


def test_save_contents(tmp_path, fitted):
    e, _ = fitted
    e.save(tmp_path / "e")
    assert sorted(p.name for p in (tmp_path / "e").iterdir()) == ["cladec.json", "weights.safetensors"]
    cfg = json.loads((tmp_path / "e" / "cladec.json").read_text())
    for key in (
        "layer",
        "neurons",
        "alpha",
        "layer_shape",
        "activation_shape",
        "image_shape",
        "decoder",
        "cladec_version",
        "history",
    ):
        assert key in cfg
    assert cfg["layer"] == "conv2" and cfg["layer_shape"] == [32, 4, 4] and cfg["activation_shape"] == [16, 4, 4]
    assert not list(tmp_path.glob(".*tmp")), "temporary files left behind"


def test_load_not_a_save(tmp_path):
    with pytest.raises(SaveFormatError, match="not a cladec save"):
        cladec.load(tmp_path, tiny_vgg())
    (tmp_path / "cladec.json").write_text('{"format": "something-else"}')
    with pytest.raises(SaveFormatError, match="not a cladec explainer save"):
        cladec.load(tmp_path, tiny_vgg())
    (tmp_path / "cladec.json").write_text("not json")
    with pytest.raises(SaveFormatError, match="not a valid JSON"):
        cladec.load(tmp_path, tiny_vgg())
    (tmp_path / "cladec.json").write_text('{"format": "cladec-explainer", "format_version": 2, "kind": "cladec"}')
    with pytest.raises(SaveFormatError, match="format version 2; this cladec reads version 1"):
        cladec.load(tmp_path, tiny_vgg())
    (tmp_path / "cladec.json").write_text('{"format": "cladec-explainer", "kind": "cladec", "decoder": [1]}')
    with pytest.raises(SaveFormatError, match="'decoder' must be an object, got list"):
        cladec.load(tmp_path, tiny_vgg())


def test_load_for_a_different_layer_shape(tmp_path, fitted):
    e, _ = fitted
    e.save(tmp_path / "e")
    wider = create_model("vgg-paper", in_channels=1, num_classes=10, width=0.5).eval()
    with pytest.raises(SaveFormatError, match=r"output shape \(32, 4, 4\).*produces \(64, 4, 4\)"):
        cladec.load(tmp_path / "e", wider)


def test_corrupt_weights(tmp_path, fitted):
    e, _ = fitted
    e.save(tmp_path / "e")
    (tmp_path / "e" / "weights.safetensors").write_bytes(b"garbage")
    with pytest.raises(SaveFormatError, match="not a valid safetensors"):
        cladec.load(tmp_path / "e", tiny_vgg())


def test_failed_save_leaves_nothing_and_keeps_old(tmp_path, fitted, monkeypatch):
    e, _ = fitted
    e.save(tmp_path / "e")
    old = (tmp_path / "e" / "cladec.json").read_text()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(cladec.explainers.base, "write_json", boom)  # the save writes its JSON through it
    with pytest.raises(OSError):
        e.save(tmp_path / "e")
    with pytest.raises(OSError):
        e.save(tmp_path / "new")
    assert (tmp_path / "e" / "cladec.json").read_text() == old
    assert not (tmp_path / "new").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e"]


def test_save_replaces_an_earlier_save_but_never_a_user_folder(tmp_path, fitted):
    e, _ = fitted
    e.save(tmp_path / "e")
    e.save(tmp_path / "e")  # an earlier save is replaced
    (tmp_path / "empty").mkdir()
    e.save(tmp_path / "empty")  # so is an empty folder
    user = tmp_path / "mine"
    user.mkdir()
    (user / "precious.txt").write_text("keep me")
    with pytest.raises(SaveFormatError, match="non-empty folder that is not a saved explainer.*no cladec.json"):
        e.save(user)
    assert [p.name for p in user.iterdir()] == ["precious.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e", "empty", "mine"]  # no temporary folders left


def test_save_is_never_into_the_current_directory_and_ignores_os_clutter(tmp_path, fitted, monkeypatch):
    e, _ = fitted
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / ".DS_Store").write_bytes(b"\0")
    e.save(tmp_path / "run")  # a folder holding only the OS's clutter counts as empty
    assert (tmp_path / "run" / "cladec.json").is_file()
    monkeypatch.chdir(tmp_path / "run")
    with pytest.raises(SaveFormatError, match="is the current directory"):
        e.save(".")
    assert (tmp_path / "run" / "cladec.json").is_file()


def test_loaded_explainers_are_in_eval_mode_as_after_fit(tmp_path, fitted):
    # loaded decoders (and RefAE's encoder) were in train mode: a decoder with BatchNorm reconstructed from batch
    # statistics when used directly
    x, y = fmnist("train", 256)
    e, r = fitted
    bn = ClaDec(tiny_vgg(), "conv2", alpha=0.0, decoder_norm="batch").fit((x, y), epochs=1, verbose=False, **QUICK)
    for name, ex in (("e", e), ("r", r), ("bn", bn)):
        ex.save(tmp_path / name)
        loaded = cladec.load(tmp_path / name, tiny_vgg())
        modules = [loaded.decoder] + ([loaded.encoder] if isinstance(loaded, RefAE) else [])
        assert not any(mod.training for m in modules for mod in m.modules()), name
    with torch.no_grad():
        assert torch.equal(loaded.decoder(loaded.encode(x[:3])), bn.reconstruct(x[:3]))


def test_older_saves_with_settings_now_refused_still_load(tmp_path, fitted):
    # saves made before options that would be ignored were refused recorded them: they load as before
    e, _ = fitted
    e.save(tmp_path / "e")
    cfg_path = tmp_path / "e" / "cladec.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["prefix_tokens"] = "channels"  # ignored for the conv layer
    cfg_path.write_text(json.dumps(cfg))
    xt, _ = fmnist("test", 16)
    assert torch.equal(cladec.load(tmp_path / "e", tiny_vgg()).reconstruct(xt), e.reconstruct(xt))
    dec = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(512, 784), torch.nn.Sigmoid(), torch.nn.Unflatten(1, (1, 28, 28))
    )
    x, y = fmnist("train", 64)
    custom = ClaDec(tiny_vgg(), "conv2", alpha=0.0, decoder=dec).fit((x, y), epochs=1, verbose=False)
    custom.save(tmp_path / "c")
    cfg_path = tmp_path / "c" / "cladec.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.update(base_width=8, decoder_norm="batch")  # recorded but unused with a custom decoder
    cfg_path.write_text(json.dumps(cfg))
    loaded = cladec.load(tmp_path / "c", tiny_vgg(), decoder=copy.deepcopy(dec))
    assert torch.equal(loaded.reconstruct(xt), custom.reconstruct(xt))
