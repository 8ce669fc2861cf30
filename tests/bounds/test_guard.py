"""The guard: a head whose call does more than its layers is read correctly or refused, never
bounded as something else (issue 11, deliverable 1). One test per hidden-forward case."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from auditai.bounds import bound
from auditai.bounds.guard import ConversionMismatchError, check_agreement, set_points
from auditai.bounds.ops import op_sources, to_ops
from auditai.errors import UnsupportedLayerError
from auditai.latent import Direction, LatentSet
from auditai.verify import verify

DT = torch.float64
METHODS = ["ibp", "crown-ibp", "crown"]


def _head(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)).to(DT)


def _set(n: int = 6, eps: float = 0.5) -> LatentSet:
    g = torch.Generator().manual_seed(3)
    return LatentSet.from_dims(torch.randn(n, 4, generator=g, dtype=DT), dims=[0, 1], eps=eps)


def _sampled_outputs(head: nn.Module, s: LatentSet, count: int = 400) -> torch.Tensor:
    g = torch.Generator().manual_seed(5)
    delta = (torch.rand(s.n, count, s.k, generator=g, dtype=DT) * 2 - 1) * s.eps.view(-1, 1, 1)
    z = s.z0.unsqueeze(1) + delta @ s.basis.T
    with torch.no_grad():
        return head(z.reshape(-1, s.d)).reshape(s.n, count, -1)


class Residual(nn.Sequential):
    """The issue's case: a residual block as a Sequential subclass with its own forward."""

    def forward(self, x):
        return x + super().forward(x)


class Doubled(nn.Linear):
    def forward(self, x):
        return 2 * super().forward(x)


class HalfWeight(nn.Module):
    def forward(self, w):
        return 0.5 * w


def _assert_contains(head, s, method):
    lo, up = bound(head, s, method=method)
    out = _sampled_outputs(head, s)
    assert (out >= lo.unsqueeze(1) - 1e-9).all() and (out <= up.unsqueeze(1) + 1e-9).all()
    return lo, up


@pytest.mark.parametrize("method", METHODS)
def test_sequential_subclass_with_own_forward_is_read_as_written(method):
    """The issue's residual block: its own forward (x + block(x)) is bounded, not the chain."""
    torch.manual_seed(0)
    head = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), Residual(nn.Linear(8, 8), nn.ReLU()), nn.Linear(8, 2)).to(DT)
    s = _set()
    lo, up = _assert_contains(head, s, method)
    chain = nn.Sequential(head[0], head[1], *head[2], head[3])  # what a chain reader would bound
    chain_lo, chain_up = bound(chain, s, method=method)
    out = _sampled_outputs(head, s)
    outside = (out < chain_lo.unsqueeze(1)) | (out > chain_up.unsqueeze(1))
    assert outside.any(), "the chain reading must differ, else this test shows nothing"


@pytest.mark.parametrize("method", METHODS)
def test_forward_hook_is_refused(method):
    head = _head()
    head[0].register_forward_hook(lambda m, i, o: 3 * o + 1)
    with pytest.raises(UnsupportedLayerError, match=r"Linear at head\[0\].*forward hook"):
        bound(head, _set(), method=method)


def test_forward_pre_hook_is_refused_also_on_the_root():
    head = _head()
    head.register_forward_pre_hook(lambda m, i: (i[0] * 2,))
    with pytest.raises(UnsupportedLayerError, match=r"Sequential at head.*pre-hook"):
        bound(head, _set())


def test_global_module_hook_is_refused():
    handle = nn.modules.module.register_module_forward_hook(lambda m, i, o: o)
    try:
        with pytest.raises(UnsupportedLayerError, match="every module"):
            bound(_head(), _set())
    finally:
        handle.remove()


@pytest.mark.parametrize("method", METHODS)
def test_linear_subclass_with_own_forward_is_read_as_written(method):
    head = _head()
    head[2] = Doubled(8, 8).to(DT)
    lo, up = _assert_contains(head, _set(), method)
    plain_lo, _ = bound(_head(), _set(), method=method)
    assert not torch.allclose(lo, plain_lo)


def test_forward_replaced_on_the_instance_is_refused():
    head = _head()
    head[1].forward = lambda x: x
    with pytest.raises(UnsupportedLayerError, match=r"ReLU at head\[1\].*instance"):
        bound(head, _set())


def test_call_overridden_is_refused():
    class Called(nn.ReLU):
        def __call__(self, x):
            return torch.relu(x) + 0.1

    head = _head()
    head[3] = Called()
    with pytest.raises(UnsupportedLayerError, match=r"Called at head\[3\].*called"):
        bound(head, _set())


