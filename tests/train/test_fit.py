"""fit / fit_pixel: certified training lowers the verified error; verified means verified."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from auditai.latent import Dims, Direction
from auditai.train import (
    fit,
    fit_pixel,
    latent_box_of_pixel_ball,
    pixel_verified_error,
    radius_at_error,
    relative_radius,
    verified_error,
)

from .problems import clusters, mlp

EPS = 0.5
BOX = Dims(range(10))


def standard_training(head, z, y, epochs, lr=5e-3, batch_size=100, seed=0):
    """Plain Adam + cross-entropy, the same epochs and batches: the baseline head."""
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=g)
        for i in range(0, len(y), batch_size):
            idx = perm[i:i + batch_size]
            loss = F.cross_entropy(head(z[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return head


@pytest.fixture(scope="module")
def trained():
    torch.set_num_threads(1)
    z, y = clusters(600)
    zt, yt = clusters(400, seed=1)
    std = standard_training(mlp(), z, y, epochs=12)
    cert = mlp()
    res = fit(cert, z, y, BOX, EPS, epochs=12, warmup=1, lr=5e-3, batch_size=100,
              eval_data=(zt, yt), progress=False, log=None)
    return z, y, zt, yt, std, cert, res


def test_certified_training_lowers_verified_error_by_a_large_margin(trained):
    _, _, zt, yt, std, cert, res = trained
    v_std = verified_error(std, zt, yt, BOX, EPS)
    v_cert = verified_error(cert, zt, yt, BOX, EPS)
    clean = verified_error(cert, zt, yt, BOX, 0.0)
    assert v_std > 0.3, v_std  # the standard head is not robust at ε on this problem
    assert v_cert < 0.15, v_cert
    assert v_std - v_cert > 0.25
    assert clean < 0.05
    # the history reports the same number, at the target ε, on the eval data
    name = BOX.describe()
    assert res.final["verified_error"][name] == pytest.approx(v_cert)
    assert res.final["eps_fraction"] == pytest.approx(1.0) and res.final["kappa"] == pytest.approx(0.0)
    assert res.history[0]["eps_fraction"] == 0.0 and len(res.history) == 12


def test_verified_samples_have_no_counterexample(trained):
    """Soundness of the reported number: sample the boxes of the verified samples."""
    _, _, zt, yt, _, cert, _ = trained
    from auditai.bounds import bound
    from auditai.train import label_rows

    C = label_rows(yt, 3)
    with torch.no_grad():
        lo, _ = bound(cert, BOX.make(zt, EPS), C, "crown-ibp", bound_upper=False)
        ok = (lo > 0).all(1) & (cert(zt).argmax(1) == yt)
        g = torch.Generator().manual_seed(0)
        pts = zt[ok] + EPS * (2 * torch.rand(200, int(ok.sum()), 10, generator=g) - 1)
        pts[:50] = zt[ok] + EPS * torch.sign(pts[:50] - zt[ok])  # vertices
        assert (cert(pts).argmax(-1) == yt[ok]).all()
    assert verified_error(cert, zt, yt, BOX, EPS) == pytest.approx(1 - ok.double().mean().item())


def test_verified_error_is_monotone_in_eps_and_counts_clean_mistakes(trained):
    _, _, zt, yt, std, _, _ = trained
    errs = verified_error(std, zt, yt, BOX, [0.0, 0.1, 0.3, 0.6])
    assert errs == sorted(errs)
    wrong = (yt + 1) % 3
    assert verified_error(std, zt, wrong, BOX, 0.0) == pytest.approx(1.0)


def test_several_sets_at_once_and_determinism():
    z, y = clusters(200)
    sets = {"e0": Dims([0]), "tilt": Direction(torch.ones(10), "tilt")}
    runs = []
    for _ in range(2):
        h = mlp()
        r = fit(h, z, y, sets, {"e0": 0.6, "tilt": 0.3}, epochs=4, warmup=1, lr=5e-3,
                batch_size=50, seed=3, progress=False, log=None)
        runs.append((h, r))
    assert set(runs[0][1].final["verified_error"]) == {"e0", "tilt"}
    assert torch.equal(runs[0][0][0].weight, runs[1][0][0].weight)
    assert runs[0][1].history[-1]["loss"] == runs[1][1].history[-1]["loss"]


def test_checkpoint_and_resume(tmp_path):
    z, y = clusters(200)
    kw = dict(epochs=4, warmup=1, lr=5e-3, batch_size=50, progress=False)
    lines = []
    h1 = mlp()
    r1 = fit(h1, z, y, BOX, 0.3, log=lines.append, checkpoint=tmp_path / "full.pt", **kw)
    assert len(lines) == 4 and "verified err" in lines[-1] and "epoch 4/4" in lines[-1]
    assert r1.checkpoint == str(tmp_path / "full.pt")
    assert torch.load(tmp_path / "full.pt", weights_only=True)["epoch"] == 4

    class Interrupt(Exception):
        pass

    def stop_at_3(line):
        if line.startswith("epoch 3/"):
            raise Interrupt

    ck = tmp_path / "ck.pt"
    with pytest.raises(Interrupt):
        fit(mlp(), z, y, BOX, 0.3, log=stop_at_3, checkpoint=ck, **kw)
    assert torch.load(ck, weights_only=True)["epoch"] == 2
    h2 = mlp()
    r2 = fit(h2, z, y, BOX, 0.3, log=None, checkpoint=ck, resume=True, **kw)
    assert torch.equal(h2[0].weight, h1[0].weight)  # same as the uninterrupted run
    assert [h["epoch"] for h in r2.history] == [1, 2, 3, 4]
    assert r2.history[1]["loss"] == pytest.approx(r1.history[1]["loss"])


def test_encoder_fine_tuning_with_a_generative_loss():
    torch.manual_seed(0)
    z, y = clusters(120, d=4)
    x = torch.cat([z, 0.1 * torch.randn(120, 4)], 1)  # 8 features
    enc, dec = nn.Linear(8, 4), nn.Linear(4, 8)
    head = mlp(d=4)
    w_enc, w_dec = enc.weight.clone(), dec.weight.clone()
    gen = nn.Sequential(enc, dec)
    res = fit(head, None, y, Dims(range(4)), 0.2, epochs=3, warmup=1, lr=5e-3, batch_size=40,
              encoder=enc, x=x, gen_loss=lambda xb: F.mse_loss(gen(xb), xb), gen_module=gen,
              delta=0.5, progress=False, log=None)
    assert not torch.equal(enc.weight, w_enc) and not torch.equal(dec.weight, w_dec)
    assert math.isfinite(res.final["verified_error"][Dims(range(4)).describe()])
    with pytest.raises(ValueError, match="gen_loss"):
        fit(head, None, y, Dims([0]), 0.2, epochs=2, warmup=0, encoder=enc, x=x, delta=1.0, log=None)


def test_encoder_fine_tuning_with_the_demo_vae_elbo():
    vae_mod = pytest.importorskip("auditai.demo.vae")
    torch.manual_seed(0)
    vae = vae_mod.ConvVAE(latent_dim=4, channels=4, hidden=16)
    x = torch.rand(24, 1, 32, 32)
    y = torch.arange(24) % 3
    enc = vae.encoder
    before = vae.mu.weight.clone()
    res = fit(mlp(d=4), None, y, Dims([0, 1]), 0.1, epochs=2, warmup=1, lr=1e-3, batch_size=12,
              encoder=enc, x=x, gen_loss=lambda xb: vae_mod.elbo_loss(vae, xb), gen_module=vae,
              delta=1e-3, progress=False, log=None)
    assert not torch.equal(vae.mu.weight, before)  # the encoder's mean layer was trained
    assert len(res.history) == 2


def conv_net(seed=0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        enc = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64, 4))
        head = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    return enc, head


def bars(n=160, seed=0):
    """8×8 images: a bright vertical (class 0) or horizontal (class 1) bar, noisy."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = 0.1 * torch.rand(n, 1, 8, 8, generator=g)
    pos = torch.randint(2, 6, (n,), generator=g)
    for i in range(n):  # test data construction only
        if y[i] == 0:
            x[i, 0, :, pos[i]] += 0.8
        else:
            x[i, 0, pos[i], :] += 0.8
    return x, y


