"""α-CROWN against auto_LiRPA 0.7.1's CROWN-Optimized (issue 14, item 2), float64.

The auto_LiRPA side is built here, independently of our adapter: a BoundedModule on the head,
a PerturbationLpNorm on z (an ℓ∞ box on some dims, or an ℓ2 ball), and compute_bounds with
method "CROWN-Optimized" and the same number of iterations (20), learning rate (0.5) and decay.
Our mean lower bound must be at least theirs and our mean upper bound at most theirs, up to a
tolerance of 1e-3 of the mean CROWN width (two optimizers on the same non-convex problem do
not take the same steps; a systematic gap, as from fixed intermediate bounds, is ~10× larger).
Both bounds are also checked against points of the set (the head's values at sampled points).
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from auditai.bounds import bound
from auditai.bounds.lirpa import auto_lirpa_available
from auditai.latent import LatentSet, sample_ball

from .helpers import margin_C, random_mlp

_OK, _WHY = auto_lirpa_available()
pytestmark = [
    pytest.mark.auto_lirpa,
    pytest.mark.skipif(not _OK, reason=f"auto_LiRPA cross-check skipped: {_WHY}"),
]

ITER = 20


class _Res(nn.Module):
    def __init__(self, d: int, w: int, out: int) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(d, w), nn.Linear(w, w), nn.Linear(w, out)

    def forward(self, z):
        h = F.relu(self.a(z))
        return self.c(F.relu(h + self.b(h)))


def _head(seed, d, widths, out):
    if widths == "res":
        torch.manual_seed(seed)
        return _Res(d, 16, out).double()
    return random_mlp(seed, d, widths, out, ["relu"], weight_scale=1.5)


HEADS = [(1, 6, [10, 8], 4), (2, 8, [16, 16, 12], 5), (4, 5, [8, 8, 8], 4), (5, 6, "res", 3)]


def _case(seed, d, widths, out, kind):
    gen = torch.Generator().manual_seed(70 + seed)
    head = _head(seed, d, widths, out)
    n = 4
    z0 = torch.randn(n, d, generator=gen, dtype=torch.float64)
    C = margin_C(torch.randint(0, out, (n,), generator=gen), out)
    if kind == "box":
        dims = torch.randperm(d, generator=gen)[: max(2, d // 2)].tolist()
        s = LatentSet.from_dims(z0, dims, 0.4, "inf")
    else:
        dims = list(range(d))
        s = LatentSet.from_basis(z0, torch.eye(d, dtype=torch.float64), 0.6, "2")
    return head, z0, C, s, dims


def _theirs(head, z0, C, s, dims, kind):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from auto_LiRPA import BoundedModule, BoundedTensor
        from auto_LiRPA.perturbations import PerturbationLpNorm

        if kind == "box":
            half = torch.zeros_like(z0)
            half[:, dims] = float(s.eps[0])
            ptb = PerturbationLpNorm(norm=math.inf, x_L=z0 - half, x_U=z0 + half)
        else:
            ptb = PerturbationLpNorm(norm=2, eps=float(s.eps[0]))
        opts = {"optimize_bound_args": {"iteration": ITER, "lr_alpha": 0.5, "lr_decay": 0.98}}
        old = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)  # auto_LiRPA makes its best-bound buffers in it
        try:
            bm = BoundedModule(head, torch.zeros_like(z0), device="cpu", verbose=0, bound_opts=opts)
            lo, up = bm.compute_bounds(x=(BoundedTensor(z0, ptb),), C=C, method="CROWN-Optimized")
        finally:
            torch.set_default_dtype(old)
    return lo.detach(), up.detach()


@pytest.mark.parametrize("kind", ["box", "l2"])
@pytest.mark.parametrize("case", HEADS, ids=[f"head{c[0]}" for c in HEADS])
def test_alpha_crown_at_least_as_tight_as_auto_lirpa(case, kind):
    head, z0, C, s, dims = _case(*case, kind)
    lo_ref, up_ref = _theirs(head, z0, C, s, dims, kind)
    lo, up = bound(head, s, C, method="alpha-crown", alpha_options={"iterations": ITER})
    lo_c, up_c = bound(head, s, C, method="crown")
    tol = 1e-3 * float((up_c - lo_c).detach().mean())
    assert float(lo.mean()) >= float(lo_ref.mean()) - tol, (float(lo.mean()), float(lo_ref.mean()))
    assert float(up.mean()) <= float(up_ref.mean()) + tol, (float(up.mean()), float(up_ref.mean()))
    # both sound at points of the set
    gen = torch.Generator().manual_seed(case[0])
    delta = sample_ball(300, s.n, s.k, s.eps, s.p, gen, torch.float64)
    with torch.no_grad():
        y = head(s.points(delta).reshape(-1, z0.shape[1])).reshape(300, s.n, -1)
        v = torch.einsum("sno,nmo->snm", y, C)
    for a, b in ((lo, up), (lo_ref, up_ref)):
        assert (v >= a - 1e-9).all() and (v <= b + 1e-9).all()
