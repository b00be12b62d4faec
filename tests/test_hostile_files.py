"""Hostile files (issue 15): malformed, damaged or redirected files cladec reads back — run.json, an explainer's
cladec.json and weights, a checkpoint's classifier.json and weights, a pickle offered as weights, symlinks out
of a run folder. Each is refused through the command line with one line ``cladec: error: ...`` naming the file
(and the field), exit status 2 and no traceback."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from cladec.cli.main import main
from helpers.core import DATA_ROOT

pytestmark = [
    pytest.mark.skipif(not (DATA_ROOT / "FashionMNIST" / "raw").is_dir(), reason=f"no data at {DATA_ROOT}"),
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.filterwarnings("ignore::cladec.CollapseWarning"),  # 1 epoch on 64 images: only files matter here
]

DATA = str(DATA_ROOT)


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    """A folder with ``clf/`` (an untrained vgg-paper checkpoint at width 0.25, Fashion-MNIST 28×28) and ``run/``
    (ClaDec and RefAE of its conv2, 1 epoch on 64 images) beside it, as ``cladec fit`` writes them."""
    from cladec.data.names import FASHION_MNIST_CLASSES
    from cladec.models import create_model
    from cladec.models.checkpoint import save_classifier
    from cladec.runs import fit_run

    base = tmp_path_factory.mktemp("hostile-files")
    torch.manual_seed(0)
    net = create_model("vgg-paper", in_channels=1, num_classes=10, width=0.25)
    save_classifier(
        base / "clf",
        net,
        dataset={"name": "fashion-mnist", "image_shape": [1, 28, 28], "classes": list(FASHION_MNIST_CLASSES)},
    )
    fit_run(
        base / "run",
        classifier_dir=base / "clf",
        dataset="fashion-mnist",
        layer="conv2",
        epochs=1,
        limit=64,
        test_limit=16,
        data_root=DATA,
        device="cpu",
        seed=0,
        verbose=False,
    )
    return base


@pytest.fixture
def copy(made, tmp_path) -> Path:
    """A fresh copy of ``clf/`` and ``run/`` side by side (the run finds ../clf) in the test's folder."""
    for name in ("clf", "run"):
        shutil.copytree(made / name, tmp_path / name)
    return tmp_path


def _one_line_error(capsys, argv, *, contains=()) -> str:
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err and err.count("\n") == 1 and err.startswith("cladec: error: "), err
    for c in contains:
        assert c in err, err
    return err


def _explain(run: Path, out: Path) -> list:
    return ["explain", "--run", run, "--n", "4", "--out", out / "x.png", "--data-root", DATA]


def _edit(path: Path, change) -> None:
    obj = json.loads(path.read_text())
    change(obj)
    path.write_text(json.dumps(obj))


def _set(key_path: str, value):
    """An edit that sets (or, with value _DEL, deletes) the dotted ``key_path``."""

    def change(obj):
        *parents, last = key_path.split(".")
        for p in parents:
            obj = obj[p]
        if value is _DEL:
            obj.pop(last, None)
        else:
            obj[last] = value

    return change


_DEL = object()


def test_explain_works_on_the_untouched_copy(copy, capsys):
    """The fixture's run, copied, explains (so every refusal below is the corruption's)."""
    assert main([str(a) for a in _explain(copy / "run", copy)]) == 0, capsys.readouterr().err


# --- 1. run.json -------------------------------------------------------------------------------------------------

_FACTORY = "helpers.user_model:make_net"


