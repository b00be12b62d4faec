"""Deletion/insertion, ROAD and ROAR on a tiny real classifier; validation of scores and k."""

import pytest
import torch

from cladec import ConfigError, DataError
from cladec.saliency.baselines import random_map
from cladec.saliency.road import noisy_linear_impute, road
from cladec.saliency.roar import check_roar_k, roar_accuracy, roar_images
from cladec.saliency.scores import check_scores, deletion, insertion, pixel_ranks
from cladec.saliency.units import UnitStore
from helpers.stability import margin

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def scored(fmnist_small, saliency_run):
    x, _ = fmnist_small[1].tensors()
    x = x[:200]
    mask = (x[:, 0] > 0.1).float()  # the garment itself, from the image
    return saliency_run.classifier, x, mask, random_map(x, 0)


def test_garment_mask_beats_random_on_deletion_and_insertion(scored):
    model, x, mask, rnd = scored
    d_mask, d_rnd = deletion(model, x, mask)["auc"].mean(), deletion(model, x, rnd)["auc"].mean()
    i_mask, i_rnd = insertion(model, x, mask)["auc"].mean(), insertion(model, x, rnd)["auc"].mean()
    margin("deletion AUC: garment mask - random", d_mask - d_rnd, "<", -0.05)
    margin("insertion AUC: garment mask - random", i_mask - i_rnd, ">", 0.05)


def test_curves_start_and_end_where_they_should(scored):
    model, x, mask, _ = scored
    r = deletion(model, x[:20], mask[:20], steps=4)
    assert r["curves"].shape == (20, 5) and torch.allclose(r["fractions"], torch.linspace(0, 1, 5))
    p = torch.softmax(model(x[:20]), 1).max(1).values  # target = prediction, so step 0 = its probability
    assert torch.allclose(r["curves"][:, 0], p, atol=1e-5)
    ins = insertion(model, x[:20], mask[:20], steps=4)
    assert torch.allclose(ins["curves"][:, -1], p, atol=1e-5)
    assert torch.allclose(r["curves"][:, -1], ins["curves"][:, 0], atol=1e-5)  # both all-black


def test_road_mask_removes_more_than_random(scored):
    model, x, mask, rnd = scored
    rm = road(model, x[:100], mask[:100], fractions=(0.2, 0.5, 0.8))
    rr = road(model, x[:100], rnd[:100], fractions=(0.2, 0.5, 0.8))
    assert len(rm["morf"]["accuracy"]) == 3 and set(rm) >= {"morf", "lerf", "road_gap", "fractions"}
    assert sum(rm["morf"]["accuracy"]) < sum(rr["morf"]["accuracy"])
    assert -1 <= rm["road_gap"] <= 1
    with pytest.raises(ConfigError, match=r"\(0, 1\)"):
        road(model, x[:4], mask[:4], fractions=(0.5, 1.0))


def test_noisy_linear_imputation_solves_the_road_system():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 7, 6)
    remove = torch.rand(2, 7, 6) < 0.6
    out = noisy_linear_impute(x, remove, noise=0.0, tol=1e-7)
    keep = ~remove.unsqueeze(1).expand_as(x)
    assert torch.equal(out[keep], x[keep])
    # every imputed pixel is the weighted mean of its in-image neighbours (ROAD weights 1/6, 1/12)
    w = torch.tensor([[1 / 12, 1 / 6, 1 / 12], [1 / 6, 0, 1 / 6], [1 / 12, 1 / 6, 1 / 12]]).view(1, 1, 3, 3)
    num = torch.nn.functional.conv2d(torch.nn.functional.pad(out.view(6, 1, 7, 6), (1, 1, 1, 1)), w).view_as(x)
    den = torch.nn.functional.conv2d(torch.nn.functional.pad(torch.ones(1, 1, 7, 6), (1, 1, 1, 1)), w)
    avg = num / den
    assert torch.allclose(out[~keep], avg[~keep], atol=1e-4)
    noisy = noisy_linear_impute(x, remove, noise=0.01, generator=torch.Generator().manual_seed(1))
    diff = (noisy - out)[~keep]
    assert 0.005 < float(diff.std()) < 0.02
    with pytest.raises(DataError, match="at least one kept pixel"):
        noisy_linear_impute(x, torch.ones(2, 7, 6, dtype=torch.bool))


