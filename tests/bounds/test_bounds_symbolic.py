"""Full CROWN has two implementations: the backward pass (crown.py, any supported head) and the
symbolic pass (symbolic.py, piecewise-linear vector heads over k ≤ 64 directions), which
associates the same products differently. They must give the same numbers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from auditai.bounds.crown import backward_lower
from auditai.bounds.engine import _pre_activation_bounds, prepare
from auditai.bounds.ops import to_ops
from auditai.bounds.symbolic import applies, symbolic_crown
from auditai.latent import LatentSet


def _case(seed: int):
    g = torch.Generator().manual_seed(seed)
    d = int(torch.randint(2, 9, (1,), generator=g))
    widths = [int(torch.randint(3, 20, (1,), generator=g)) for _ in range(1 + seed % 3)]
    torch.manual_seed(seed)
    layers, prev = [], d
    for w in widths:
        layers += [nn.Linear(prev, w), nn.ReLU() if seed % 3 else nn.LeakyReLU(0.2)]
        prev = w
    head = nn.Sequential(*layers, nn.Linear(prev, 4)).double()
    n = 5
    z0 = torch.randn(n, d, generator=g, dtype=torch.float64) * 2
    eps = torch.rand(n, generator=g, dtype=torch.float64) * 1.5
    kind = seed % 3
    if kind == 0:
        s = LatentSet.from_dims(z0, list(range(min(3, d))), eps, norm=["inf", 2, 1][seed % 4 % 3])
    elif kind == 1:
        s = LatentSet.from_direction(z0, torch.randn(d, generator=g, dtype=torch.float64), eps)
    else:
        s = LatentSet.from_basis(z0, torch.randn(d, 2, generator=g, dtype=torch.float64), eps,
                                 norm=[2, "inf", 1][seed % 4 % 3])
    C = torch.randn(n, 3, 4, generator=g, dtype=torch.float64)
    return head, s, C


@pytest.mark.parametrize("seed", range(30))
def test_symbolic_crown_equals_the_backward_pass(seed):
    head, s, C = _case(seed)
    with torch.no_grad():
        ops, in_shape = prepare(to_ops(head, (s.d,)), s.z0, s.basis)
        assert applies(ops, in_shape)
        lo_s, up_s = symbolic_crown(ops, s.eps, s.p, in_shape[0], C, True)
        pre, _, _, _, relaxations = _pre_activation_bounds(ops, s.eps, s.p, in_shape, crown=True)
        low = backward_lower(ops, torch.cat([C, -C], 1), relaxations, s.eps, s.p, 1)
    torch.testing.assert_close(lo_s, low[:, :3], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(up_s, -low[:, 3:], rtol=1e-10, atol=1e-10)
