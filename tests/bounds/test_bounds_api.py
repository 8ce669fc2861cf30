"""The engine's contract around the numbers: unsupported layers, bad arguments, batch
chunking, gradients for training, and bound_upper=False."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

import auditai.bounds.engine as engine_mod
from auditai.bounds import bound, bound_ball
from auditai.errors import UnsupportedLayerError
from auditai.latent import LatentSet

from .helpers import METHODS, make_C, make_set, random_conv_head, random_mlp


class Custom(nn.Module):
    def forward(self, x):
        return x * x  # a product of two tensors that depend on the input: no bound rule


def _set(d=4, n=3):
    gen = torch.Generator().manual_seed(0)
    return LatentSet.from_dims(torch.randn(n, d, generator=gen, dtype=torch.float64), [0, 2], 0.3)


def _bn_train():
    return nn.BatchNorm1d(5).double().train()


UNSUPPORTED = [
    # (head builder, expected type name, expected position)
    (lambda: nn.Sequential(nn.Linear(4, 5), nn.LayerNorm(5), nn.Linear(5, 2)), "LayerNorm", "head[1]"),
    (lambda: nn.Sequential(nn.Linear(4, 5), Custom(), nn.Linear(5, 2)), "Custom", "head[1]"),
    (lambda: nn.Sequential(nn.Linear(4, 6), nn.Unflatten(1, (1, 6)), nn.Softmax(dim=-1)), "Softmax", "head[2]"),
    (lambda: nn.Sequential(nn.Linear(4, 5), nn.Sequential(nn.Dropout(0.5).train(), nn.ReLU()), nn.Linear(5, 2)),
     "Dropout", "head[1][0]"),
    (lambda: nn.Sequential(nn.Linear(4, 5), nn.Sequential(nn.ReLU(), _bn_train()), nn.Linear(5, 2)),
     "BatchNorm1d", "head[1][1]"),
    (lambda: nn.Sequential(nn.Sequential(nn.Linear(4, 5), nn.Sequential(nn.Identity(), nn.Softsign())),
                           nn.Linear(5, 2)), "Softsign", "head[0][1][1]"),
]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("build,tname,pos", UNSUPPORTED, ids=[u[1] + "@" + u[2] for u in UNSUPPORTED])
def test_unsupported_layer_names_type_and_position(build, tname, pos, method):
    head = build().double()
    if tname in ("Dropout", "BatchNorm1d"):  # .double() keeps modes; make sure they train
        for m in head.modules():
            if isinstance(m, (nn.Dropout, nn.BatchNorm1d)):
                m.train()
    with pytest.raises(UnsupportedLayerError) as info:
        bound(head, _set(), method=method)
    msg = str(info.value)
    assert tname in msg and pos in msg, msg
    assert info.value.module_type == tname and info.value.position == pos


@pytest.mark.parametrize("method", METHODS)
def test_maxpool_in_a_conv_head_is_bounded_soundly_by_bound_ball(method):
    """A MaxPool1d inside a conv chain goes through the graph engine (it was refused before)."""
    torch.manual_seed(0)
    head = nn.Sequential(nn.Conv1d(2, 3, 3), nn.MaxPool1d(2), nn.Flatten(), nn.Linear(6, 2)).double()
    x0 = torch.randn(2, 2, 7, dtype=torch.float64)
    lo, up = bound_ball(head, x0, 0.1, "inf", method=method)
    pts = x0.unsqueeze(1) + (torch.rand(2, 500, 2, 7, dtype=torch.float64) * 2 - 1) * 0.1
    out = head(pts.reshape(-1, 2, 7)).reshape(2, 500, 2).detach()
    assert (out >= lo.unsqueeze(1) - 1e-9).all() and (out <= up.unsqueeze(1) + 1e-9).all()


def test_an_unsupported_op_in_a_conv_head_is_named_with_the_module_root():
    head = nn.Sequential(nn.Conv1d(2, 3, 3), nn.LPPool1d(2, 2), nn.Flatten(), nn.Linear(6, 2)).double()
    x0 = torch.zeros(2, 2, 7, dtype=torch.float64)
    with pytest.raises(UnsupportedLayerError, match=re.escape("LPPool1d") + ".*" + re.escape("module[1]")):
        bound_ball(head, x0, 0.1, "inf")


def test_eval_mode_batchnorm_and_dropout_are_supported():
    head = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.Dropout(0.5), nn.ReLU(), nn.Linear(5, 2)).double()
    head.eval()
    lower, upper = bound(head, _set())
    assert lower.shape == (3, 2) and (lower <= upper).all()


# ----------------------------------------------------------------------------- bad arguments
@pytest.mark.parametrize("shape", [(2, 5), (5,), (3, 2, 4), (4, 2, 3), (1, 1, 2, 3)])
def test_C_of_wrong_shape_names_the_sizes(shape):
    head = nn.Sequential(nn.Linear(4, 3)).double()
    with pytest.raises(ValueError) as info:
        bound(head, _set(), torch.ones(*shape, dtype=torch.float64))
    msg = str(info.value)
    assert str(tuple(shape)) in msg and "3" in msg, msg


def test_unknown_method_and_engine():
    head = nn.Sequential(nn.Linear(4, 3)).double()
    with pytest.raises(ValueError, match="crownn.*ibp"):
        bound(head, _set(), method="crownn")
    with pytest.raises(ValueError, match="marabou.*auditai"):
        bound(head, _set(), engine="marabou")
    with pytest.raises(ValueError, match="crownn"):
        bound_ball(head, torch.zeros(2, 4, dtype=torch.float64), 0.1, "inf", method="crownn")


def test_bound_ball_rejects_negative_or_nan_eps():
    head = nn.Sequential(nn.Linear(4, 3)).double()
    for eps in (-0.1, float("nan")):
        with pytest.raises(ValueError, match="eps"):
            bound_ball(head, torch.zeros(2, 4, dtype=torch.float64), eps, "inf")


# ----------------------------------------------------------------------------- chunking
def _spy(monkeypatch, forced=None):
    """Record the batch size of every chunk that reaches bound_ops (optionally force the size)."""
    sizes = []
    real = engine_mod.bound_ops

    def spy(ops, in_shape, eps, *a, **k):
        sizes.append(eps.shape[0])
        return real(ops, in_shape, eps, *a, **k)

    monkeypatch.setattr(engine_mod, "bound_ops", spy)
    if forced is not None:
        monkeypatch.setattr(engine_mod, "_chunk_size", lambda n, *a, **k: min(n, forced))
    return sizes


@pytest.mark.parametrize("method", METHODS)
def test_results_do_not_depend_on_chunking(method, monkeypatch):
    """Each sample's bound is independent of the rest of its batch: memory_budget=1 (chunks of
    1), chunks of 3, and the whole batch give the same numbers, for per-sample C too."""
    gen = torch.Generator().manual_seed(4)
    head = random_mlp(2, 5, [8, 8, 6], 3, ["relu", "tanh"], extras=True)
    n = 7
    eps = torch.rand(n, generator=gen, dtype=torch.float64) * 0.8
    s = make_set("basis", torch.randn(n, 5, generator=gen, dtype=torch.float64), eps, "2", gen)
    C = make_C("margin", n, 3, gen)
    whole = bound(head, s, C, method=method)
    sizes = _spy(monkeypatch)
    tiny = bound(head, s, C, method=method, memory_budget=1)
    assert sizes == [1] * n
    sizes = _spy(monkeypatch, forced=3)
    three = bound(head, s, C, method=method)
    assert sizes == [3, 3, 1]
    for got in (tiny, three):
        torch.testing.assert_close(got[0], whole[0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(got[1], whole[1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_conv_chunking_via_bound_ball(method):
    head, shape = random_conv_head(3, "conv2d", "relu")
    x0 = torch.randn(5, *shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    a = bound_ball(head, x0, 0.1, "inf", method=method)
    b = bound_ball(head, x0, 0.1, "inf", method=method, memory_budget=1)
    torch.testing.assert_close(a[0], b[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(a[1], b[1], rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bounds_are_differentiable_wrt_head_parameters(method, dtype):
    """Certified training needs d(bound)/d(θ): finite, and non-zero for every Linear layer."""
    head = random_mlp(8, 4, [6, 6], 3, ["relu", "sigmoid"], extras=True, dtype=dtype)
    gen = torch.Generator().manual_seed(8)
    s = make_set("dims", torch.randn(4, 4, generator=gen, dtype=dtype), 0.5, "inf", gen)
    C = make_C("margin", 4, 3, gen, dtype)
    lower, upper = bound(head, s, C, method=method)
    (lower.sum() - upper.sum()).backward()
    lins = [m for m in head.modules() if isinstance(m, nn.Linear)]
    for lin in lins:
        assert lin.weight.grad is not None, f"no gradient reaches {lin}"
        assert torch.isfinite(lin.weight.grad).all() and torch.isfinite(lin.bias.grad).all()
        assert lin.weight.grad.abs().sum() > 0, f"zero gradient at {lin}"
    lower2, none = bound(head, s, C, method=method, bound_upper=False)
    assert none is None
    torch.testing.assert_close(lower2, lower)
    head.zero_grad()
    lower2.sum().backward()
    assert all(torch.isfinite(lin.weight.grad).all() for lin in lins)
