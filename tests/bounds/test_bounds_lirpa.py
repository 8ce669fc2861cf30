"""Cross-check against auto_LiRPA 0.7.1, the paper's library (issue 2, item 4).

The auto_LiRPA side is built here independently of our adapter: a BoundedModule on the head
itself, with a PerturbationLpNorm on z (an ℓ∞ box given as x_L/x_U on some dims, or an ℓ2 ball
of radius ε around z0 on all dims). With a margin matrix C, in float64:
- IBP and CROWN-IBP must agree to 1e-9 relative (same definitions, same arithmetic);
- CROWN's machinery is checked exactly: given auto_LiRPA's own intermediate intervals, our
  backward pass reproduces its CROWN bounds to 1e-9;
- our CROWN should never be looser on any bound: auto_LiRPA keeps IBP intervals on neurons IBP
  finds stable and CROWN ones elsewhere; ours also intersects each CROWN interval with the IBP
  one computed from the tightened layer before. That is sound, but with CROWN's adaptive lower
  slope (1 if u > −l else 0) a tighter interval can flip a slope, and the final pass from
  tighter intermediate bounds is then not guaranteed tighter: "never looser" is an empirical
  property, not a theorem. head4 with the ℓ2 ball is a known counterexample, kept as a strict
  xfail: one margin row's upper bound is 0.21 looser (3.62 vs 3.41) because our tighter
  layer-1 interval flips one slope and two layer-2 intervals come out wider. With a fixed
  lower slope CROWN is monotone in the intermediate intervals; that is tested in
  test_bounds_exact.py's relations where it holds.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from auditai.bounds import bound
from auditai.bounds.lirpa import auto_lirpa_available
from auditai.latent import LatentSet

from .helpers import margin_C, random_mlp

_OK, _WHY = auto_lirpa_available()
pytestmark = [
    pytest.mark.auto_lirpa,
    pytest.mark.skipif(not _OK, reason=f"auto_LiRPA cross-check skipped: {_WHY}"),
]

_NAMES = {"ibp": "IBP", "crown-ibp": "CROWN-IBP", "crown": "CROWN"}

# (seed, d, hidden widths, outputs)
HEADS = [(1, 6, [10, 8], 4), (2, 8, [16, 16, 12], 5), (3, 4, [12], 3), (4, 5, [8, 8, 8], 4)]


def _lirpa_module(head, z0, ptb_kind, eps, dims):
    """auto_LiRPA's BoundedModule on the head and its input, perturbed on z directly."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from auto_LiRPA import BoundedModule, BoundedTensor
        from auto_LiRPA.perturbations import PerturbationLpNorm

        if ptb_kind == "box":
            half = torch.zeros_like(z0)
            half[:, dims] = eps
            ptb = PerturbationLpNorm(norm=math.inf, x_L=z0 - half, x_U=z0 + half)
        else:
            ptb = PerturbationLpNorm(norm=2, eps=eps)
        bm = BoundedModule(head, torch.zeros_like(z0), device="cpu", verbose=0)
    return bm, BoundedTensor(z0, ptb)


def _lirpa_bounds(head, z0, ptb_kind, eps, dims, C, method):
    """auto_LiRPA's bounds of C·head(z)."""
    bm, x = _lirpa_module(head, z0, ptb_kind, eps, dims)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lo, up = bm.compute_bounds(x=(x,), C=C, method=_NAMES[method])
    return lo.detach(), up.detach()


