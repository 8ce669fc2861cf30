"""Exact values: closed forms for affine heads, a two-layer example derived by hand, and the
tightness relations between the methods that hold in theory (each with its reason).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from auditai.bounds import bound
from auditai.latent import LatentSet

from .helpers import ACTIVATIONS, METHODS, hyp, make_C, make_set, pgd_extremes, random_mlp, set_fn

NORMS = ("inf", "2", "1")


def _closed_form(Weff: np.ndarray, beff: np.ndarray, s: LatentSet, C) -> tuple:
    """Extremes of C·(Weff z + beff) over z = z0 + Bδ, ‖δ‖_p ≤ ε, by Hölder's inequality:
    centre C(Weff z0 + beff) ± ε‖(C Weff B)_row‖_q with 1/p + 1/q = 1 (numpy, by hand)."""
    z0, B, eps = s.z0.numpy(), s.basis.numpy(), s.eps.numpy()
    n = z0.shape[0]
    out = Weff.shape[0]
    Cn = np.broadcast_to(np.eye(out), (n, out, out)) if C is None else (
        np.broadcast_to(C.numpy(), (n, *C.shape)) if C.dim() == 2 else C.numpy())
    lo, hi = [], []
    for i in range(n):
        centre = Cn[i] @ (Weff @ z0[i] + beff)
        G = Cn[i] @ Weff @ B
        if s.p == math.inf:
            q = np.abs(G).sum(1)
        elif s.p == 2.0:
            q = np.sqrt((G ** 2).sum(1))
        else:
            q = np.abs(G).max(1)
        lo.append(centre - eps[i] * q)
        hi.append(centre + eps[i] * q)
    return torch.as_tensor(np.array(lo)), torch.as_tensor(np.array(hi))


def _affine_of(head: nn.Module, d: int) -> tuple:
    """(W, b) of an affine head, read off by evaluating it at 0 and the unit vectors."""
    with torch.no_grad():
        pts = torch.cat([torch.zeros(1, d, dtype=torch.float64), torch.eye(d, dtype=torch.float64)])
        y = head(pts).numpy()
    return (y[1:] - y[0]).T, y[0]


@st.composite
def affine_problems(draw, depth_max: int):
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    d = draw(st.integers(1, 6))
    depth = draw(st.integers(0, depth_max))
    layers = []
    prev = d
    for _ in range(depth):
        w = draw(st.integers(1, 7))
        layers.append(nn.Linear(prev, w))
        if draw(st.booleans()):  # BatchNorm (eval), Dropout (eval), Identity are affine too
            bn = nn.BatchNorm1d(w)
            with torch.no_grad():
                bn.running_mean.copy_(torch.randn(w, generator=gen))
                bn.running_var.copy_(torch.rand(w, generator=gen) + 0.3)
                bn.weight.copy_(torch.randn(w, generator=gen))
            layers += [bn, nn.Dropout(0.5), nn.Identity()]
        prev = w
    out = draw(st.integers(1, 4))
    layers.append(nn.Linear(prev, out, bias=draw(st.booleans())))
    head = nn.Sequential(*layers).to(torch.float64).eval()
    n = draw(st.integers(1, 3))
    z0 = torch.randn(n, d, generator=gen, dtype=torch.float64)
    eps = torch.rand(n, generator=gen, dtype=torch.float64) * draw(st.sampled_from([0.0, 0.1, 3.0]))
    s = make_set(draw(st.sampled_from(["dims", "dims_radii", "direction", "basis", "all"])), z0, eps,
                 draw(st.sampled_from(NORMS)), gen)
    C = make_C(draw(st.sampled_from(["none", "shared", "margin"])), n, out, gen)
    return head, s, C, d


@hyp(30)
@given(affine_problems(depth_max=0))
def test_single_linear_is_exact_for_every_method(problem):
    """One Linear layer: every method gives the closed-form extremes (the first affine map
    after the set is bounded exactly by the dual norm; C is folded into it)."""
    head, s, C, _ = problem
    lo, hi = _closed_form(head[0].weight.detach().numpy(),
                          np.zeros(head[0].out_features) if head[0].bias is None else head[0].bias.detach().numpy(),
                          s, C)
    for method in METHODS:
        lower, upper = bound(head, s, C, method=method)
        torch.testing.assert_close(lower, lo, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(upper, hi, rtol=1e-9, atol=1e-9)


@hyp(30)
@given(affine_problems(depth_max=3))
def test_linear_stack_is_exact_for_crown_and_crown_ibp(problem):
    """Linear (+ eval BatchNorm/Dropout/Identity) layers without activation: CROWN's backward
    pass composes the affine maps exactly, so CROWN and CROWN-IBP give the closed form; IBP is
    sound, hence never narrower than it."""
    head, s, C, d = problem
    W, b = _affine_of(head, d)
    lo, hi = _closed_form(W, b, s, C)
    for method in ("crown", "crown-ibp"):
        lower, upper = bound(head, s, C, method=method)
        torch.testing.assert_close(lower, lo, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(upper, hi, rtol=1e-5, atol=1e-5)
    lower, upper = bound(head, s, C, method="ibp")
    tol = 1e-9 * (1 + lo.abs().max() + hi.abs().max())
    assert (lower <= lo + tol).all() and (upper >= hi - tol).all()


@pytest.mark.parametrize("norm", NORMS)
def test_attack_reaches_the_closed_form_on_a_linear_head(norm):
    """The test harness itself: on an affine head the PGD attack must reach the exact extremes,
    otherwise the soundness properties would be testing nothing."""
    gen = torch.Generator().manual_seed(0)
    head = nn.Sequential(nn.Linear(5, 4)).to(torch.float64)
    z0 = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    s = make_set("basis", z0, torch.tensor([0.3, 1.0, 2.0], dtype=torch.float64), norm, gen)
    C = make_C("shared", 3, 4, gen)
    lo, hi = _closed_form(head[0].weight.detach().numpy(), head[0].bias.detach().numpy(), s, C)
    found_lo, found_hi = pgd_extremes(set_fn(head, s, C), 3, s.k, s.eps, s.p, C.shape[0], steps=40, restarts=2)
    scale = 1 + lo.abs().max()
    assert (found_lo - lo).abs().max() <= 1e-3 * scale
    assert (found_hi - hi).abs().max() <= 1e-3 * scale


# ----------------------------------------------------------------------------- by hand
def _hand_head(w2=(1.0, -1.0)) -> nn.Sequential:
    head = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1, bias=False)).to(torch.float64)
    with torch.no_grad():
        head[0].weight.copy_(torch.tensor([[1.0, 1.0], [2.0, -1.0]]))
        head[0].bias.copy_(torch.tensor([1.0, -0.5]))
        head[2].weight.copy_(torch.tensor([list(w2)]))
    return head


def test_two_layer_example_by_hand():
    """y = relu(x1 + x2 + 1) − relu(2·x1 − x2 − 0.5) over the box x ∈ [−1, 1]² (z0 = 0, ε = 1).

    Pre-activations (exact, Hölder on the first layer, the same for every method):
        h1 = x1 + x2 + 1     ∈ [−1, 3]
        h2 = 2x1 − x2 − 0.5  ∈ [−3.5, 2.5]
    IBP: relu(h1) ∈ [0, 3], relu(h2) ∈ [0, 2.5]  ⇒  y ∈ [0 − 2.5, 3 − 0] = [−2.5, 3].
    CROWN (= CROWN-IBP: one hidden layer, identical intermediate bounds). ReLU relaxation on
    [l, u]: upper chord slope u/(u − l), intercept −l·u/(u − l); adaptive lower slope 1 if
    u > −l (chord slope > 1/2) else 0.
        neuron 1: chord 0.75·h1 + 0.75; lower slope 1 (3 > 1): relu(h1) ≥ h1
        neuron 2: chord (5/12)·h2 + 35/24; lower slope 0 (2.5 < 3.5): relu(h2) ≥ 0
      upper: y ≤ 0.75·h1 + 0.75 − 0 = 0.75·x1 + 0.75·x2 + 1.5       → max over box = 3
      lower: y ≥ h1 − (5/12)·h2 − 35/24 = (1/6)·x1 + (17/12)·x2 − 1/4 → min = −1/6 − 17/12 − 1/4 = −11/6
    Exact range (piecewise-linear, checked at the vertices and kinks): min −1.5 at (1, −1)
    (h1 = 1, h2 = 2.5); max 2.75 at (0.75, 1) (h1 = 2.75, h2 = 0).
    With C = [[2], [−1]] the rows are 2y and −y: CROWN [−11/3, 6] and [−3, 11/6]; IBP [−5, 6], [−3, 2.5].
    """
    head = _hand_head()
    s = LatentSet.from_dims(torch.zeros(1, 2, dtype=torch.float64), [0, 1], 1.0, "inf")
    t = lambda *v: torch.tensor([list(v)], dtype=torch.float64)
    lower, upper = bound(head, s, method="ibp")
    torch.testing.assert_close(lower, t(-2.5)), torch.testing.assert_close(upper, t(3.0))
    for method in ("crown-ibp", "crown"):
        lower, upper = bound(head, s, method=method)
        torch.testing.assert_close(lower, t(-11 / 6), rtol=0, atol=1e-7)
        torch.testing.assert_close(upper, t(3.0), rtol=0, atol=1e-7)
    C = torch.tensor([[2.0], [-1.0]], dtype=torch.float64)
    lower, upper = bound(head, s, C, method="crown")
    torch.testing.assert_close(lower, t(-11 / 3, -3.0), rtol=0, atol=1e-7)
    torch.testing.assert_close(upper, t(6.0, 11 / 6), rtol=0, atol=1e-7)
    lower, upper = bound(head, s, C, method="ibp")
    torch.testing.assert_close(lower, t(-5.0, -3.0)), torch.testing.assert_close(upper, t(6.0, 2.5))
    # the exact extremes lie inside, and are attained
    with torch.no_grad():
        assert head(t(1.0, -1.0)).item() == pytest.approx(-1.5)
        assert head(t(0.75, 1.0)).item() == pytest.approx(2.75)


def test_crown_can_be_looser_than_ibp():
    """A non-theorem, pinned: no method is uniformly tighter than IBP with the adaptive slope.

    y = −relu(2x + 1), x ∈ [−1, 1]: h = 2x + 1 ∈ [−1, 3]. IBP: relu(h) ∈ [0, 3] ⇒ y ≤ 0.
    CROWN's upper bound of y needs a lower line of relu(h); adaptive slope 1 (3 > 1):
    relu(h) ≥ h ⇒ y ≤ −h = −2x − 1 ≤ 1. So CROWN's upper bound 1 is looser than IBP's 0 (the
    exact max is 0). This is why no test here asserts CROWN ⊆ IBP or CROWN ⊆ CROWN-IBP.
    """
    head = nn.Sequential(nn.Linear(1, 1), nn.ReLU(), nn.Linear(1, 1, bias=False)).to(torch.float64)
    with torch.no_grad():
        head[0].weight.fill_(2.0), head[0].bias.fill_(1.0), head[2].weight.fill_(-1.0)
    s = LatentSet.from_dims(torch.zeros(1, 1, dtype=torch.float64), [0], 1.0)
    _, u_ibp = bound(head, s, method="ibp")
    assert u_ibp.item() == pytest.approx(0.0, abs=1e-12)
    for method in ("crown", "crown-ibp"):
        _, u = bound(head, s, method=method)
        assert u.item() == pytest.approx(1.0, abs=1e-7)


# ----------------------------------------------------------------------------- relations
@hyp(30)
@given(seed=st.integers(0, 2**31 - 1), norm=st.sampled_from(NORMS),
       kind=st.sampled_from(["dims", "dims_radii", "basis", "direction", "all"]),
       acts=st.lists(st.sampled_from(ACTIVATIONS), min_size=1, max_size=3),
       extras=st.booleans(), shrink=st.floats(0.0, 1.0), shift=st.floats(0.0, 1.0))
def test_ibp_is_inclusion_monotone(seed, norm, kind, acts, extras, shrink, shift):
    """IBP for a set contained in another set is contained in the other's IBP bounds.

    Reason: the first affine map's interval is the exact range (Hölder) of a linear function,
    which is monotone under inclusion of the set; every later IBP step is interval arithmetic
    with monotone functions (affine maps with |W|, ReLU/LeakyReLU/tanh/sigmoid non-decreasing),
    which is inclusion-monotone. The inner set is a ball of radius ε' around z0 + B·t with
    ‖t‖_p + ε' ≤ ε (so it lies inside the outer ball), both concentric (t = 0) and shifted.
    """
    gen = torch.Generator().manual_seed(seed)
    head = random_mlp(seed, 4, [6, 5, 4], 3, acts, extras=extras, weight_scale=1.5)
    z0 = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    outer = make_set(kind, z0, 0.8, norm, gen)
    p = outer.p
    t = torch.randn(3, outer.k, generator=gen, dtype=torch.float64)
    t = t / torch.linalg.vector_norm(t, ord=p, dim=1, keepdim=True) * 0.8 * shift * (1 - shrink)
    inner = LatentSet(outer.z0 + t @ outer.basis.T, outer.basis,
                      outer.eps * shrink * (1 - shift) * 0.999, outer.p)
    C = make_C("margin", 3, 3, gen)
    lo_o, up_o = bound(head, outer, C, method="ibp")
    lo_i, up_i = bound(head, inner, C, method="ibp")
    tol = 1e-10 * (1 + lo_o.abs().max() + up_o.abs().max())
    assert (lo_i >= lo_o - tol).all() and (up_i <= up_o + tol).all()


@hyp(25)
@given(seed=st.integers(0, 2**31 - 1), norm=st.sampled_from(NORMS),
       act=st.sampled_from(ACTIVATIONS), width=st.integers(1, 12),
       c_kind=st.sampled_from(["none", "shared", "margin"]), eps=st.sampled_from([0.1, 1.0, 4.0]))
def test_one_hidden_layer_crown_equals_crown_ibp(seed, norm, act, width, c_kind, eps):
    """With one activation layer, CROWN and CROWN-IBP coincide.

    Reason: both methods need intervals only at that layer's input, the image of the set under
    the first affine map, where IBP (Hölder) and CROWN both give the exact range; the same
    intervals give the same relaxation and the same backward pass to the output.
    """
    gen = torch.Generator().manual_seed(seed)
    head = random_mlp(seed, 5, [width], 3, [act], weight_scale=2.0)
    s = make_set("basis", torch.randn(4, 5, generator=gen, dtype=torch.float64), eps, norm, gen)
    C = make_C(c_kind, 4, 3, gen)
    l1, u1 = bound(head, s, C, method="crown")
    l2, u2 = bound(head, s, C, method="crown-ibp")
    torch.testing.assert_close(l1, l2, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(u1, u2, rtol=1e-10, atol=1e-10)
