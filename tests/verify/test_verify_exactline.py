"""ExactLine (the complete 1-D check) against dense sampling and an exact MILP oracle."""

import numpy as np
import pytest
import torch
from torch import nn

from auditai.bounds.exactline import exact_line, is_piecewise_linear
from auditai.errors import UnsupportedLayerError
from auditai.spec import make_spec

from _verify_helpers import small_head

DT = torch.float64


def _setup(seed, act=nn.ReLU, n=12, d=4):
    h = small_head(d=d, width=12, out=3, act=act, seed=seed)
    g = torch.Generator().manual_seed(100 + seed)
    z0 = torch.randn(n, d, generator=g, dtype=DT)
    v = torch.randn(d, generator=g, dtype=DT)
    v = v / v.norm()
    y = torch.randint(0, 3, (n,), generator=g)
    s = make_spec("label", h(z0).detach(), y)
    return h, z0, v, s


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("act", [nn.ReLU, lambda: nn.LeakyReLU(0.2)])
def test_min_margin_and_radius_match_dense_sampling(seed, act):
    h, z0, v, s = _setup(seed, act)
    eps = torch.tensor([0.1, 0.4, 1.0], dtype=DT).expand(z0.shape[0], 3)
    r = exact_line(h, z0, v, eps, s.C, s.d, radius_cap=1.5)
    ts = torch.linspace(-1.5, 1.5, 30001, dtype=DT)
    with torch.no_grad():
        M = s.margins(h(z0[None] + ts[:, None, None] * v)).amin(-1)  # T×N
    for e in range(3):
        dense = M[ts.abs() <= eps[0, e]].amin(0)
        assert (r.min_margin[:, e] <= dense + 1e-12).all()  # exact minimum ≤ any sample
        assert (dense - r.min_margin[:, e]).max() < 1e-3  # and reached within the grid step
        # the worst t really attains the minimum
        with torch.no_grad():
            at = s.margins(h(z0 + r.worst_t[:, e:e + 1] * v)).amin(-1)
        assert torch.allclose(at, r.min_margin[:, e], atol=1e-12)
    first = torch.where(M <= 0, ts.abs()[:, None], torch.tensor(9.0, dtype=DT)).amin(0).clamp(max=1.5)
    assert (r.radius <= first + 1e-12).all() and ((first - r.radius) < 2e-4).all()


def test_chunking_does_not_change_results():
    h, z0, v, s = _setup(3)
    eps = torch.tensor([0.3, 0.8], dtype=DT).expand(z0.shape[0], 2)
    a = exact_line(h, z0, v, eps, s.C, s.d, radius_cap=2.0)
    b = exact_line(h, z0, v, eps, s.C, s.d, radius_cap=2.0, chunk=5)
    assert torch.allclose(a.min_margin, b.min_margin, atol=1e-12, rtol=0)
    assert torch.allclose(a.radius, b.radius, atol=1e-12, rtol=0)
    assert torch.equal(a.pieces, b.pieces)


def _milp_min(h: nn.Sequential, z0, v, eps, c, d0):
    """Exact min over |t| ≤ eps of c·h(z0 + t v) + d0 by a big-M MILP (scipy), ReLU heads."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    lins = [m for m in h if isinstance(m, nn.Linear)]
    Ws = [m.weight.detach().numpy() for m in lins]
    bs = [m.bias.detach().numpy() for m in lins]
    # variable layout: t, then per hidden layer: x (pre), y (post), a (binary)
    lo_x, hi_x = z0 - eps * np.abs(v), z0 + eps * np.abs(v)
    names, lb, ub, integ = ["t"], [-eps], [eps], [0]
    A, bl, bu = [], [], []
    nvar = 1
    prev = None  # (index of y block, size)
    blocks = []
    for li, (W, b) in enumerate(zip(Ws[:-1], bs[:-1])):
        k = W.shape[0]
        # interval bounds for big-M (IBP)
        Wp, Wn = np.clip(W, 0, None), np.clip(W, None, 0)
        l = Wp @ lo_x + Wn @ hi_x + b
        u = Wp @ hi_x + Wn @ lo_x + b
        xi, yi, ai = nvar, nvar + k, nvar + 2 * k
        nvar += 3 * k
        lb += list(l) + [0.0] * k + [0] * k
        ub += list(u) + list(np.maximum(u, 0)) + [1] * k
        integ += [0] * (2 * k) + [1] * k
        blocks.append((xi, yi, ai, k, W, b, l, u, prev))
        prev = (yi, k)
        lo_x, hi_x = np.maximum(l, 0), np.maximum(u, 0)
    rows = []
    for xi, yi, ai, k, W, b, l, u, pv in blocks:
        for j in range(k):
            r = np.zeros(nvar)
            r[xi + j] = 1.0
            if pv is None:  # x = W (z0 + t v) + b
                r[0] = -(W[j] @ v)
                rhs = W[j] @ z0 + b[j]
            else:
                r[pv[0]:pv[0] + pv[1]] = -W[j]
                rhs = b[j]
            rows.append((r, rhs, rhs))
            r = np.zeros(nvar); r[yi + j] = 1; r[xi + j] = -1
            rows.append((r, 0.0, np.inf))  # y ≥ x
            r = np.zeros(nvar); r[yi + j] = 1; r[xi + j] = -1; r[ai + j] = -l[j]
            rows.append((r, -np.inf, -l[j]))  # y ≤ x − l(1 − a)
            r = np.zeros(nvar); r[yi + j] = 1; r[ai + j] = -u[j]
            rows.append((r, -np.inf, 0.0))  # y ≤ u a
    obj = np.zeros(nvar)
    yi, k = prev
    obj[yi:yi + k] = c @ Ws[-1]
    const = c @ bs[-1] + d0
    A = np.array([r[0] for r in rows])
    res = milp(obj, constraints=LinearConstraint(A, [r[1] for r in rows], [r[2] for r in rows]),
               integrality=np.array(integ), bounds=Bounds(lb, ub), options={"mip_rel_gap": 1e-12})
    assert res.status == 0, res.message
    return res.fun + const


@pytest.mark.parametrize("seed", [0, 5])
def test_min_margin_equals_milp_oracle(seed):
    h, z0, v, s = _setup(seed, n=6)
    eps = torch.tensor([0.2, 0.7], dtype=DT).expand(6, 2)
    r = exact_line(h, z0, v, eps, s.C, s.d)
    for i in range(6):
        for e in range(2):
            best = min(
                _milp_min(h, z0[i].numpy(), v.numpy(), float(eps[i, e]), s.C[i, row].numpy(), float(s.d[i, row]))
                for row in range(s.m)
            )
            assert abs(best - float(r.min_margin[i, e])) < 1e-6


def test_tanh_head_is_not_piecewise_linear():
    h = small_head(act=nn.Tanh)
    assert not is_piecewise_linear(h)
    z0 = torch.zeros(2, 4, dtype=DT)
    s = make_spec("prediction", h(z0).detach())
    with pytest.raises(UnsupportedLayerError, match="Tanh"):
        exact_line(h, z0, torch.ones(4, dtype=DT), torch.ones(2, dtype=DT), s.C, s.d)


def test_unsupported_layer_is_named():
    h = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2)).double()
    with pytest.raises(UnsupportedLayerError, match=r"LayerNorm at head\[1\]"):
        is_piecewise_linear(h)


def test_a_graph_with_a_smooth_activation_is_not_piecewise_linear():
    h = nn.Sequential(nn.Linear(4, 4), nn.GELU(), nn.Linear(4, 2)).double()
    assert not is_piecewise_linear(h)
