"""ClaDec relevance maps: the ``kept`` formula, every variant on a real ClaDec/RefAE pair, errors."""

import pytest
import torch

from cladec import ConfigError
from cladec.saliency.methods import DEFAULT_VARIANT, VARIANTS
from cladec.saliency.relevance import gaussian_smooth, kept_map, relevance_map
from helpers.stability import margin

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_kept_map_formula():
    x = torch.zeros(2, 1, 6, 6)
    x[:, :, 2:4, 2:4] = 1.0
    ref = [0.0]
    # both reconstruct the object: all its information is kept; background (x = m) scores 0
    k = kept_map(x, x, x, reference=ref, sigma=0)
    assert torch.equal(k[0], x[0, 0])
    # ClaDec loses the object but RefAE keeps it: the classifier discarded it
    assert kept_map(x, torch.zeros_like(x), x, reference=ref, sigma=0).abs().max() == 0
    # neither reconstructs it: nothing is credited either (max of the two errors)
    assert kept_map(x, torch.zeros_like(x), torch.zeros_like(x), reference=ref, sigma=0).abs().max() == 0
    # half-way ClaDec: half the information is kept
    half = kept_map(x, 0.5 * x, x, reference=ref, sigma=0)
    assert torch.allclose(half[0], 0.5 * x[0, 0])


def test_kept_map_reference_shapes_and_errors():
    x = torch.rand(3, 3, 5, 5)
    for ref in (None, [0.1, 0.2, 0.3], torch.rand(3, 5, 5)):
        assert kept_map(x, x, x, reference=ref).shape == (3, 5, 5)
    with pytest.raises(ConfigError, match="reference"):
        kept_map(x, x, x, reference=torch.rand(2, 2))
    with pytest.raises(ConfigError, match="shape"):
        kept_map(x, x[:, :1], x)


def test_gaussian_smooth_keeps_mass_and_shape():
    m = torch.zeros(1, 21, 21)
    m[0, 10, 10] = 1
    s = gaussian_smooth(m, 1.5)
    assert s.shape == m.shape and abs(float(s.sum()) - 1) < 1e-5 and s[0, 10, 10] < 1
    assert torch.equal(gaussian_smooth(m, 0), m)


@pytest.fixture(scope="module")
def images(fmnist_small):
    x, y = fmnist_small[1].tensors()
    return x[:16], y[:16]


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_on_a_real_pair(saliency_run, images, variant):
    x, _ = images
    r = relevance_map(x, cladec=saliency_run.cladec, refae=saliency_run.refae, variant=variant, batch_size=8)
    assert r.shape == (16, 28, 28)
    assert torch.isfinite(r).all()
    assert r.abs().sum() > 0


def test_kept_map_lies_on_the_garment(saliency_run, images):
    # relative to a black reference, the information ClaDec and RefAE both reproduce lies on the garment
    x, _ = images
    r = relevance_map(x, cladec=saliency_run.cladec, refae=saliency_run.refae, variant="kept", reference=[0.0])
    on = x[:, 0] > 0.1
    inside = (r * on).sum((1, 2)) / on.sum((1, 2))
    outside = (r * ~on).sum((1, 2)) / (~on).sum((1, 2)).clamp_min(1)
    margin("kept relevance: share of images with more inside the garment", (inside > outside).float().mean(), ">=", 0.9)


def test_default_variant_and_precomputed_reconstructions(saliency_run, images):
    x, _ = images
    run = saliency_run
    a = relevance_map(x, cladec=run.cladec, refae=run.refae)
    b = relevance_map(
        x,
        cladec=run.cladec,
        refae=run.refae,
        variant=DEFAULT_VARIANT,
        x_cladec=run.cladec.reconstruct(x),
        x_refae=run.refae.reconstruct(x),
    )
    assert torch.allclose(a, b, atol=1e-5)


def test_errors(saliency_run, images):
    x, _ = images
    with pytest.raises(ConfigError, match="valid variants: kept"):
        relevance_map(x, cladec=saliency_run.cladec, refae=saliency_run.refae, variant="lost")
    with pytest.raises(ConfigError, match="RefAE"):
        relevance_map(x, cladec=saliency_run.cladec, refae=None)