@pytest.mark.parametrize(
    "key_path, value, field",
    [
        ("classifier", _DEL, "classifier"),
        ("classifier", [1], "classifier"),
        ("classifier", "../clf", "classifier"),
        ("classifier.path", _DEL, "classifier.path"),
        ("classifier.path", 5, "classifier.path"),
        ("classifier.path", "", "classifier.path"),
        ("classifier.type", "zip", "classifier.type"),
        ("classifier.weights_sha256", 7, "classifier.weights_sha256"),
        ("classifier", {"type": "factory"}, "classifier.factory"),
        ("classifier", {"type": "factory", "factory": _FACTORY, "weights": None, "kwargs": [1]}, "classifier.kwargs"),
        ("classifier", {"type": "factory", "factory": _FACTORY, "weights": 3, "kwargs": {}}, "classifier.weights"),
        ("dataset", "mnist", "dataset"),
        ("dataset.name", 5, "dataset.name"),
        ("dataset.size", "big", "dataset.size"),
        ("dataset.root", ["x"], "dataset.root"),
        ("dataset.classes", "abc", "dataset.classes"),
        ("layer", _DEL, "layer"),
        ("layer", 3, "layer"),
        ("image_shape", [1, -28, 28], "image_shape"),
        ("alpha", "x", "alpha"),
        ("neurons", "all", "neurons"),
        ("metrics", [1], "metrics"),
        ("collapsed", 1, "collapsed"),
        ("format_version", 2, "format_version"),
    ],
)
def test_malformed_run_json_is_one_line_naming_the_field(copy, capsys, key_path, value, field):
    _edit(copy / "run" / "run.json", _set(key_path, value))
    _one_line_error(capsys, _explain(copy / "run", copy), contains=("run.json", field))


@pytest.mark.parametrize("text", ["", "{", "[1, 2]", "null", "\xff\xfe", "[" * 100_000, '{"a":' * 100_000])
def test_run_json_that_is_no_json_object_is_one_line(copy, capsys, text):
    (copy / "run" / "run.json").write_bytes(text.encode("latin-1"))
    _one_line_error(capsys, _explain(copy / "run", copy), contains=("run.json",))


# --- 2. cladec.json ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key_path, value, field",
    [
        ("image_shape", [1, -28, 28], "image_shape"),
        ("image_shape", "abc", "image_shape"),
        ("image_shape", [1, 28], "image_shape"),
        ("image_shape", [1, 100_000, 100_000], "image_shape"),
        ("layer_shape", _DEL, "layer_shape"),
        ("layer", ["conv2"], "layer"),
        ("base_width", -4, "base_width"),
        ("base_width", 1e9, "base_width"),
        ("base_width", 10**9, "base_width"),
        ("base_width", "64", "base_width"),
        ("alpha", "x", "alpha"),
        ("alpha", 7, "alpha"),
        ("history", 5, "history"),
        ("history", [1], "history"),
        ("fit_config", [1, 2, 3], "fit_config"),
        ("neurons", [-1], "neurons"),
        ("neurons", "x", "neurons"),
        ("decoder_norm", "layer", "decoder_norm"),
        ("decoder", 3, "decoder"),
        ("input_norm", "x", "input_norm"),
        ("fitted", "yes", "fitted"),
        ("num_prefix_tokens", -1, "num_prefix_tokens"),
        ("weights_sha256", 5, "weights_sha256"),
        ("kind", "pca", "kind"),
    ],
)
def test_malformed_cladec_json_is_one_line_naming_the_field(copy, capsys, key_path, value, field):
    _edit(copy / "run" / "cladec" / "cladec.json", _set(key_path, value))
    _one_line_error(capsys, _explain(copy / "run", copy), contains=("cladec.json", field))


# --- 3. classifier.json ------------------------------------------------------------------------------------------


def _layers(clf: Path) -> list:
    return ["layers", "--model", clf]


@pytest.mark.parametrize(
    "key_path, value, field",
    [
        ("arch_kwargs.width", 1e12, "arch_kwargs"),
        ("arch_kwargs.num_classes", 10**12, "arch_kwargs"),
        ("arch_kwargs", [1], "arch_kwargs"),
        ("dataset.image_shape", "1,28,28", "dataset.image_shape"),
        ("dataset.image_shape", [28, 28], "dataset.image_shape"),
        ("dataset.image_shape", [1, 0, 28], "dataset.image_shape"),
        ("dataset.classes", 10, "dataset.classes"),
        ("dataset", "fashion-mnist", "dataset"),
        ("input_norm", [[0.5], [-1]], "input_norm"),
        ("weights_sha256", 5, "weights_sha256"),
        ("arch", 5, "arch"),
    ],
)
def test_malformed_classifier_json_is_one_line_naming_the_field(copy, capsys, key_path, value, field):
    _edit(copy / "clf" / "classifier.json", _set(key_path, value))
    _one_line_error(capsys, _layers(copy / "clf"), contains=("classifier.json", field))