@pytest.mark.parametrize("method", METHODS)
def test_parametrized_weights_are_read_as_the_module_computes_them(method):
    head = _head()
    parametrize.register_parametrization(head[2], "weight", HalfWeight())
    s = _set()
    lo, up = bound(head, s, method=method)
    out = _sampled_outputs(head, s)
    assert (out >= lo.unsqueeze(1) - 1e-9).all() and (out <= up.unsqueeze(1) + 1e-9).all()
    # the parametrization matters: the plain weight would give other bounds
    plain = _head()
    plain_lo, _ = bound(plain, s, method=method)
    assert not torch.allclose(lo, plain_lo)


def test_numeric_guard_names_the_first_op_that_parts():
    """A class patched behind the reader's back: structure passes, the numbers do not."""
    head = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2)).to(DT)
    original = nn.Tanh.forward
    nn.Tanh.forward = lambda self, x: torch.tanh(x) + 0.25
    try:
        with pytest.raises(ConversionMismatchError, match=r"at head\[1\].*op head\[1\]"):
            bound(head, _set())
    finally:
        nn.Tanh.forward = original
    lo, up = bound(head, _set())  # restored: bounds again
    assert (lo <= up).all()


def test_numeric_guard_compares_at_points_of_the_set_not_only_the_centres():
    """Ops of another head that agrees at the centres only (a bump away from them) are refused."""
    s = _set(n=3, eps=0.5)
    head = _head()
    ops = to_ops(head, (4,), dtype=DT)
    pts = set_points(s.z0, s.eps, s.p, s.basis)
    assert pts.shape == (3 * 4, 4)
    centres = pts.reshape(3, 4, 4)[:, 0]
    assert torch.equal(centres, s.z0)

    class Bump(nn.Module):
        def forward(self, z):
            far = ((z.unsqueeze(1) - centres.unsqueeze(0)).abs().amax(-1) > 1e-3).all(1, keepdim=True)
            return head(z) + far.to(z.dtype)

    with pytest.raises(ConversionMismatchError, match="another function"):
        check_agreement(Bump(), ops, pts, "head", None)
    check_agreement(head, ops, pts, "head", op_sources(head).get)  # the true pair passes


def test_verify_refuses_a_pre_hook_that_changes_the_head_away_from_the_codes():
    """The issue's verify() case: the hook is invisible at z0, yet no sample may be 'verified'."""
    head = _head()
    g = torch.Generator().manual_seed(1)
    z0 = torch.randn(50, 4, generator=g, dtype=DT)
    y = head(z0).argmax(1)

    def away(module, inputs):
        (z,) = inputs
        dist = (z.unsqueeze(1) - z0.unsqueeze(0)).norm(dim=-1).amin(1, keepdim=True)
        return (z + 10.0 * (dist > 1e-6).to(z.dtype),)

    head.register_forward_pre_hook(away)
    with pytest.raises(UnsupportedLayerError, match="pre-hook"):
        verify(head, z0, y, Direction(torch.tensor([1.0, 0, 0, 0], dtype=DT)), [1.5], method="crown-ibp")
    with pytest.raises(UnsupportedLayerError, match="pre-hook"):
        verify(head, z0, y, Direction(torch.tensor([1.0, 0, 0, 0], dtype=DT)), [1.5], method="complete")


def test_certified_training_refuses_a_hook():
    from auditai.latent import Dims
    from auditai.train import certified_loss

    head = _head().float()
    head[3].register_forward_hook(lambda m, i, o: o * 0)
    z = torch.randn(8, 4)
    y = torch.zeros(8, dtype=torch.long)
    with pytest.raises(UnsupportedLayerError, match=r"head\[3\].*forward hook"):
        certified_loss(head, z, y, Dims([0]), 0.1)


def test_saving_a_hooked_head_is_refused(tmp_path):
    from auditai.model import AuditModel, save_model

    head = _head().float()
    head[4].register_forward_hook(lambda m, i, o: -o)
    with pytest.raises(UnsupportedLayerError, match=r"head.*forward hook"):
        save_model(tmp_path / "m.pt", AuditModel(head))
    assert not (tmp_path / "m.pt").exists()


def test_auto_lirpa_engine_does_not_fold_through_a_custom_forward():
    pytest.importorskip("auto_LiRPA")
    head = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), Residual(nn.Linear(8, 8), nn.ReLU()), nn.Linear(8, 2)).to(DT)
    s = _set(n=3)
    lo, up = bound(head, s, method="crown-ibp", engine="auto_lirpa")
    out = _sampled_outputs(head, s)
    assert (out >= lo.unsqueeze(1) - 1e-7).all() and (out <= up.unsqueeze(1) + 1e-7).all()


def test_sound_heads_still_bound_in_float32():
    head = _head().float()
    s = LatentSet.from_dims(_set().z0.float(), dims=[0, 1], eps=0.5)
    lo, up = bound(head, s, method="crown-ibp")
    assert lo.dtype == torch.float32 and torch.isfinite(lo).all() and (lo <= up).all()
