"""α-CROWN (method "alpha-crown", auditai/bounds/alpha.py): sound for any slopes, never looser
than CROWN.

Containment is checked at sampled and attacked (PGD) points of the set, for the optimized slopes
and for slopes drawn at random inside their valid range (not optimized): any α in [s, 1] must
give a sound bound.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from auditai.bounds import bound, bound_box
from auditai.bounds.alpha import AlphaOptionError, alpha_options
from auditai.errors import AuditaiError
from auditai.latent import LatentSet, sample_ball

from .helpers import assert_inside, make_C, pgd_extremes, random_mlp, sampled_extremes, set_fn

DT = torch.float64


class ResHead(nn.Module):
    """A small residual graph: two ReLU blocks with skip connections and a LeakyReLU."""

    def __init__(self, d: int, w: int, out: int, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.inp = nn.Linear(d, w)
        self.b1 = nn.Linear(w, w)
        self.b2 = nn.Linear(w, w)
        self.out = nn.Linear(2 * w, out)

    def forward(self, z):
        h = F.relu(self.inp(z))
        h = h + F.relu(self.b1(h))
        g = F.leaky_relu(self.b2(h) - h, 0.2)
        return self.out(torch.cat([h, g], dim=1))


def _case(seed: int, kind: str):
    gen = torch.Generator().manual_seed(seed)
    d = 5
    if kind == "chain":
        acts = ["relu", "leaky_relu", "relu"][: 1 + seed % 3]
        head = random_mlp(seed, d, [12] * len(acts), 3, acts, weight_scale=1.5)
    else:
        head = ResHead(d, 8, 3, seed).to(DT)
    n = 3
    z0 = torch.randn(n, d, generator=gen, dtype=DT)
    norm = ["inf", "2", "inf"][seed % 3]
    dims = torch.randperm(d, generator=gen)[:3].tolist()
    s = LatentSet.from_dims(z0, dims, 0.4, norm)
    C = make_C(["shared", "margin", "none"][seed % 3], n, 3, gen)
    return head, s, C


def _found(head, s, C, seed):
    fn = set_fn(head, s, C)
    m = 3 if C is None else C.shape[-2]
    gen = torch.Generator().manual_seed(seed)
    lo_s, hi_s = sampled_extremes(fn, sample_ball(400, s.n, s.k, s.eps, s.p, gen, DT))
    lo_a, hi_a = pgd_extremes(fn, s.n, s.k, s.eps, s.p, m, steps=20, restarts=2, seed=seed)
    return torch.minimum(lo_s, lo_a), torch.maximum(hi_s, hi_a)


CASES = [(seed, kind) for seed in range(4) for kind in ("chain", "residual")]


@pytest.mark.parametrize("seed,kind", CASES)
def test_optimized_bounds_contain_sampled_and_attacked_points(seed, kind):
    head, s, C = _case(seed, kind)
    lo, up = bound(head, s, C, method="alpha-crown")
    lo_f, hi_f = _found(head, s, C, seed)
    assert_inside(lo_f, hi_f, lo, up, 1e-9, f"alpha-crown {kind} seed {seed}")


@pytest.mark.parametrize("seed,kind", CASES)
def test_random_slopes_are_sound(seed, kind):
    head, s, C = _case(seed, kind)
    lo_f, hi_f = _found(head, s, C, seed)
    for r in range(3):  # one evaluation at random α (intermediate bounds included), and a few steps from there
        opts = {"init": "random", "seed": r, "iterations": 1 if r < 2 else 4, "lr": 5.0}
        lo, up = bound(head, s, C, method="alpha-crown", alpha_options=opts)
        assert_inside(lo_f, hi_f, lo, up, 1e-9, f"random α {r}, {kind} seed {seed}")


@pytest.mark.parametrize("seed,kind", CASES)
def test_never_looser_than_crown(seed, kind):
    head, s, C = _case(seed, kind)
    lo_c, up_c = bound(head, s, C, method="crown")
    for opts in (None, {"optimize_intermediate": False}, {"share_rows": True, "iterations": 5}):
        lo, up = bound(head, s, C, method="alpha-crown", alpha_options=opts)
        tol = 1e-10 * (1 + lo_c.abs().max() + up_c.abs().max())
        assert (lo >= lo_c - tol).all() and (up <= up_c + tol).all(), opts
    # and it improves somewhere on these heads (many unstable neurons at this radius)
    lo, up = bound(head, s, C, method="alpha-crown")
    assert float((up - lo).sum()) < float((up_c - lo_c).detach().sum())


def test_under_no_grad_and_lower_only():
    head, s, C = _case(1, "chain")
    full = bound(head, s, C, method="alpha-crown")
    with torch.no_grad():
        lo, up = bound(head, s, C, method="alpha-crown", bound_upper=False)
    assert up is None and torch.allclose(lo, full[0], rtol=0, atol=1e-12)
    assert all(p.grad is None for p in head.parameters())  # only α is differentiated


def test_box_of_a_conv_net():
    torch.manual_seed(4)
    net = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                        nn.Linear(4 * 3 * 3, 3)).to(DT)
    g = torch.Generator().manual_seed(0)
    lo_x = torch.rand(2, 2, 6, 6, generator=g, dtype=DT)
    hi_x = lo_x + 0.3 * torch.rand(2, 2, 6, 6, generator=g, dtype=DT)
    lo, up = bound_box(net, lo_x, hi_x, method="alpha-crown")
    lo_c, up_c = bound_box(net, lo_x, hi_x, method="crown")
    assert (lo >= lo_c - 1e-10).all() and (up <= up_c + 1e-10).all()
    t = torch.rand(2, 500, 2, 6, 6, generator=g, dtype=DT)
    t[:, :100] = t[:, :100].round()
    pts = lo_x.unsqueeze(1) + (hi_x - lo_x).unsqueeze(1) * t
    with torch.no_grad():
        y = net(pts.reshape(-1, 2, 6, 6)).reshape(2, 500, 3)
    assert (y >= lo.unsqueeze(1) - 1e-9).all() and (y <= up.unsqueeze(1) + 1e-9).all()


@pytest.mark.parametrize("opts,word", [({"iters": 3}, "unknown"), ({"iterations": 0}, "iterations"),
                                       ({"lr": -1.0}, "lr"), ({"init": "zero"}, "init"),
                                       ({"early_stop": 0}, "early_stop")])
def test_bad_options_are_refused(opts, word):
    with pytest.raises(AlphaOptionError, match=word) as e:
        alpha_options(opts)
    assert isinstance(e.value, AuditaiError)


def test_stable_head_equals_crown():
    head, s, C = _case(0, "chain")
    s0 = LatentSet(s.z0, s.basis, torch.full_like(s.eps, 1e-6), s.p)  # tiny set: no unstable ReLU
    a = bound(head, s0, C, method="alpha-crown")
    c = bound(head, s0, C, method="crown")
    assert torch.allclose(a[0], c[0], atol=1e-10) and torch.allclose(a[1], c[1], atol=1e-10)
    assert math.isfinite(float(a[0].sum()))



def test_mixed_activations_and_maxpool():
    """ReLU slopes optimized through tanh relaxations, and a MaxPool graph (CROWN's relaxation)."""
    head = random_mlp(2, 5, [12, 12, 12], 3, ["relu", "tanh", "leaky_relu"], weight_scale=1.5)
    z0 = torch.randn(3, 5, generator=torch.Generator().manual_seed(2), dtype=DT)
    s = LatentSet.from_dims(z0, [0, 1, 2], 0.5, "inf")
    lo, up = bound(head, s, None, method="alpha-crown")
    lo_c, up_c = bound(head, s, None, method="crown")
    lo_f, hi_f = _found(head, s, None, 0)
    assert_inside(lo_f, hi_f, lo, up, 1e-9, "relu/tanh/leaky head")
    assert (lo >= lo_c.detach() - 1e-10).all() and (up <= up_c.detach() + 1e-10).all()
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(4 * 3 * 3, 3)).to(DT)
    g = torch.Generator().manual_seed(3)
    lx = torch.rand(2, 2, 6, 6, generator=g, dtype=DT)
    hx = lx + 0.3
    lo, up = bound_box(net, lx, hx, method="alpha-crown")
    lo_c, up_c = bound_box(net, lx, hx, method="crown")
    assert (lo >= lo_c - 1e-10).all() and (up <= up_c + 1e-10).all()
    t = torch.rand(2, 1000, 2, 6, 6, generator=g, dtype=DT)
    t[:, :300] = t[:, :300].round()
    with torch.no_grad():
        y = net((lx.unsqueeze(1) + (hx - lx).unsqueeze(1) * t).reshape(-1, 2, 6, 6)).reshape(2, 1000, 3)
    assert (y >= lo.unsqueeze(1) - 1e-9).all() and (y <= up.unsqueeze(1) + 1e-9).all()