def test_pixel_ranks_break_ties_randomly_not_by_position():
    r = pixel_ranks(torch.zeros(1, 10, 10), seed=0)
    assert sorted(r.flatten().tolist()) == list(range(100))
    first = (r[0] < 50).float()
    assert 0.3 < float(first[:5].mean()) < 0.7  # not the top half of the image
    assert not torch.equal(r, pixel_ranks(torch.zeros(1, 10, 10), seed=1))


def test_roar_images_replaces_the_top_k_percent():
    x = torch.rand(4, 3, 10, 10)
    m = torch.rand(4, 10, 10)
    out = roar_images(x, m, 30, [0.5, 0.5, 0.5])
    changed = (out != x).any(1)
    assert changed.sum((1, 2)).tolist() == [30, 30, 30, 30]
    top = m.flatten(1).topk(30, dim=1).indices
    assert changed.flatten(1).gather(1, top).all()
    assert torch.equal(roar_images(x, m, 0, [0.0, 0.0, 0.0]), x)


def test_roar_with_k0_reproduces_the_plain_accuracy(fmnist_small):
    from cladec.models import create_model
    from cladec.models.predict import accuracy
    from cladec.models.training import train_classifier

    train, test = fmnist_small
    xtr, ytr = train.tensors()
    xte, yte = test.tensors()
    xtr, ytr, xte, yte = xtr[:800], ytr[:800], xte[:300], yte[:300]

    def build():
        return create_model("vgg-paper", in_channels=1, num_classes=10, width=0.25)

    torch.manual_seed(3)
    plain = build()
    train_classifier(plain, (xtr, ytr), 1, seed=3, device="cpu", verbose=False)
    acc = accuracy(plain, (xte, yte))
    r = roar_accuracy(build, (xtr, ytr), (xte, yte), k=0, epochs=1, seed=3, device="cpu")
    assert r["accuracy"] == acc and r["k"] == 0
    r50 = roar_accuracy(
        build, (xtr, ytr), (xte, yte), k=50, train_maps=xtr[:, 0], test_maps=xte[:, 0], epochs=1, seed=3, device="cpu"
    )
    assert 0 <= r50["accuracy"] <= 1
    with pytest.raises(ConfigError, match="train_maps"):
        roar_accuracy(build, (xtr, ytr), (xte, yte), k=10, epochs=1)


@pytest.mark.parametrize("bad", [100, 150, -1, "x", float("nan")])
def test_invalid_roar_k(bad):
    with pytest.raises(ConfigError, match=r"\[0, 100\)"):
        check_roar_k([10, bad])


def test_roar_k_and_scores_parsing():
    assert check_roar_k("90,10,10,0") == [0, 10, 90]
    assert check_scores("Deletion,road,deletion") == ["deletion", "road"]
    with pytest.raises(ConfigError, match="valid scores: deletion, insertion, road, roar"):
        check_scores(["deletion", "pointing-game"])
    with pytest.raises(ConfigError, match="at least one"):
        check_scores("")


def test_maps_must_match_the_images(scored):
    model, x, mask, _ = scored
    with pytest.raises(ConfigError, match=r"\(N, H, W\)"):
        deletion(model, x[:4], mask[:3])
    with pytest.raises(ConfigError, match="mode"):
        from cladec.saliency.scores import perturbation_curve

        perturbation_curve(model, x[:4], mask[:4], mode="sideways")


def test_unit_store_is_atomic_and_skips_finished_units(tmp_path):
    s = UnitStore(tmp_path)
    calls = []
    assert s.run(("a", "roar", 10, 0), lambda: calls.append(1) or {"v": 1}) == {"v": 1}
    assert s.run(("a", "roar", 10, 0), lambda: calls.append(1) or {"v": 2}) == {"v": 1}
    assert calls == [1]
    assert not list((tmp_path / "units").glob("*.tmp"))
    (tmp_path / "units" / "broken__x__0__0.json").write_text("{not json")
    assert s.get(("broken", "x", 0, 0)) is None
