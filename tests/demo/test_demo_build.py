"""The demo build runs end to end at a tiny size, writes its files, and reuses its cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from auditai.demo import build as B
from auditai.demo.heads import make_head
from auditai.demo.vae import ConvVAE, elbo_loss, elbo_terms
from auditai.errors import DataError


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    s = B.DemoSettings("shapes", "tiny", seed=0, n_train=256, n_test=64, vae_epochs=1,
                       head_epochs=2)
    first = B.build_demo("shapes", out, settings=s, verbose=False)
    again = B.build_demo("shapes", out, settings=s, verbose=False, save=False)
    return out, first, again


def test_tiny_build_end_to_end(tiny):
    out, b, _ = tiny
    assert not b.cache_hit
    assert set(b.directions) == {"x", "y", "scale", "rotation", "brightness"}
    for info in b.directions.values():
        assert info.vector.shape == (10,) and abs(float(info.vector.norm()) - 1) < 1e-5
        assert np.isfinite(info.score)
    data = np.load(out / "shapes_test.npz")
    assert data["z"].shape == (64, 10) and data["y"].shape == (64,) and data["x"].shape == (64, 1, 32, 32)
    # the saved codes are the encoder's means of the saved images
    z = b.parts["encoder"](torch.from_numpy(data["x"][:4]))
    assert torch.allclose(z, torch.from_numpy(data["z"][:4]), atol=1e-5)
    assert (out / "shapes_strips.png").stat().st_size > 1000
    attrs = np.load(out / "shapes_attributes.npz")
    assert attrs["scale"].shape == (64,)
    if b.model is not None:  # auditai.model present: an AuditModel with the named directions
        m = b.model
        assert m.latent_dim == 10 and m.num_outputs == 3
        assert set(m.directions) == set(b.directions)
        assert m.class_names == ["square", "ellipse", "triangle"]
        assert (out / "shapes_model.auditai").is_file()
    # the guided VAE's attribute coordinates and the certified head (auditai.train present)
    if b.certified_model is not None:
        assert (out / "shapes_certified.auditai").is_file()
        assert b.certified_model.metadata["certified_training"]["sets"] == [
            n for n, _ in b.settings.certify]
        assert b.parts["certified_head"] is not b.parts["head"]


def test_second_build_reuses_the_cache_and_gives_the_same_model(tiny):
    _, b, again = tiny
    assert again.cache_hit
    for k, v in b.parts["head"].state_dict().items():
        assert torch.equal(v, again.parts["head"].state_dict()[k])
    if b.parts["certified_head"] is not None:
        for k, v in b.parts["certified_head"].state_dict().items():
            assert torch.equal(v, again.parts["certified_head"].state_dict()[k])
    for name in b.directions:
        assert torch.allclose(b.directions[name].vector, again.directions[name].vector, atol=1e-6)
    assert again.test_accuracy == b.test_accuracy


def test_cache_key_follows_the_settings():
    a, b = B.settings_for("shapes", "tiny"), B.settings_for("shapes", "tiny", seed=1)
    assert B.cache_key(a) != B.cache_key(b)
    assert B.cache_key(a) == B.cache_key(B.settings_for("shapes", "tiny"))


def test_bad_names_are_refused():
    with pytest.raises(DataError, match="dataset must be one of"):
        B.settings_for("imagenet")
    with pytest.raises(DataError, match="size must be"):
        B.settings_for("shapes", "huge")


def test_vae_parts_are_plain_sequentials_and_elbo_is_finite():
    torch.manual_seed(0)
    vae = ConvVAE(latent_dim=6)
    x = torch.rand(5, 1, 32, 32)
    assert isinstance(vae.encoder, torch.nn.Sequential) and isinstance(vae.decoder, torch.nn.Sequential)
    assert vae.encoder(x).shape == (5, 6)
    assert vae.decoder(torch.zeros(3, 6)).shape == (3, 1, 32, 32)
    mu, _ = vae.encode(x)
    assert torch.allclose(mu, vae.encoder(x))
    g = torch.Generator().manual_seed(1)
    rec, kl = elbo_terms(vae, x, g)
    assert rec.item() > 0 and kl.item() >= 0
    g = torch.Generator().manual_seed(1)
    full = elbo_loss(vae, x, beta=0.5, generator=g)
    assert full.item() == pytest.approx(rec.item() + 0.5 * kl.item(), rel=1e-5)
    full.backward()
    assert all(p.grad is not None for p in vae.encoder.parameters())


def test_head_is_linear_and_relu_only():
    head = make_head(10, 3)
    assert {type(m).__name__ for m in head} == {"Linear", "ReLU"}
    assert head(torch.zeros(2, 10)).shape == (2, 3)


def test_guided_vae_puts_the_factors_on_the_first_coordinates():
    """The guide term pulls μ_j to the standardised factor j: after a little training the
    first coordinates correlate with their factors far more than without guidance."""
    from auditai.demo import shapes
    from auditai.demo.vae import encode_mean, train_vae

    torch.manual_seed(0)
    x, f = shapes.generate(512, seed=3)
    a = torch.tensor(np.stack([f["x"], f["y"]], 1), dtype=torch.float32)
    x = torch.from_numpy(x)

    def corr(guide):
        vae, hist = train_vae(x, 4, epochs=3, batch_size=64, beta=0.1, seed=0,
                              channels=8, hidden=64, factors=a, guide_weight=guide,
                              warmup_epochs=1)
        z = encode_mean(vae.encoder, x).numpy()
        return [abs(np.corrcoef(z[:, j], a[:, j].numpy())[0, 1]) for j in range(2)], hist

    guided, hist = corr(30.0)
    assert hist[-1]["guide"] < hist[0]["guide"]
    assert min(guided) > 0.8, guided
    with pytest.raises(ValueError, match="factors must be N×k"):
        train_vae(x[:10], 1, epochs=1, factors=a[:10], guide_weight=1.0)
