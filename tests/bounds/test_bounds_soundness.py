"""Soundness, property-based: the head's outputs at points of the set lie inside the bounds.

Points come from `LatentSet.sample` (interior, boundary and vertices) and from a projected-
gradient attack in δ-space that drives each spec row to its minimum and maximum (helpers.
pgd_extremes). A bound that excludes any such value is unsound, whatever the method.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from auditai.bounds import bound, bound_ball
from auditai.latent import parse_norm, sample_ball

from .helpers import (
    ACTIVATIONS,
    METHODS,
    assert_inside,
    ball_fn,
    hyp,
    make_C,
    make_set,
    pgd_extremes,
    random_conv_head,
    random_mlp,
    sampled_extremes,
    set_fn,
)

NORMS = ("inf", "2", "1")
SET_KINDS = ("dims", "dims_radii", "direction", "basis", "all")
C_KINDS = ("none", "shared", "margin")
EPS_KINDS = ("zero", "scalar", "per_row")


@st.composite
def problems(draw, dtype=torch.float64):
    """A random head, latent set and spec matrix."""
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    d = draw(st.integers(1, 6))
    depth = draw(st.integers(0, 3))
    widths = draw(st.lists(st.integers(1, 8), min_size=depth, max_size=depth))
    acts = draw(st.lists(st.sampled_from(ACTIVATIONS), min_size=1, max_size=3))
    extras = draw(st.booleans())
    out = draw(st.integers(2, 4))
    n = draw(st.integers(1, 3))
    norm = draw(st.sampled_from(NORMS))
    set_kind = draw(st.sampled_from(SET_KINDS))
    eps_kind = draw(st.sampled_from(EPS_KINDS))
    scale = draw(st.sampled_from([0.05, 0.5, 2.0]))
    c_kind = draw(st.sampled_from(C_KINDS))
    head = random_mlp(seed, d, widths, out, acts, extras=extras, dtype=dtype, weight_scale=1.5)
    z0 = torch.randn(n, d, generator=gen, dtype=dtype)
    if eps_kind == "zero":
        eps = 0.0
    elif eps_kind == "scalar":
        eps = scale
    else:  # one radius per row, one of them possibly 0
        eps = torch.rand(n, generator=gen, dtype=dtype) * scale
        if n > 1:
            eps[0] = 0.0
    s = make_set(set_kind, z0, eps, norm, gen)
    C = make_C(c_kind, n, out, gen, dtype)
    return head, s, C, seed


def _check_set(head, s, C, seed, rtol, methods=METHODS):
    m = (C.shape[-2] if C is not None else head[-1].out_features)
    fn = set_fn(head, s, C)
    lo_s, hi_s = sampled_extremes(fn, s.sample(64, torch.Generator().manual_seed(seed)))
    lo_a, hi_a = pgd_extremes(fn, s.n, s.k, s.eps, s.p, m, steps=20, restarts=2, seed=seed)
    lo_f, hi_f = torch.minimum(lo_s, lo_a), torch.maximum(hi_s, hi_a)
    for method in methods:
        lower, upper = bound(head, s, C, method=method)
        assert lower.shape == upper.shape == (s.n, m)
        assert torch.isfinite(lower).all() and torch.isfinite(upper).all()
        assert_inside(lo_f, hi_f, lower, upper, rtol, f"{method} (p={s.p}, k={s.k})")


@hyp(35)
@given(problems())
def test_sound_float64(problem):
    head, s, C, seed = problem
    _check_set(head, s, C, seed, rtol=1e-9)


@hyp(15)
@given(problems(dtype=torch.float32))
def test_sound_float32(problem):
    # float32: rounding in the bound and in the forward pass; tolerance relative to magnitudes
    head, s, C, seed = problem
    _check_set(head, s, C, seed, rtol=2e-4)


@hyp(15)
@given(
    seed=st.integers(0, 2**31 - 1),
    kind=st.sampled_from(["conv1d", "conv2d"]),
    act=st.sampled_from(ACTIVATIONS),
    norm=st.sampled_from(NORMS),
    eps=st.sampled_from([0.0, 0.02, 0.3]),
    c_kind=st.sampled_from(C_KINDS),
)
def test_sound_conv_ball(seed, kind, act, norm, eps, c_kind):
    """Conv1d/Conv2d + BatchNorm2d + Flatten heads over a plain ℓp ball via bound_ball."""
    gen = torch.Generator().manual_seed(seed)
    head, shape = random_conv_head(seed, kind, act)
    n = 2
    x0 = torch.randn(n, *shape, generator=gen, dtype=torch.float64)
    C = make_C(c_kind, n, 3, gen)
    m = 3 if C is None else C.shape[-2]
    p = parse_norm(norm)
    k = math.prod(shape)
    e = torch.full((n,), eps, dtype=torch.float64)
    fn = ball_fn(head, x0, C)
    lo_s, hi_s = sampled_extremes(fn, sample_ball(64, n, k, e, p, gen, torch.float64))
    lo_a, hi_a = pgd_extremes(fn, n, k, e, p, m, steps=20, restarts=2, seed=seed)
    lo_f, hi_f = torch.minimum(lo_s, lo_a), torch.maximum(hi_s, hi_a)
    for method in METHODS:
        lower, upper = bound_ball(head, x0, eps, norm, C, method=method)
        assert lower.shape == (n, m)
        assert_inside(lo_f, hi_f, lower, upper, 1e-9, f"{kind} {act} {method} p={norm}")


@pytest.mark.parametrize("method", METHODS)
def test_eps_zero_is_the_point(method):
    """ε = 0: the set is {z0}, every method must return lower = upper = C·head(z0)."""
    gen = torch.Generator().manual_seed(3)
    for acts in (["relu"], ["tanh", "sigmoid"], ["leaky_relu"]):
        head = random_mlp(7, 4, [6, 5], 3, acts, extras=True)
        z0 = torch.randn(5, 4, generator=gen, dtype=torch.float64)
        for kind in ("dims", "basis", "direction"):
            s = make_set(kind, z0, 0.0, "2", gen)
            C = make_C("margin", 5, 3, gen)
            lower, upper = bound(head, s, C, method=method)
            want = set_fn(head, s, C)(torch.zeros(5, s.k, dtype=torch.float64))
            torch.testing.assert_close(lower, want, rtol=1e-9, atol=1e-9)
            torch.testing.assert_close(upper, want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("method", METHODS)
def test_lower_le_upper_and_bound_upper_false(method):
    """lower ≤ upper always; bound_upper=False returns (the same lower, None)."""
    gen = torch.Generator().manual_seed(11)
    head = random_mlp(5, 5, [8, 8, 6], 4, ["relu", "tanh", "leaky_relu"], extras=True)
    z0 = torch.randn(6, 5, generator=gen, dtype=torch.float64)
    for norm in NORMS:
        s = make_set("basis", z0, torch.rand(6, generator=gen, dtype=torch.float64), norm, gen)
        for C in (None, make_C("shared", 6, 4, gen), make_C("margin", 6, 4, gen)):
            lower, upper = bound(head, s, C, method=method)
            assert (lower <= upper + 1e-12).all()
            lo_only, none = bound(head, s, C, method=method, bound_upper=False)
            assert none is None
            torch.testing.assert_close(lo_only, lower, rtol=1e-12, atol=1e-12)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none here)")
@hyp(10)
@given(problems(dtype=torch.float32))
def test_sound_cuda_float32(problem):
    """The same soundness property on CUDA in float32 (bounds on the GPU, points on the GPU)."""
    head, s, C, seed = problem
    dev = torch.device("cuda")
    head = head.to(dev)
    s = s.to(device=dev)
    C = None if C is None else C.to(dev)
    m = (C.shape[-2] if C is not None else head[-1].out_features)
    fn = set_fn(head, s, C)
    g = torch.Generator().manual_seed(seed)
    lo_f, hi_f = sampled_extremes(fn, s.sample(64, g))
    for method in METHODS:
        lower, upper = bound(head, s, C, method=method)
        assert lower.device.type == "cuda" and lower.shape == (s.n, m)
        assert_inside(lo_f, hi_f, lower, upper, 2e-4, f"cuda {method}")