def _case(seed, d, widths, out, ptb_kind):
    gen = torch.Generator().manual_seed(50 + seed)
    head = random_mlp(seed, d, widths, out, ["relu"], weight_scale=1.5)
    n = 4
    z0 = torch.randn(n, d, generator=gen, dtype=torch.float64)
    C = margin_C(torch.randint(0, out, (n,), generator=gen), out)
    if ptb_kind == "box":
        dims = torch.randperm(d, generator=gen)[: max(1, d // 2)].tolist()
        eps = 0.3
        s = LatentSet.from_dims(z0, dims, eps, "inf")
    else:
        dims = list(range(d))
        eps = 0.5
        s = LatentSet.from_basis(z0, torch.eye(d, dtype=torch.float64), eps, "2")
    return head, z0, C, s, eps, dims


def _close(a, b, rtol):
    return (a - b).abs() <= rtol * (1.0 + b.abs())


@pytest.mark.parametrize("ptb_kind", ["box", "l2"])
@pytest.mark.parametrize("case", HEADS, ids=[f"head{c[0]}" for c in HEADS])
def test_ibp_and_crown_ibp_equal_auto_lirpa(case, ptb_kind):
    head, z0, C, s, eps, dims = _case(*case, ptb_kind)
    for method in ("ibp", "crown-ibp"):
        lo_ref, up_ref = _lirpa_bounds(head, z0, ptb_kind, eps, dims, C, method)
        lo, up = bound(head, s, C, method=method)
        assert _close(lo, lo_ref, 1e-9).all(), f"{method} lower differs: max {(lo - lo_ref).abs().max():.3g}"
        assert _close(up, up_ref, 1e-9).all(), f"{method} upper differs: max {(up - up_ref).abs().max():.3g}"


@pytest.mark.parametrize("ptb_kind", ["box", "l2"])
@pytest.mark.parametrize("case", HEADS, ids=[f"head{c[0]}" for c in HEADS])
def test_crown_pass_reproduces_auto_lirpa_from_its_intermediate_bounds(case, ptb_kind):
    """Feed auto_LiRPA's intermediate intervals to our backward pass: same CROWN bounds."""
    from auditai.bounds.crown import Relaxations, backward_lower
    from auditai.bounds.engine import prepare
    from auditai.bounds.ops import Activation, to_ops

    head, z0, C, s, eps, dims = _case(*case, ptb_kind)
    bm, x = _lirpa_module(head, z0, ptb_kind, eps, dims)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lo_ref, up_ref = bm.compute_bounds(x=(x,), C=C, method="CROWN")
        theirs = [(r.inputs[0].lower.detach(), r.inputs[0].upper.detach()) for r in bm.relus]
    ops, in_shape = prepare(to_ops(head, (z0.shape[1],)), s.z0, s.basis)
    acts = [i for i, op in enumerate(ops) if isinstance(op, Activation)]
    assert len(acts) == len(theirs)
    pre = [None] * len(ops)
    for i, lu in zip(acts, theirs):
        pre[i] = lu
    A = torch.cat([C, -C], dim=1)
    low = backward_lower(ops, A, Relaxations(ops, pre), s.eps, s.p, len(in_shape))
    m = C.shape[1]
    assert _close(low[:, :m], lo_ref.detach(), 1e-9).all()
    assert _close(-low[:, m:], up_ref.detach(), 1e-9).all()


_FLIP = "adaptive-slope flip: tighter layer-1 intervals make CROWN looser here (see module doc)"


@pytest.mark.parametrize("ptb_kind", ["box", "l2"])
@pytest.mark.parametrize("case", HEADS, ids=[f"head{c[0]}" for c in HEADS])
def test_crown_never_looser_than_auto_lirpa(case, ptb_kind, request):
    if case[0] == 4 and ptb_kind == "l2":
        request.applymarker(pytest.mark.xfail(strict=True, reason=_FLIP))
    head, z0, C, s, eps, dims = _case(*case, ptb_kind)
    lo_ref, up_ref = _lirpa_bounds(head, z0, ptb_kind, eps, dims, C, "crown")
    lo, up = bound(head, s, C, method="crown")
    tol = 1e-9 * (1.0 + lo_ref.abs())
    assert (lo >= lo_ref - tol).all(), f"our CROWN lower is looser than auto_LiRPA's by {(lo_ref - lo).max():.3g}"
    tol = 1e-9 * (1.0 + up_ref.abs())
    assert (up <= up_ref + tol).all(), f"our CROWN upper is looser than auto_LiRPA's by {(up - up_ref).max():.3g}"


@pytest.mark.parametrize("method", ["ibp", "crown-ibp", "crown"])
def test_engine_auto_lirpa_adapter_agrees(method):
    """`bound(..., engine="auto_lirpa")` returns auto_LiRPA's own numbers (built independently
    here), for a box on some dims, an ℓ2 ball, and a non-axis basis (the adapter's wrapper)."""
    seed, d, widths, out = HEADS[0]
    for ptb_kind in ("box", "l2"):
        head, z0, C, s, eps, dims = _case(seed, d, widths, out, ptb_kind)
        lo_ref, up_ref = _lirpa_bounds(head, z0, ptb_kind, eps, dims, C, method)
        lo, up = bound(head, s, C, method=method, engine="auto_lirpa")
        torch.testing.assert_close(lo, lo_ref, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(up, up_ref, rtol=1e-9, atol=1e-9)
    # a general basis: the adapter folds z0 + Bδ into the head's first Linear, as our engine
    # does, so IBP and CROWN-IBP agree exactly; every method's bounds are sound at sampled points.
    gen = torch.Generator().manual_seed(9)
    B = torch.randn(d, 2, generator=gen, dtype=torch.float64)
    s = LatentSet.from_basis(z0, B, 0.2, "inf")
    lo_a, up_a = bound(head, s, C, method=method, engine="auto_lirpa")
    with torch.no_grad():
        y = head(s.points(s.sample(256, torch.Generator().manual_seed(1))))
        vals = torch.einsum("nmo,sno->snm", C, y)
    tol = 1e-9 * (1 + lo_a.abs().max() + up_a.abs().max())
    assert (vals.amin(0) >= lo_a - tol).all() and (vals.amax(0) <= up_a + tol).all()
    if method != "crown":
        lo, up = bound(head, s, C, method=method)
        assert _close(lo, lo_a, 1e-9).all() and _close(up, up_a, 1e-9).all()