@pytest.mark.parametrize("text", ["[" * 100_000, '{"a":' * 100_000, "[" * 1000 + "]" * 1000])
def test_deeply_nested_classifier_json_is_one_line(copy, capsys, text):
    (copy / "clf" / "classifier.json").write_text(text)
    _one_line_error(capsys, _layers(copy / "clf"), contains=("classifier.json",))


def test_the_untouched_checkpoint_lists_its_layers(copy, capsys):
    assert main(["layers", "--model", str(copy / "clf")]) == 0, capsys.readouterr().err


# --- 4. explainer weights: integrity -----------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_save_records_its_weights_digest(copy):
    for kind in ("cladec", "refae"):
        cfg = json.loads((copy / "run" / kind / "cladec.json").read_text())
        assert cfg["weights_sha256"] == _sha256(copy / "run" / kind / "weights.safetensors")


@pytest.mark.parametrize("where", [-1, -5000, 200])  # the last weight, one in the middle, the header's JSON
def test_one_flipped_byte_in_explainer_weights_is_refused(copy, capsys, where):
    w = copy / "run" / "cladec" / "weights.safetensors"
    data = bytearray(w.read_bytes())
    data[where] ^= 0x01
    w.write_bytes(bytes(data))
    _one_line_error(capsys, _explain(copy / "run", copy), contains=("weights.safetensors",))


def test_refae_weights_copied_over_cladec_weights_are_refused(copy, capsys):
    shutil.copy(copy / "run" / "refae" / "weights.safetensors", copy / "run" / "cladec" / "weights.safetensors")
    _one_line_error(capsys, _explain(copy / "run", copy), contains=("weights.safetensors", "SHA-256"))
    # a save of an earlier version records no digest: the RefAE's encoder.* keys are refused by name
    _edit(copy / "run" / "cladec" / "cladec.json", _set("weights_sha256", _DEL))
    _one_line_error(capsys, _explain(copy / "run", copy), contains=("weights.safetensors", "encoder."))


def test_cladec_weights_copied_over_refae_weights_are_refused(copy, capsys):
    shutil.copy(copy / "run" / "cladec" / "weights.safetensors", copy / "run" / "refae" / "weights.safetensors")
    _one_line_error(capsys, _explain(copy / "run", copy), contains=("refae", "SHA-256"))
    _edit(copy / "run" / "refae" / "cladec.json", _set("weights_sha256", _DEL))
    _one_line_error(capsys, _explain(copy / "run", copy), contains=("refae", "encoder weights", "missing"))


def test_weights_of_another_shape_are_named(copy, capsys):
    """A tensor renamed in an older save (no digest): the key is named."""
    from safetensors.torch import load_file, save_file

    w = copy / "run" / "cladec" / "weights.safetensors"
    t = load_file(str(w))
    key = sorted(t)[0]
    t["decoder.extra"] = t.pop(key)
    save_file(t, str(w))
    _edit(copy / "run" / "cladec" / "cladec.json", _set("weights_sha256", _DEL))
    _one_line_error(capsys, _explain(copy / "run", copy), contains=("decoder.extra", key.removeprefix("decoder.")))


def test_saves_without_a_digest_still_load(copy, capsys):
    for kind in ("cladec", "refae"):
        _edit(copy / "run" / kind / "cladec.json", _set("weights_sha256", _DEL))
    assert main([str(a) for a in _explain(copy / "run", copy)]) == 0, capsys.readouterr().err


