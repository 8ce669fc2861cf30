"""certified_loss: plain cross-entropy at ε = 0, an upper bound of it at ε > 0, gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from auditai.latent import Basis, Dims, Direction
from auditai.train import certified_loss, label_rows, margin_cross_entropy, pixel_certified_loss

from .problems import clusters, mlp

METHODS = ["ibp", "crown-ibp", "crown"]
SETS = {
    "dims": Dims(range(10)),
    "dim3": Dims([3]),
    "direction": Direction(torch.linspace(-1, 1, 10), "tilt"),
    "basis2": Basis(torch.eye(10)[:, :2] + 0.1, "2"),
}


@pytest.mark.parametrize("method", METHODS)
def test_loss_is_cross_entropy_at_eps_zero(method):
    z, y = clusters(64)
    head = mlp()
    ce = F.cross_entropy(head(z), y)
    for kind in SETS.values():
        got = certified_loss(head, z, y, kind, 0.0, method, kappa=0.0)
        assert torch.allclose(got, ce, atol=1e-5), (kind, got, ce)
    # several sets at once, mean and sum
    got = certified_loss(head, z, y, SETS, 0.0, method)
    assert torch.allclose(got, ce, atol=1e-5)
    got = certified_loss(head, z, y, SETS, 0.0, method, reduction="sum")
    assert torch.allclose(got, 4 * ce, atol=1e-4)


def test_margin_cross_entropy_matches_logits():
    out = torch.randn(7, 4)
    y = torch.randint(0, 4, (7,))
    C = label_rows(y, 4)
    margins = torch.einsum("nmo,no->nm", C, out)
    assert torch.allclose(margin_cross_entropy(margins), F.cross_entropy(out, y), atol=1e-6)
    # row j of C is e_y − e_j, j skipping y in increasing order
    assert torch.equal(C[0, :, y[0]], torch.ones(3))
    assert (C.sum(-1) == 0).all()


@pytest.mark.parametrize("method", METHODS)
def test_robust_loss_bounds_natural_and_grows_with_eps(method):
    z, y = clusters(64)
    head = mlp()
    ce = F.cross_entropy(head(z), y).item()
    losses = [certified_loss(head, z, y, SETS["dims"], e, method).item() for e in (0.05, 0.2, 0.5)]
    assert losses[0] >= ce - 1e-6
    assert losses[0] < losses[1] < losses[2]


def test_kappa_mixes_natural_and_robust():
    z, y = clusters(64)
    head = mlp()
    nat = F.cross_entropy(head(z), y)
    rob = certified_loss(head, z, y, SETS["dims"], 0.3, kappa=0.0)
    assert torch.allclose(certified_loss(head, z, y, SETS["dims"], 0.3, kappa=1.0), nat)
    mid = certified_loss(head, z, y, SETS["dims"], 0.3, kappa=0.25)
    assert torch.allclose(mid, 0.25 * nat + 0.75 * rob, atol=1e-6)


def test_beta_mix_between_crown_ibp_and_ibp():
    z, y = clusters(64)
    head = mlp()
    s = SETS["dims"]
    ci = certified_loss(head, z, y, s, 0.3, "crown-ibp", beta=1.0)
    ibp = certified_loss(head, z, y, s, 0.3, "ibp")
    assert torch.allclose(certified_loss(head, z, y, s, 0.3, "crown-ibp", beta=0.0), ibp)
    half = certified_loss(head, z, y, s, 0.3, "crown-ibp", beta=0.5).item()
    assert not math.isclose(ci.item(), ibp.item(), rel_tol=1e-3)
    # CE is convex in the logits: the mixed bound's loss lies below the mix of the losses
    assert half <= 0.5 * ci.item() + 0.5 * ibp.item() + 1e-6
    assert min(ci.item(), ibp.item()) - 1e-6 <= half


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("set_name", ["dims", "direction", "basis2"])
def test_gradients_finite_and_nonzero(method, set_name):
    z, y = clusters(64)
    head = mlp()
    loss = certified_loss(head, z, y, SETS[set_name], 0.4, method)
    loss.backward()
    for name, p in head.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_gradients_reach_the_encoder_through_the_codes():
    x = torch.randn(32, 6)
    y = torch.randint(0, 3, (32,))
    enc = nn.Linear(6, 10)
    head = mlp()
    certified_loss(head, enc(x), y, SETS["dims"], 0.2, "crown-ibp").backward()
    assert torch.isfinite(enc.weight.grad).all() and enc.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("method", METHODS)
def test_pixel_loss_through_a_conv_encoder(method):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                        nn.Linear(3 * 4 * 4, 4), nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
    x = torch.rand(8, 1, 8, 8)
    y = torch.randint(0, 3, (8,))
    assert torch.allclose(pixel_certified_loss(net, x, y, 0.0, "inf", method), F.cross_entropy(net(x), y), atol=1e-5)
    loss = pixel_certified_loss(net, x, y, 0.02, "inf", method)
    assert loss.item() > F.cross_entropy(net(x), y).item()
    loss.backward()
    assert torch.isfinite(net[0].weight.grad).all() and net[0].weight.grad.abs().sum() > 0


def test_bad_inputs_are_named():
    z, y = clusters(16)
    head = mlp()
    with pytest.raises(ValueError, match="eps has 2 values for 1"):
        certified_loss(head, z, y, [SETS["dims"]], [0.1, 0.2])
    with pytest.raises(ValueError, match="labels out of range"):
        certified_loss(head, z, y + 5, SETS["dims"], 0.1)
    with pytest.raises(TypeError, match="Dims, Direction or Basis"):
        certified_loss(head, z, y, {"x": "pose"}, 0.1)
    with pytest.raises(ValueError, match="no value for set"):
        certified_loss(head, z, y, {"a": SETS["dims"]}, {"b": 0.1})
    with pytest.raises(ValueError, match="kappa"):
        certified_loss(head, z, y, SETS["dims"], 0.1, kappa=1.5)
    with pytest.raises(ValueError, match="z of N×d"):
        certified_loss(head, z, y[:5], SETS["dims"], 0.1)
