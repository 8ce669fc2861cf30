"""Soundness of the graph bounds (issue 11, item 7): random heads with custom forward code,
every op of the IR, each of ibp / crown-ibp / crown. Every value the head takes at a sampled
point, a vertex or a PGD iterate of the box must lie inside the bounds (float64, 1e-9·scale).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from auditai.bounds import bound_ball, bound_box
from tests.bounds.graph_helpers import (
    ACTIVATIONS,
    DT,
    FUNCTIONAL,
    box_pgd,
    box_points,
    build,
    spec_fn,
)
from tests.bounds.helpers import hyp

METHODS = ("ibp", "crown-ibp", "crown")
ALL_ACTS = tuple(ACTIVATIONS) + FUNCTIONAL
RTOL = 1e-9


def _check(module, shape, method, seed, width, centre_scale=1.0, n=2, with_C=True):
    gen = torch.Generator().manual_seed(seed)
    c = torch.randn(n, *shape, generator=gen, dtype=DT) * centre_scale
    r = width * torch.rand(n, *shape, generator=gen, dtype=DT)
    lo_x, hi_x = c - r, c + r
    with torch.no_grad():
        out = module(c).shape[1]
    C = torch.randn(3, out, generator=gen, dtype=DT) if with_C else None
    lower, upper = bound_box(module, lo_x, hi_x, C=C, method=method)
    fn = spec_fn(module, C)
    with torch.no_grad():
        ys = fn(box_points(lo_x, hi_x, 300, gen))
    m = ys.shape[-1]
    a_lo, a_hi = box_pgd(fn, lo_x, hi_x, m, seed=seed)
    found_lo = torch.minimum(ys.amin(0), a_lo)
    found_hi = torch.maximum(ys.amax(0), a_hi)
    lower, upper = lower.detach(), upper.detach()
    tol = RTOL * (1.0 + float(lower.abs().max() + upper.abs().max()))
    assert torch.isfinite(lower).all() and torch.isfinite(upper).all()
    assert (found_lo >= lower - tol).all(), f"{method}: {(lower - found_lo).max():.3g} below the lower bound"
    assert (found_hi <= upper + tol).all(), f"{method}: {(found_hi - upper).max():.3g} above the upper bound"
    return lower, upper


@pytest.mark.parametrize("kind", ["residual", "sub_neg_cat", "view_permute", "batchnorm"])
@pytest.mark.parametrize("method", METHODS)
@hyp(8)
@given(act=st.sampled_from(ALL_ACTS), seed=st.integers(0, 10_000), width=st.sampled_from([0.01, 0.3, 1.5]))
def test_vector_graphs_every_activation(kind, method, act, seed, width):
    module, shape = build(kind, act, seed)
    _check(module, shape, method, seed, width, centre_scale=2.0)


@pytest.mark.parametrize("act", ALL_ACTS)
@pytest.mark.parametrize("method", METHODS)
def test_each_activation_on_a_residual_graph(act, method):
    """Every activation at least once per method, on narrow and wide boxes."""
    for seed, width in ((1, 0.05), (2, 2.0)):
        module, shape = build("residual", act, seed)
        _check(module, shape, method, seed, width, centre_scale=2.0)


@pytest.mark.parametrize("method", METHODS)
@hyp(8)
@given(act=st.sampled_from(("relu", "leaky_relu", "tanh", "hardtanh", "softplus", "gelu")),
       pool=st.sampled_from(("max", "avg", "adaptive")), k=st.integers(1, 3), s=st.integers(1, 3),
       seed=st.integers(0, 10_000), width=st.sampled_from([0.05, 0.5]))
def test_conv_pool_graphs(method, act, pool, k, s, seed, width):
    module, shape = build("conv_pool", act, seed, pool=pool, k=k, s=s)
    _check(module, shape, method, seed, width)


@pytest.mark.parametrize("method", METHODS)
@hyp(8)
@given(act=st.sampled_from(("relu", "sigmoid", "elu", "silu", "clamp")), stride=st.integers(1, 3),
       padding=st.integers(0, 1), data=st.data(), groups=st.sampled_from([1, 2]),
       mode=st.sampled_from(("nearest", "bilinear")), seed=st.integers(0, 10_000),
       width=st.sampled_from([0.05, 0.8]))
def test_generator_graphs(method, act, stride, padding, data, groups, mode, seed, width):
    out_pad = data.draw(st.integers(0, stride - 1))
    module, shape = build("generator", act, seed, stride=stride, padding=padding, out_pad=out_pad,
                          groups=groups, mode=mode)
    _check(module, shape, method, seed, width)


@pytest.mark.parametrize("p", [2.0, 1.0])
@pytest.mark.parametrize("method", METHODS)
def test_l2_l1_balls_on_graphs(p, method):
    """bound_ball over ℓ2/ℓ1 balls: samples on the sphere and the ℓ1 vertices stay inside."""
    from auditai.latent import sample_ball

    for seed in range(3):
        module, shape = build("residual", "relu", seed)
        gen = torch.Generator().manual_seed(seed)
        x0 = torch.randn(2, *shape, generator=gen, dtype=DT)
        eps = torch.tensor([0.3, 1.0], dtype=DT)
        lower, upper = bound_ball(module, x0, eps, p=p, method=method)
        d = sample_ball(400, 2, 3, eps, p, gen, DT)
        # push samples to the boundary, where the extremes of a piecewise-linear head lie
        norm = torch.linalg.vector_norm(d, ord=p, dim=-1, keepdim=True).clamp_min(1e-30)
        d = torch.cat([d, d / norm * eps.reshape(1, 2, 1)])
        if p == 1.0:
            eye = torch.eye(3, dtype=DT)
            d = torch.cat([d, (torch.cat([eye, -eye]).unsqueeze(1) * eps.reshape(1, 2, 1))])
        with torch.no_grad():
            y = module((x0 + d).reshape(-1, 3)).reshape(d.shape[0], 2, -1)
        lower, upper = lower.detach(), upper.detach()
        tol = RTOL * (1 + float(lower.abs().max() + upper.abs().max()))
        assert (y >= lower - tol).all() and (y <= upper + tol).all()


def test_ibp_is_no_looser_than_the_interval_of_the_last_layer():
    """IBP folds C into the final Linear: never looser than C applied to the output interval."""
    module, shape = build("residual", "relu", 3)
    gen = torch.Generator().manual_seed(0)
    c = torch.randn(4, *shape, generator=gen, dtype=DT)
    C = torch.randn(5, 2, generator=gen, dtype=DT)
    lo, up = bound_box(module, c - 0.5, c + 0.5, method="ibp")
    lo_c, up_c = bound_box(module, c - 0.5, c + 0.5, C=C, method="ibp")
    mid, rad = (up + lo) / 2, (up - lo) / 2
    naive_lo, naive_up = mid @ C.T - rad @ C.abs().T, mid @ C.T + rad @ C.abs().T
    assert (lo_c >= naive_lo - 1e-12).all() and (up_c <= naive_up + 1e-12).all()
    assert ((lo_c - naive_lo) + (naive_up - up_c)).max() > 1e-6  # strictly tighter somewhere


@pytest.mark.parametrize("method", METHODS)
def test_softplus_threshold_switch_is_bounded_soundly(method):
    """torch's softplus switches to the identity above `threshold` with a small downward jump:
    boxes placed right at the switch (the case that broke CROWN-IBP) stay sound."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(1, 1), torch.nn.Softplus(beta=1.0, threshold=1.0),
                              torch.nn.Linear(1, 1)).to(DT)
    with torch.no_grad():
        net[0].weight.fill_(1.0)
        net[0].bias.zero_()
        net[2].weight.fill_(-1.0)
        net[2].bias.zero_()
    c = torch.linspace(0.9, 1.1, 41, dtype=DT).reshape(-1, 1)
    for w in (1e-9, 1e-6, 1e-3, 0.05):
        lo_x, hi_x = c - w, c + w
        lower, upper = bound_box(net, lo_x, hi_x, method=method)
        t = torch.linspace(0, 1, 201, dtype=DT).reshape(-1, 1, 1)
        with torch.no_grad():
            y = net((lo_x + (hi_x - lo_x) * t).reshape(-1, 1)).reshape(201, -1, 1)
        assert (y >= lower - 1e-13).all() and (y <= upper + 1e-13).all(), (method, w)
    assert math.isfinite(float(lower.sum()))