# --- 5. a pickle offered as weights ------------------------------------------------------------------------------


def _pwn(marker: str) -> dict:
    """What a hostile pickle would run; here it only leaves a file behind."""
    Path(marker).write_text("ran")
    return {}


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (_pwn, (self.marker,))


def _factory_layers(weights: Path) -> list:
    return ["layers", "--factory", _FACTORY, "--weights", weights, "--image-shape", "1,28,28"]


@pytest.mark.parametrize("how", ["torch.save", "pickle.dump", "whole-model"])
def test_a_pickle_offered_as_weights_is_refused_in_cladecs_words(tmp_path, capsys, how):
    from helpers.user_model import make_net

    evil, marker = tmp_path / "evil.pt", tmp_path / "pwned"
    if how == "torch.save":
        torch.save({"conv.weight": torch.zeros(1), "x": _Evil(marker)}, evil)
    elif how == "pickle.dump":
        evil.write_bytes(pickle.dumps({"x": _Evil(marker)}))
    else:
        torch.save(make_net(), evil)
    err = _one_line_error(
        capsys, _factory_layers(evil), contains=("evil.pt", "never unpickles", "safetensors", "weights_only=True")
    )
    assert "weights_only set to False" not in err and "will likely succeed" not in err, err
    assert not marker.exists()


def test_a_plain_state_dict_file_still_loads(tmp_path, capsys):
    from helpers.user_model import make_net

    torch.save(make_net().state_dict(), tmp_path / "ok.pt")
    assert main([str(a) for a in _factory_layers(tmp_path / "ok.pt")]) == 0, capsys.readouterr().err


@pytest.mark.parametrize("cut", [0, 10, 200, -100])
def test_a_truncated_state_dict_file_is_one_line(tmp_path, capsys, cut):
    from helpers.user_model import make_net

    torch.save(make_net().state_dict(), tmp_path / "w.pt")
    data = (tmp_path / "w.pt").read_bytes()
    (tmp_path / "w.pt").write_bytes(data[:cut])
    err = _one_line_error(capsys, _factory_layers(tmp_path / "w.pt"), contains=("w.pt",))
    assert "weights_only set to False" not in err, err


# --- 6. truncated safetensors, every kind ------------------------------------------------------------------------

_CUTS = [0, 4, 8, 60, -100, -1]  # empty, inside the header length, inside the header, inside the data


def _truncate(path: Path, cut: int) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:cut])


@pytest.mark.parametrize("cut", _CUTS)
@pytest.mark.parametrize("digest", [True, False])
def test_truncated_classifier_weights_are_one_line(copy, capsys, cut, digest):
    _truncate(copy / "clf" / "model.safetensors", cut)
    if not digest:  # a checkpoint of an earlier version
        _edit(copy / "clf" / "classifier.json", _set("weights_sha256", _DEL))
    _one_line_error(capsys, _layers(copy / "clf"), contains=("model.safetensors",))


@pytest.mark.parametrize("cut", _CUTS)
@pytest.mark.parametrize("kind", ["cladec", "refae"])
def test_truncated_explainer_weights_are_one_line(copy, capsys, cut, kind):
    _truncate(copy / "run" / kind / "weights.safetensors", cut)
    _one_line_error(capsys, _explain(copy / "run", copy), contains=(f"{kind}/weights.safetensors",))


@pytest.mark.parametrize("cut", _CUTS)
def test_truncated_factory_weights_are_one_line(tmp_path, capsys, cut):
    from safetensors.torch import save_file

    from helpers.user_model import make_net

    w = tmp_path / "w.safetensors"
    save_file(make_net().state_dict(), str(w))
    _truncate(w, cut)
    _one_line_error(capsys, _factory_layers(w), contains=("w.safetensors",))


