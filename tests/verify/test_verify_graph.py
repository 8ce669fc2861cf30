"""verify() on graph heads (issue 11, item 4): residual adds, concatenation, max pooling, clamps.

The complete check walks every linear piece of a piecewise-linear graph along one direction
(ExactLine on graphs) and must agree with dense sampling; the incomplete methods must never
verify a sample that dense sampling falsifies."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from auditai.bounds.exactline import is_piecewise_linear
from auditai.latent import Basis, Direction
from auditai.verify import verify

DT = torch.float64


class PiecewiseGraph(nn.Module):
    """Residual block, LeakyReLU, max pooling over a view, clamp and concatenation."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.o = nn.Linear(4, 16), nn.Linear(16, 16), nn.Linear(8 + 16 + 16, 3)

    def forward(self, z):
        h = F.relu(self.a(z))
        r = h + F.leaky_relu(self.b(h), 0.1)
        p = F.max_pool1d(r.view(-1, 2, 8), 2).flatten(1)
        return self.o(torch.cat([p, torch.clamp(r, -0.5, 0.7), h], 1))


class SmoothGraph(PiecewiseGraph):
    def forward(self, z):
        h = torch.tanh(self.a(z))
        return self.o(torch.cat([F.avg_pool1d(h.view(-1, 2, 8), 2).flatten(1), h + F.gelu(self.b(h)), h], 1))


def _setup(cls=PiecewiseGraph, n=60, seed=0):
    torch.manual_seed(seed)
    h = cls().to(DT)
    with torch.no_grad():
        h.a.weight.mul_(4)
        h.o.weight.mul_(3)
    g = torch.Generator().manual_seed(seed + 1)
    z0 = torch.randn(n, 4, generator=g, dtype=DT)
    y = h(z0).argmax(1).detach()
    v = torch.randn(4, generator=g, dtype=DT)
    return h, z0, y, v


def _dense_error(h, z0, y, v, eps, T=40001):
    vn = v / v.norm()
    ts = torch.linspace(-max(eps), max(eps), T, dtype=DT)
    with torch.no_grad():
        out = h((z0[None] + ts[:, None, None] * vn).reshape(-1, z0.shape[1])).reshape(T, z0.shape[0], -1)
    idx = y.view(1, -1, 1).expand(T, -1, 1)
    marg = out.gather(2, idx)[..., 0] - out.scatter(2, idx, -math.inf).amax(2)
    return [(marg[ts.abs() <= e].amin(0) <= 0) for e in eps]


EPS = [0.5, 2.0, 5.0]


def test_the_graph_is_piecewise_linear_and_the_smooth_one_is_not():
    assert is_piecewise_linear(PiecewiseGraph().to(DT), (4,))
    assert not is_piecewise_linear(SmoothGraph().to(DT), (4,))


def test_complete_on_a_piecewise_linear_graph_agrees_with_dense_sampling():
    h, z0, y, v = _setup()
    r = verify(h, z0, y, Direction(v), EPS, method="complete")
    dense = _dense_error(h, z0, y, v, EPS)
    for e, bad in enumerate(dense):
        assert abs(r.verified_error[e] - float(bad.double().mean())) < 1e-12
        assert abs(r.falsified_fraction[e] - r.verified_error[e]) < 1e-12  # nothing left unknown
    assert 0 < r.verified_error[-1] < 1, "the set must hold both kinds of samples"


@pytest.mark.parametrize("cls", [PiecewiseGraph, SmoothGraph])
@pytest.mark.parametrize("method", ["ibp", "crown-ibp", "crown"])
def test_incomplete_methods_never_verify_what_dense_sampling_falsifies(cls, method):
    h, z0, y, v = _setup(cls)
    r = verify(h, z0, y, Direction(v), EPS, method=method)
    dense = _dense_error(h, z0, y, v, EPS)
    for e, bad in enumerate(dense):
        assert r.verified_error[e] >= float(bad.double().mean()) - 1e-12
        assert r.falsified_fraction[e] <= float(bad.double().mean()) + 1e-12


def test_complete_splits_a_graph_over_two_directions_soundly():
    h, z0, y, v = _setup(n=20)
    B = torch.stack([v / v.norm(), torch.tensor([0.0, 1, 0, 0], dtype=DT)], 1)
    r = verify(h, z0, y, Basis(B), [0.5, 2.0], method="complete")
    g = torch.Generator().manual_seed(3)
    d = (torch.rand(400, 2, generator=g, dtype=DT) * 2 - 1)
    for e, eps in enumerate([0.5, 2.0]):
        with torch.no_grad():
            out = h((z0[:, None] + (d * eps) @ B.T).reshape(-1, 4)).reshape(20, 400, 3)
        wrong = (out.argmax(2) != y[:, None]).any(1)
        assert r.verified_error[e] >= float(wrong.double().mean()) - 1e-12
