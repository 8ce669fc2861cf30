"""Gradients through the graph bounds (issue 11, item 4: certified training on graph heads).

A loss on the CROWN-IBP (and IBP, CROWN) bounds of a residual head is differentiated by autograd
and compared with central finite differences, in float64: with respect to the box (gradcheck)
and with respect to the head's weights (the certified-training case).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from auditai.bounds import bound, bound_box
from auditai.latent import LatentSet

DT = torch.float64


class ResHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(3, 4), nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        h = torch.tanh(self.a(x))
        h = torch.relu(h + self.b(torch.relu(h)))
        return self.c(torch.cat([h[:, :2], h[:, 2:] * 0.5], dim=1))


def _head(seed=0):
    torch.manual_seed(seed)
    return ResHead().to(DT)


@pytest.mark.parametrize("method", ["ibp", "crown-ibp", "crown"])
def test_gradcheck_with_respect_to_the_box(method):
    head = _head()
    C = torch.tensor([[1.0, -1.0]], dtype=DT)
    centre = torch.tensor([[0.3, -0.2, 0.5]], dtype=DT, requires_grad=True)
    half = torch.tensor([[0.2, 0.1, 0.15]], dtype=DT, requires_grad=True)

    def f(c, r):
        lo, up = bound_box(head, c - r, c + r, C=C, method=method)
        return torch.cat([lo, up], dim=1)

    assert torch.autograd.gradcheck(f, (centre, half), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("method", ["ibp", "crown-ibp", "crown"])
def test_weight_gradients_match_finite_differences(method):
    head = _head(1)
    z0 = torch.tensor([[0.1, 0.4, -0.3], [0.5, -0.1, 0.2]], dtype=DT)
    s = LatentSet.from_dims(z0, dims=[0, 2], eps=0.2)
    C = torch.tensor([[1.0, -1.0], [-1.0, 1.0]], dtype=DT)

    def loss() -> torch.Tensor:
        lo, _ = bound(head, s, C=C, method=method, bound_upper=False)
        return torch.nn.functional.softplus(-lo).sum()  # a certified-training style hinge

    head.zero_grad()
    loss().backward()
    grads = {n: p.grad.clone() for n, p in head.named_parameters()}
    for n, g in grads.items():
        assert torch.isfinite(g).all(), n
    assert any(g.abs().sum() > 0 for g in grads.values())
    h = 1e-6
    for name, p in head.named_parameters():
        for idx in [(0,) * p.dim(), tuple(s_ - 1 for s_ in p.shape)]:
            with torch.no_grad():
                p[idx] += h
                up = float(loss())
                p[idx] -= 2 * h
                down = float(loss())
                p[idx] += h
            fd = (up - down) / (2 * h)
            assert abs(fd - float(grads[name][idx])) <= 1e-5 * (1 + abs(fd)), (name, idx, fd, float(grads[name][idx]))
