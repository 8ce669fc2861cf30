"""The guard's verdict cache (issue 11, item 8): a head bounded again in the same state is not
checked again; any change its function can depend on means a new check (and a stale graph or op
list is never bounded)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import auditai.bounds.engine as engine
import auditai.bounds.graph_engine as graph_engine
from auditai.bounds import bound_ball, bound_box
from auditai.errors import UnsupportedLayerError

DT = torch.float64


@pytest.fixture
def counts(monkeypatch):
    seen = {"chain": 0, "graph": 0}
    real_chain, real_graph = engine.check_agreement, graph_engine._check_graph

    def chain(*a, **k):
        seen["chain"] += 1
        return real_chain(*a, **k)

    def graph(*a, **k):
        seen["graph"] += 1
        return real_graph(*a, **k)

    monkeypatch.setattr(engine, "check_agreement", chain)
    monkeypatch.setattr(graph_engine, "_check_graph", graph)
    return seen


def _chain():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.LeakyReLU(0.1), nn.Linear(4, 2)).to(DT)


class Res(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 3), nn.Linear(3, 2)
        self.gain = 1.0

    def forward(self, x):
        return self.b(x + self.gain * torch.relu(self.a(x)))


def test_chain_head_checked_once_per_state(counts):
    head = _chain()
    x0 = torch.randn(4, 3, dtype=DT)
    first = bound_ball(head, x0, 0.1)
    bound_ball(head, x0 + 1, 0.2)
    assert counts["chain"] == 1
    with torch.no_grad():
        head[0].weight.mul_(2.0)           # in place: a new version
    bound_ball(head, x0, 0.1)
    assert counts["chain"] == 2
    head[1].negative_slope = 0.3           # a plain attribute the forward reads
    bound_ball(head, x0, 0.1)
    assert counts["chain"] == 3
    head[2].weight = nn.Parameter(head[2].weight.detach().clone())  # a new tensor object
    again = bound_ball(head, x0, 0.1)
    assert counts["chain"] == 4
    assert not torch.equal(first[0], again[0])


def test_graph_head_attribute_change_is_seen(counts):
    torch.manual_seed(1)
    head = Res().to(DT)
    lo_x = torch.randn(3, 3, dtype=DT)
    hi_x = lo_x + 0.5
    lo1, up1 = bound_box(head, lo_x, hi_x)
    bound_box(head, lo_x, hi_x)
    assert counts["graph"] == 1
    head.gain = 3.0                        # traced as a constant: the graph must be read again
    lo2, up2 = bound_box(head, lo_x, hi_x)
    assert counts["graph"] == 2
    pts = lo_x + (hi_x - lo_x) * torch.rand(200, 3, 3, dtype=DT)
    with torch.no_grad():
        y = head(pts.reshape(-1, 3)).reshape(200, 3, 2)
    assert (y >= lo2 - 1e-9).all() and (y <= up2 + 1e-9).all()
    assert not torch.allclose(lo1, lo2)


def test_hooks_and_instance_forward_added_after_a_cached_call_are_refused(counts):
    head = _chain()
    x0 = torch.randn(2, 3, dtype=DT)
    bound_ball(head, x0, 0.1)
    h = head[1].register_forward_hook(lambda m, i, o: 3 * o + 1)
    with pytest.raises(UnsupportedLayerError):
        bound_ball(head, x0, 0.1)
    h.remove()
    head[2].forward = lambda x: 2 * x.sum(-1, keepdim=True).repeat(1, 2)
    with pytest.raises(UnsupportedLayerError):
        bound_ball(head, x0, 0.1)


def test_parametrized_heads_are_checked_every_time(counts):
    from torch.nn.utils import parametrize

    class Double(nn.Module):
        def forward(self, w):
            return 2 * w

    head = _chain()
    parametrize.register_parametrization(head[0], "weight", Double())
    x0 = torch.randn(2, 3, dtype=DT)
    try:
        bound_ball(head, x0, 0.1)
        bound_ball(head, x0, 0.1)
    except UnsupportedLayerError:
        return  # refused outright: also fine
    assert counts["chain"] + counts["graph"] >= 2


OFFSET = torch.zeros(2, dtype=DT)   # module-level state a forward reads


class ReadsGlobal(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 3), nn.Linear(3, 2)

    def forward(self, x):
        return self.b(x + torch.relu(self.a(x))) + OFFSET


def test_a_global_tensor_the_forward_reads_is_part_of_the_state(counts):
    global OFFSET
    torch.manual_seed(2)
    head = ReadsGlobal().to(DT)
    lo_x = torch.randn(2, 3, dtype=DT)
    hi_x = lo_x + 0.3
    bound_box(head, lo_x, hi_x)
    bound_box(head, lo_x, hi_x)
    assert counts["graph"] == 1
    OFFSET.add_(5.0)                       # in place
    lo, up = bound_box(head, lo_x, hi_x)
    assert counts["graph"] == 2
    with torch.no_grad():
        y = head(lo_x)
    assert (y >= lo - 1e-9).all() and (y <= up + 1e-9).all()
    OFFSET = torch.full((2,), -7.0, dtype=DT)   # rebound to a new tensor
    lo, up = bound_box(head, lo_x, hi_x)
    assert counts["graph"] == 3
    with torch.no_grad():
        y = head(hi_x)
    assert (y >= lo - 1e-9).all() and (y <= up + 1e-9).all()


class ClassScale(nn.Module):
    SCALE = 1.0

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 3), nn.Linear(3, 2)

    def forward(self, x):
        return self.b(x + self.SCALE * torch.relu(self.a(x)))


def test_a_class_attribute_the_forward_reads_is_part_of_the_state(counts):
    torch.manual_seed(3)
    head = ClassScale().to(DT)
    lo_x = torch.randn(2, 3, dtype=DT)
    hi_x = lo_x + 0.3
    bound_box(head, lo_x, hi_x)
    ClassScale.SCALE = -4.0
    try:
        lo, up = bound_box(head, lo_x, hi_x)
        assert counts["graph"] == 2
        with torch.no_grad():
            y = head(lo_x)
        assert (y >= lo - 1e-9).all() and (y <= up + 1e-9).all()
    finally:
        ClassScale.SCALE = 1.0
