"""The fast paths of verify(): float32 PGD with float64 confirmation, the ordered bound pass and
falsify-first for CROWN give the verdicts of the plain definitions."""

import copy
import math

import pytest
import torch
from torch import nn

from auditai.attack import check_points, head64, pgd
from auditai.bounds import bound
from auditai.bounds.exactline import layer_ops
from auditai.bounds.split import bound_tolerance
from auditai.latent import Direction, LatentSet
from auditai.spec import make_spec
from auditai.verify import verify

from _verify_helpers import small_head

DT = torch.float64


def test_pgd_counts_only_float64_confirmed_points():
    # logits (1 + 1e-9·s, 1) for s = the input: float32 rounds both to 1.0 (margin 0 ≤ 0 is a
    # float32 "violation" everywhere), float64 sees margin 1e-9·s > 0 for s > 0
    h = nn.Sequential(nn.Linear(1, 2)).to(DT)
    with torch.no_grad():
        h[0].weight.copy_(torch.tensor([[1e-9], [0.0]], dtype=DT))
        h[0].bias.copy_(torch.tensor([1.0, 1.0], dtype=DT))
    z0 = torch.tensor([[1.0], [2.0], [0.05]], dtype=DT)
    s = LatentSet.from_direction(z0, torch.ones(1, dtype=DT), torch.tensor([0.5, 0.5, 0.1], dtype=DT))
    C = torch.tensor([[[1.0, -1.0]]], dtype=DT).expand(3, 1, 2)
    d = torch.zeros(3, 1, dtype=DT)
    with torch.no_grad():
        out32 = copy.deepcopy(h).float()(z0.float())
    assert (out32[:, 0] - out32[:, 1] <= 0).all()  # the float32 search sees violations everywhere
    res = pgd(h, s, C, d, steps=5, restarts=2, generator=torch.Generator().manual_seed(0))
    # rows 1, 2: margin 1e-9·(z0 + t) ≥ 0.5e-9 on the whole set, so nothing may count
    assert not res.found[:2].any()
    assert (res.margin[:2] > 0).all()
    # row 3: z0 = 0.05, ε = 0.1 contains t < −0.05 with a real (float64) violation
    assert res.found[2] and res.margin[2] <= 0 and res.delta[2].abs().max() <= 0.1
    mm, _, _ = check_points(head64(h), s, res.delta, C, d)
    assert mm[2] <= 0 and torch.equal(mm <= 0, res.found)


@pytest.mark.parametrize("method", ["ibp", "crown-ibp", "crown"])
def test_ordered_bound_pass_equals_bounding_every_cell(method):
    h = small_head(d=4, width=16, out=3, seed=5)
    g = torch.Generator().manual_seed(11)
    z0 = torch.randn(60, 4, generator=g, dtype=DT)
    y = h(z0).argmax(1).detach()
    y[:5] = (y[:5] + 1) % 3
    v = torch.randn(4, generator=g, dtype=DT)
    eps = [0.05, 0.2, 0.2, 0.6, 1.2]
    r = verify(h, z0, y, Direction(v), eps, method=method, attack=False, radius=False)
    # reference: every cell bounded, then "verified at ε ⇒ verified at every smaller ε"
    sp = make_spec("label", h(z0).detach(), y)
    ops = layer_ops(h)
    colsum = (v / v.norm()).abs()
    cert = []
    for e in eps:
        s = Direction(v).make(z0, e)
        lo, _ = bound(h, s, sp.C, method=method, bound_upper=False)
        tol = bound_tolerance(ops, z0.abs() + e * colsum, sp.C, sp.d, DT)
        cert.append((lo + sp.d).min(dim=1).values - tol > 0)
    cert = torch.stack(cert, dim=1)
    et = torch.tensor(eps, dtype=DT)
    vmax = torch.where(cert, et, -1.0).amax(dim=1)
    ref = et[None] <= vmax[:, None]
    clean_bad = sp.margins(h(z0).detach()).min(dim=1).values <= 0
    assert torch.equal(r.verdicts == 1, ref & ~clean_bad[:, None])
    assert (r.verdicts[clean_bad] == -1).all()
    assert ((r.verdicts == 1) | (r.verdicts == 0) | clean_bad[:, None]).all()


def test_crown_falsify_first_keeps_verdicts_sound_and_monotone():
    h = small_head(d=4, width=16, out=3, seed=6)
    g = torch.Generator().manual_seed(12)
    z0 = torch.randn(50, 4, generator=g, dtype=DT)
    y = h(z0).argmax(1).detach()
    v = torch.randn(4, generator=g, dtype=DT)
    eps = [0.1, 0.4, 1.0, 2.5]
    a = verify(h, z0, y, Direction(v), eps, method="crown", radius=False)
    b = verify(h, z0, y, Direction(v), eps, method="crown", radius=False, attack=False)
    assert (a.verdicts == -1).any(), "the test needs some falsified cells"
    # the attack only adds falsified cells; it never removes a bound verdict
    assert torch.equal(a.verdicts == 1, b.verdicts == 1)
    # monotone in ε: verified cells form a prefix, falsified cells a suffix
    V = a.verdicts
    assert (V[:, 1:][V[:, :-1] == -1] == -1).all()
    assert (V[:, :-1][V[:, 1:] == 1] == 1).all()
    for c in a.counterexamples:
        assert c.margin <= 0 and abs(c.delta[0]) <= c.eps * (1 + 1e-12)
    assert not math.isnan(sum(a.verified_error))
