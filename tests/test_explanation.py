"""explain(): triplets with predictions and errors, and a labelled PNG grid."""

import pytest
import torch
from PIL import Image

import cladec
from cladec import ClaDec, ConfigError, DataError, RefAE
from helpers.core import QUICK, fmnist, tiny_vgg

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


@pytest.fixture(scope="module")
def pair():
    x, y = fmnist("train", 1024)
    e = ClaDec(tiny_vgg(), "conv2", alpha=0.001).fit((x, y), epochs=1, verbose=False, **QUICK)
    r = RefAE.like(e).fit((x, y), epochs=1, verbose=False, **QUICK)
    assert not e.collapsed and not r.collapsed
    return e, r


def test_explanation_holds_triplets_predictions_and_errors(pair):
    e, r = pair
    xt, yt = fmnist("test", 40)
    ex = cladec.explain(xt, cladec=e, refae=r, labels=yt, classes=CLASSES)
    assert len(ex) == 40
    assert ex.x_cladec.shape == ex.x_refae.shape == xt.shape
    with torch.no_grad():
        assert torch.equal(ex.pred_x, tiny_vgg()(xt).argmax(1))
        assert torch.equal(ex.pred_cladec, tiny_vgg()(ex.x_cladec).argmax(1))
    assert torch.allclose(ex.mse_refae, (ex.x_refae - xt).pow(2).flatten(1).mean(1))
    s = ex.summary()
    assert 0 <= s["accuracy_cladec"] <= 1 and s["mse_cladec"] > 0 and "agreement_refae" in s
    assert ex.class_name(9) == "Ankle boot"


def test_grid_png(tmp_path, pair):
    e, r = pair
    xt, yt = fmnist("test", 12)
    path = cladec.explain(xt, cladec=e, refae=r, labels=yt, classes=CLASSES).save_grid(tmp_path / "g.png", columns=4)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width > 400 and im.height > 200
    only = cladec.explain(xt, cladec=e).save_grid(tmp_path / "h.png", n=3)
    assert only.exists()


def test_grid_format_follows_the_suffix_and_matplotlib_state_is_kept(tmp_path, pair):
    import matplotlib
    import matplotlib.pyplot as plt

    e, r = pair
    xt, yt = fmnist("test", 4)
    ex = cladec.explain(xt, cladec=e, refae=r, labels=yt)
    backend = matplotlib.get_backend()
    open_before = plt.get_fignums()
    with Image.open(ex.save_grid(tmp_path / "g.jpg")) as im:
        assert im.format == "JPEG"
    assert (tmp_path / "g.pdf").exists() is False and ex.save_grid(tmp_path / "g.pdf").read_bytes()[:4] == b"%PDF"
    assert matplotlib.get_backend() == backend and plt.get_fignums() == open_before
    with Image.open(ex.save_grid(tmp_path / "features.10")) as im:  # a suffix that is no format: PNG
        assert im.format == "PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["features.10", "g.jpg", "g.pdf"]


def test_layers_must_match(pair):
    e, _ = pair
    other = RefAE(tiny_vgg(), "conv4", image_shape=(1, 28, 28))
    with pytest.raises(ConfigError, match="one layer"):
        cladec.explain(fmnist("test", 4)[0], cladec=e, refae=other)


def test_labels_are_checked(pair):
    """Labels once went through .long().view(-1): floats truncated, negatives and labels past the classifier's
    outputs accepted, a (4, 2) array flattened into 8 labels for 8 images."""
    e, r = pair
    xt, yt = fmnist("test", 8)
    with pytest.raises(DataError, match="labels must be a 1-D integer tensor"):
        cladec.explain(xt, cladec=e, labels=yt.float() + 0.5)
    with pytest.raises(DataError, match="labels must be >= 0"):
        cladec.explain(xt, cladec=e, labels=yt - 10)
    with pytest.raises(DataError, match=r"labels must lie in 0\.\.9 \(the classifier has 10 outputs\)"):
        cladec.explain(xt, cladec=e, refae=r, labels=yt + 10)
    with pytest.raises(DataError, match="labels must be a 1-D integer tensor"):
        cladec.explain(xt, cladec=e, labels=yt.view(4, 2))
    with pytest.raises(DataError, match="8 images but 7 labels"):
        cladec.explain(xt, cladec=e, labels=yt[:7])
    # a (N, 1) column and a list of ints are fine, and give the same explanation as the 1-D tensor
    ex = cladec.explain(xt, cladec=e, labels=yt.view(-1, 1))
    assert torch.equal(ex.labels, yt) and ex.summary() == cladec.explain(xt, cladec=e, labels=yt.tolist()).summary()
    # images of another shape are a clear error before the classifier sees them (it failed inside the classifier)
    with pytest.raises(DataError, match=r"images have shape \(3, 28, 28\) but this cladec explainer was built for"):
        cladec.explain(xt.repeat(1, 3, 1, 1), cladec=e, refae=r, labels=yt)
