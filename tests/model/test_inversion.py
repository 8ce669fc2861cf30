"""GAN inversion (paper §2.3): codes recovered on small generators whose truth is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import auditai
from auditai.data import load_data
from auditai.errors import DataError
from auditai.inversion import encode_inputs, invert
from auditai.model import AuditModel


def linear_generator(d: int = 3, m: int = 12, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    g = nn.Linear(d, m).double()
    return g


def test_linear_generator_recovers_the_least_squares_codes():
    g = linear_generator()
    A, b = g.weight.detach(), g.bias.detach()
    z_true = torch.randn(20, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    # inputs off the generator's range too: the least-squares code is the truth there
    x = g(z_true).detach() + 0.05 * torch.randn(20, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    ls = torch.linalg.lstsq(A, (x - b).T).solution.T
    inv = auditai.invert(g, x, prior=0.0, steps=600, lr=0.1, tol=1e-10, patience=50)
    assert inv.z.shape == (20, 3)
    assert torch.allclose(inv.z, ls, atol=1e-3)
    # the reconstruction error is the least-squares residual
    resid = (A @ ls.T + b[:, None] - x.T).pow(2).mean(0)
    assert torch.allclose(inv.error, resid, rtol=1e-3, atol=1e-8)
    assert inv.restarts == 4 and 1 <= inv.steps <= 600


def test_small_mlp_generator_recovers_its_codes_and_flags_what_it_cannot_make():
    torch.manual_seed(0)
    # injective: full-column-rank linear maps around a LeakyReLU (strictly monotone)
    g = nn.Sequential(nn.Linear(2, 8), nn.LeakyReLU(0.2), nn.Linear(8, 16))
    z_true = torch.randn(16, 2, generator=torch.Generator().manual_seed(3))
    x = g(z_true).detach()
    inv = invert(g, x, prior=0.0, restarts=4, steps=600, lr=0.1, tol=1e-9, patience=50)
    assert torch.allclose(inv.z, z_true, atol=2e-2)
    assert float(inv.relative_error.max()) < 1e-4 and not inv.flagged().any()
    # random inputs are far from the generator's 2-d surface in 16-d: flagged
    noise = torch.randn(6, 16, generator=torch.Generator().manual_seed(4)) * 3
    bad = invert(g, noise, steps=200)
    assert bad.flagged().all()
    s = bad.summary()
    assert s["n_flagged"] == 6 and s["relative_error_max"] > 0.1


def test_results_do_not_depend_on_the_chunk_size():
    g = linear_generator()
    x = torch.randn(10, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    a = invert(g, x, steps=60, batch_size=4)
    b = invert(g, x, steps=60, batch_size=512)
    assert torch.allclose(a.z, b.z, atol=1e-6)


def test_prior_pulls_towards_zero_and_bad_arguments_are_clear():
    g = linear_generator()
    x = g(torch.full((4, 3), 2.0, dtype=torch.float64)).detach()
    free = invert(g, x, prior=0.0, steps=300)
    pulled = invert(g, x, prior=10.0, steps=300)
    assert float(pulled.z.norm()) < float(free.z.norm())
    with pytest.raises(DataError, match="restarts"):
        invert(g, x, restarts=0)
    with pytest.raises(DataError, match="shape"):
        invert(g, torch.zeros(4, 5, dtype=torch.float64))
    with pytest.raises(DataError, match="NaN"):
        invert(g, torch.full((2, 12), float("nan")))
    with pytest.raises(DataError, match="latent_dim"):
        invert(nn.Sequential(nn.Tanh()), torch.zeros(2, 3))


def _decoder_only_model():
    torch.manual_seed(0)
    dec = nn.Sequential(nn.Linear(3, 16), nn.Sigmoid(), nn.Unflatten(1, (1, 4, 4)))
    head = nn.Sequential(nn.Linear(3, 2))
    return AuditModel(head, decoder=dec, metadata={"inversion": {"steps": 300, "lr": 0.1}})


def test_a_model_with_a_decoder_and_no_encoder_encodes_by_inversion():
    model = _decoder_only_model()
    z_true = torch.randn(8, 3, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        x = model.decoder(z_true)
    z = model.encode(x)
    assert z.shape == (8, 3)
    assert float((model.decoder(z) - x).detach().pow(2).mean()) < 1e-4
    _, inv = encode_inputs(model, x)
    assert inv is not None and inv.steps <= 300
    # codes pass through unchanged
    assert torch.equal(model.encode(z_true), z_true)
    data = load_data({"x": x, "y": torch.zeros(8, dtype=torch.long)}, model)
    assert data.z.shape == (8, 3) and data.reconstruction_error is not None
    assert float(data.reconstruction_error.max()) < 0.1


def test_neither_encoder_nor_decoder_is_a_clear_error():
    model = AuditModel(nn.Sequential(nn.Linear(3, 2)))
    x = torch.zeros(4, 1, 4, 4)
    with pytest.raises(DataError, match="neither an encoder nor a decoder"):
        model.encode(x)
    with pytest.raises(DataError, match="no encoder .and no decoder"):
        load_data({"x": x, "y": np.zeros(4, dtype=np.int64)}, model)
    with pytest.raises(DataError, match="unknown key"):
        encode_inputs(AuditModel(nn.Sequential(nn.Linear(3, 2)), decoder=nn.Linear(3, 16),
                                 metadata={"inversion": {"step": 3}}), torch.zeros(2, 16))