def test_pixel_baseline_trains_and_lowers_pixel_verified_error():
    x, y = bars()
    xt, yt = bars(200, seed=5)
    eps, epochs = 0.1, 24
    enc0, head0 = conv_net()
    standard_training(nn.Sequential(enc0, head0), x, y, epochs=epochs, batch_size=40)
    enc1, head1 = conv_net()
    res = fit_pixel(enc1, head1, x, y, eps, epochs=epochs, warmup=1, lr=5e-3, batch_size=40,
                    eval_data=(xt, yt), progress=False, log=None)
    v0 = pixel_verified_error(nn.Sequential(enc0, head0), xt, yt, eps)
    v1 = pixel_verified_error(nn.Sequential(enc1, head1), xt, yt, eps)
    assert res.final["verified_error"]["pixel"] == pytest.approx(v1)
    assert v0 > 0.5 and v1 < v0 - 0.4, (v0, v1)
    assert pixel_verified_error(nn.Sequential(enc1, head1), xt, yt, 0.0) < 0.05


def test_latent_box_of_pixel_ball_is_sound_and_relative_radius():
    x, _ = bars(20)
    enc, _ = conv_net()
    lo, up = latent_box_of_pixel_ball(enc, x, 0.03)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _ in range(20):
            xp = x + 0.03 * torch.sign(torch.rand(x.shape, generator=g) - 0.5)
            zp = enc(xp)
            assert (zp >= lo - 1e-5).all() and (zp <= up + 1e-5).all()
    z0 = enc(x).detach()
    # a scalar half-width ε on k coordinates: ε·√k / RMS-norm of the codes
    r = relative_radius(0.5, z0, dims=[0, 1])
    assert r == pytest.approx(0.5 * math.sqrt(2) / z0[:, :2].pow(2).sum(1).mean().sqrt().item())
    h = (up - lo) / 2
    assert relative_radius(h, z0) == pytest.approx(
        h.pow(2).sum(1).mean().sqrt().item() / z0.pow(2).sum(1).mean().sqrt().item())
    assert relative_radius(torch.full_like(z0, 0.5), z0, [0, 1]) == pytest.approx(r)


def test_radius_at_error():
    grid, errs = [0.1, 0.2, 0.4, 0.8], [0.05, 0.2, 0.6, 0.9]
    assert radius_at_error(grid, errs, 0.4) == pytest.approx(0.3)
    assert radius_at_error(grid, errs, 0.2) == pytest.approx(0.2)
    assert radius_at_error(grid, errs, 0.01) is None
    assert radius_at_error(grid, errs, 0.95) == 0.8
    # non-monotone noise is flattened by the running maximum
    assert radius_at_error([0.1, 0.2, 0.3], [0.5, 0.4, 0.7], 0.6) == pytest.approx(0.25)
    # interpolate another quantity at the same point of the curve
    assert radius_at_error(grid, errs, 0.4, values=[1, 2, 3, 4]) == pytest.approx(2.5)