@pytest.mark.parametrize("cut", _CUTS)
def test_a_truncated_saliency_map_cache_entry_is_recomputed(tmp_path, cut):
    """compare-saliency's cached maps (maps/*.safetensors) are a cache: a damaged entry is read as missing (and
    computed again); read directly it is one SaveFormatError line naming the file."""
    from cladec import SaveFormatError
    from cladec._io import load_tensors, save_tensors
    from cladec.saliency.compare import _load_maps

    f = tmp_path / "maps" / "grad__cladec.safetensors"
    save_tensors(f, {"maps": torch.rand(4, 1, 28, 28)})
    _truncate(f, cut)
    assert _load_maps(f) is None
    with pytest.raises(SaveFormatError) as info:
        load_tensors(f)
    assert str(f) in str(info.value) and "\n" not in str(info.value)


# --- 7. symbolic links out of a run folder, '..' paths -----------------------------------------------------------
# Rule (cladec.runs module docs): every file of a run, an explainer save or a checkpoint must lie in that folder
# (the folder itself may be reached through a link, and a link that stays inside is fine); the classifier entry of
# run.json is a reference to a checkpoint the user named at fit time, relative to the run ('../clf', as fit_run
# writes it) or absolute, so it may lead anywhere -- but it must hold a checkpoint with the recorded weights.


def _link_out(path: Path, outside: Path) -> None:
    """Move ``path`` to ``outside`` and leave a symbolic link to it in its place."""
    shutil.move(str(path), str(outside))
    os.symlink(outside, path)


@pytest.mark.parametrize(
    "part", ["run.json", "cladec/cladec.json", "cladec/weights.safetensors", "refae/weights.safetensors", "cladec"]
)
def test_a_run_file_linked_out_of_the_run_is_refused(copy, capsys, part):
    (copy / "elsewhere").mkdir()
    _link_out(copy / "run" / part, copy / "elsewhere" / Path(part).name)
    _one_line_error(capsys, _explain(copy / "run", copy), contains=(str(copy / "run" / part), "outside"))


@pytest.mark.parametrize("part", ["classifier.json", "model.safetensors"])
def test_a_checkpoint_file_linked_out_of_the_checkpoint_is_refused(copy, capsys, part):
    _link_out(copy / "clf" / part, copy / part)
    _one_line_error(capsys, _layers(copy / "clf"), contains=(str(copy / "clf" / part), "outside"))
    _one_line_error(capsys, _explain(copy / "run", copy), contains=(str(copy / "clf" / part), "outside"))


def test_links_that_stay_inside_and_linked_folders_are_fine(copy, tmp_path, capsys):
    w = copy / "run" / "cladec" / "weights.safetensors"
    w.rename(w.with_name("real.safetensors"))
    os.symlink("real.safetensors", w)  # a link inside the save
    _link_out(copy / "clf", tmp_path / "models-clf")  # the classifier a link to a folder elsewhere
    _link_out(copy / "run", tmp_path / "runs-run")  # the run folder itself reached through a link
    assert main([str(a) for a in _explain(copy / "run", copy)]) == 0, capsys.readouterr().err


@pytest.mark.parametrize("value", ["../../../../../../../../etc", "/", "../run", "../nowhere", "run.json"])
def test_a_classifier_path_to_something_else_is_one_line(copy, capsys, value):
    _edit(copy / "run" / "run.json", _set("classifier.path", value))
    _edit(copy / "run" / "run.json", _set("classifier.abs_path", _DEL))
    _one_line_error(capsys, _explain(copy / "run", copy), contains=("classifier",))


def test_a_classifier_path_to_another_checkpoint_is_refused_by_its_digest(copy, capsys):
    from cladec.models import create_model
    from cladec.models.checkpoint import save_classifier

    torch.manual_seed(1)
    save_classifier(
        copy / "other",
        create_model("vgg-paper", in_channels=1, num_classes=10, width=0.25),
        dataset=json.loads((copy / "clf" / "classifier.json").read_text())["dataset"],
    )
    _edit(copy / "run" / "run.json", _set("classifier.path", "../other"))
    _one_line_error(capsys, _explain(copy / "run", copy), contains=("other", "not the one the run"))
