"""bound_box: boxes given per element, modules of any input shape (issue 11, item 5)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from auditai.bounds import bound_ball, bound_box

DT = torch.float64


def _conv_net() -> nn.Module:
    torch.manual_seed(4)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                         nn.Linear(4 * 4 * 4, 3)).to(DT)


def _box(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    lo = torch.rand(n, 3, 8, 8, generator=g, dtype=DT)
    return lo, lo + 0.1 * torch.rand(n, 3, 8, 8, generator=g, dtype=DT)


@pytest.mark.parametrize("method", ["ibp", "crown-ibp", "crown"])
def test_box_bounds_contain_sampled_and_vertex_points(method):
    net = _conv_net()
    lo_x, hi_x = _box()
    lo, up = bound_box(net, lo_x, hi_x, method=method)
    g = torch.Generator().manual_seed(1)
    t = torch.rand(3, 400, 3, 8, 8, generator=g, dtype=DT)
    t[:, :100] = t[:, :100].round()  # vertices of the box, where linear pieces peak
    pts = lo_x.unsqueeze(1) + (hi_x - lo_x).unsqueeze(1) * t
    with torch.no_grad():
        y = net(pts.reshape(-1, 3, 8, 8)).reshape(3, 400, 3)
    assert (y >= lo.unsqueeze(1) - 1e-9).all() and (y <= up.unsqueeze(1) + 1e-9).all()


@pytest.mark.parametrize("method", ["ibp", "crown-ibp"])
def test_a_uniform_box_equals_the_linf_ball(method):
    net = _conv_net()
    x0 = _box()[0]
    lo_b, up_b = bound_box(net, x0 - 0.05, x0 + 0.05, method=method)
    lo_r, up_r = bound_ball(net, x0, 0.05, "inf", method=method)
    assert torch.allclose(lo_b, lo_r, rtol=1e-9, atol=1e-12) and torch.allclose(up_b, up_r, rtol=1e-9, atol=1e-12)


def test_a_degenerate_box_gives_the_exact_value():
    net = _conv_net()
    x = _box()[0]
    lo, up = bound_box(net, x, x, method="crown-ibp")
    y = net(x).detach()
    assert torch.allclose(lo, y, atol=1e-10) and torch.allclose(up, y, atol=1e-10)


def test_spec_rows_and_lower_only():
    net = _conv_net()
    lo_x, hi_x = _box()
    C = torch.tensor([[1.0, -1.0, 0.0], [0.0, 1.0, -1.0]], dtype=DT)
    lo, up = bound_box(net, lo_x, hi_x, C=C, bound_upper=False)
    assert lo.shape == (3, 2) and up is None
    full_lo, full_up = bound_box(net, lo_x, hi_x)
    assert (lo[:, 0] >= full_lo[:, 0] - full_up[:, 1] - 1e-9).all()  # C bounded directly is tighter


@pytest.mark.parametrize("lower, upper, message", [
    (torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 7), "same shape"),
    (torch.ones(2, 3, 8, 8), torch.zeros(2, 3, 8, 8), "upper < lower somewhere in sample 0"),
    (torch.full((2, 3, 8, 8), float("nan")), torch.zeros(2, 3, 8, 8), "finite"),
])
def test_bad_boxes_are_clear_errors(lower, upper, message):
    with pytest.raises(ValueError, match=message):
        bound_box(_conv_net(), lower.to(DT), upper.to(DT))
