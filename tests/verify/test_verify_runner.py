"""verify(): verdicts against dense sampling, chunk invariance, radii, serialisation, errors."""

import json
import math

import pytest
import torch
from torch import nn

from auditai.latent import Basis, Dims, Direction
from auditai.verify import VerificationResult, verify

from _verify_helpers import small_head

DT = torch.float64
EPS = [0.05, 0.2, 0.6]


def _data(seed=0, n=40, d=4, out=3, act=nn.ReLU, dtype=DT):
    h = small_head(d=d, width=16, out=out, act=act, seed=seed, dtype=dtype)
    g = torch.Generator().manual_seed(seed + 7)
    z0 = torch.randn(n, d, generator=g, dtype=DT)
    y = h(z0.to(dtype)).argmax(1).detach()
    y[:4] = (y[:4] + 1) % out  # four clean mistakes
    v = torch.randn(d, generator=g, dtype=DT)
    return h, z0, y, v


def _dense_min_margin(h, z0, y, v, eps, T=4001):
    """Min over a dense grid of |t| ≤ eps of the label margin (T×N grid), per sample."""
    vn = v / v.norm()
    ts = torch.linspace(-eps, eps, T, dtype=DT)
    with torch.no_grad():
        out = h(z0[None] + ts[:, None, None] * vn).to(DT)  # T×N×out
    true = out.gather(2, y.view(1, -1, 1).expand(T, -1, 1))
    other = out.scatter(2, y.view(1, -1, 1).expand(T, -1, 1), -math.inf)
    return (true[..., 0] - other.amax(2)).amin(0)


@pytest.mark.parametrize("method", ["ibp", "crown-ibp", "crown", "complete"])
@pytest.mark.parametrize("act", [nn.ReLU, nn.Tanh])
def test_verdicts_never_contradict_dense_sampling(method, act):
    h, z0, y, v = _data(seed=1, act=act)
    r = verify(h, z0, y, Direction(v, "v"), EPS, method=method, radius=False, split_budget=32)
    for e, eps in enumerate(EPS):
        dense = _dense_min_margin(h, z0, y, v, eps)
        ver = r.verdicts[:, e] == 1
        assert (dense[ver] > 0).all(), f"{method}: a verified sample has a violating point at ε={eps}"
        # every falsified verdict has a checked counterexample inside the set
        fal = (r.verdicts[:, e] == -1).nonzero().flatten().tolist()
        cex = {c.sample: c for c in r.counterexamples if c.eps_index == e}
        assert set(fal) == set(cex)
        for i in fal:
            c = cex[i]
            assert c.margin <= 0 and abs(c.delta[0]) <= eps * (1 + 1e-12)
            zc = torch.tensor(c.z, dtype=DT)
            assert torch.allclose(zc, z0[i] + c.delta[0] * v / v.norm())
            with torch.no_grad():
                o = h(zc[None].to(next(h.parameters()).dtype)).double()[0]
            assert o[y[i]] <= o.max() and (o[y[i]] - torch.cat([o[:y[i]], o[y[i] + 1:]]).max()) <= 1e-9
        # clean mistakes are falsified at every ε
        assert (r.verdicts[:4, e] == -1).all()
        assert r.verified_error[e] >= r.falsified_fraction[e] - 1e-12
        assert r.verified_error[e] >= r.clean_error[e] - 1e-12
        assert abs(r.verified_error[e] - (r.falsified_fraction[e] + r.unknown_fraction[e])) < 1e-12
    if method == "complete" and act is nn.ReLU:
        assert r.unknown_fraction == [0.0, 0.0, 0.0]
        # ExactLine is exact: its verdict is the sign of the true minimum (dense grid agrees
        # wherever the grid's minimum is not within the grid's resolution of 0)
        for e, eps in enumerate(EPS):
            dense = _dense_min_margin(h, z0, y, v, eps)
            clear = dense.abs() > 1e-3
            assert torch.equal((r.verdicts[clear, e] == 1), dense[clear] > 0)


def test_tighter_methods_verify_more_here():
    h, z0, y, v = _data(seed=2)
    res = {m: verify(h, z0, y, Direction(v), EPS, method=m, radius=False) for m in ("ibp", "crown-ibp", "complete")}
    for e in range(len(EPS)):
        # complete is exact for k = 1 ReLU heads: nothing sound can verify more than it does
        assert res["complete"].verified_error[e] <= res["crown-ibp"].verified_error[e] + 1e-12
        assert res["complete"].verified_error[e] <= res["ibp"].verified_error[e] + 1e-12


@pytest.mark.parametrize("method", ["crown-ibp", "complete"])
def test_chunk_size_does_not_change_results(method):
    h, z0, y, v = _data(seed=3)
    a = verify(h, z0, y, Direction(v), EPS, method=method)
    b = verify(h, z0, y, Direction(v), EPS, method=method, chunk_size=7)
    assert torch.equal(a.verdicts, b.verdicts)
    assert torch.allclose(a.certified_radius, b.certified_radius, atol=1e-9)
    assert a.verified_error == b.verified_error


@pytest.mark.parametrize("method", ["ibp", "crown-ibp", "complete"])
def test_certified_radius_is_verified_and_tight(method):
    h, z0, y, v = _data(seed=4, n=25)
    maxr = 1.0
    r = verify(h, z0, y, Direction(v), [0.1, 0.3], method=method, max_radius=maxr)
    rad = r.certified_radius
    assert rad.shape == (25,) and (rad >= 0).all() and (rad <= maxr).all()
    assert (rad[:4] == 0).all()  # clean mistakes
    for i in range(4, 25):
        ri = float(rad[i])
        if ri > 0:
            at = verify(h, z0[i:i + 1], y[i:i + 1], Direction(v), [ri], method=method, radius=False)
            assert at.verdicts[0, 0] == 1, f"sample {i} not verified at its radius {ri}"
        if ri < maxr:
            above = verify(h, z0[i:i + 1], y[i:i + 1], Direction(v), [ri + 2e-3 * maxr], method=method,
                           radius=False)
            assert above.verdicts[0, 0] != 1, f"sample {i} verified above its radius {ri}"
    if method == "complete":  # exact radius: falsified just above it (ExactLine)
        d = _dense_min_margin
        for i in range(4, 25):
            ri = float(rad[i])
            if ri < maxr:
                assert d(h, z0[i:i + 1], y[i:i + 1], v, ri + 1e-3)[0] <= 1e-9


def test_float32_head_never_verifies_a_violated_sample():
    # one direction, margin f0 − f1 = t + c (c > 0); ε just past the crossing −c: violated by 1e-9,
    # below float32's resolution of the numbers involved
    h = nn.Linear(1, 2).float()
    with torch.no_grad():
        h.weight.copy_(torch.tensor([[1.0], [0.0]]))
        h.bias.copy_(torch.tensor([0.3, 0.1]))
    c = float(h.bias[0].detach().double() - h.bias[1].detach().double())
    z0 = torch.zeros(2, 1, dtype=DT)
    y = torch.tensor([0, 0])
    for method in ("ibp", "crown-ibp", "crown", "complete"):
        r = verify(h, z0, y, Dims([0]), [c + 1e-9, c - 1e-9], method=method, radius=False)
        assert r.verdicts[:, 0].tolist() == [-1, -1]
        assert r.verdicts[:, 1].tolist() == [1, 1]


def test_k2_sets_and_norms():
    h, z0, y, v = _data(seed=5)
    for norm in ("inf", 2, 1):
        r = verify(h, z0, y, Dims([0, 2], norm=norm), EPS, method="complete", split_budget=64)
        assert r.norm == ("inf" if norm == "inf" else str(norm))
        # sampled points never contradict verified verdicts
        s = Dims([0, 2], norm=norm).make(z0, 0.6)
        pts = s.sample(300, torch.Generator().manual_seed(0))
        with torch.no_grad():
            out = h(s.points(pts))
        viol = (out.argmax(2) != y).any(0)
        assert not (viol & (r.verdicts[:, 2] == 1)).any()


def test_round_trip_to_dict():
    h, z0, y, v = _data(seed=6, n=15)
    r = verify(h, z0, y, Basis(torch.randn(4, 2, dtype=DT), norm=2, name="pair"), [0.1, 0.5])
    d = json.loads(json.dumps(r.to_dict()))
    r2 = VerificationResult.from_dict(d)
    assert torch.equal(r2.verdicts, r.verdicts) and r2.verdicts.dtype == torch.int8
    assert torch.allclose(r2.certified_radius, r.certified_radius.double())
    assert r2.counterexamples == r.counterexamples and r2.eps == [0.1, 0.5]
    assert r2.set_description == "basis 'pair' ℓ2"
    if r.counterexamples:
        w = r.worst_counterexample(1)
        assert w.margin == min(c.margin for c in r.counterexamples if c.eps_index == 1)


def test_other_specs():
    h, z0, y, v = _data(seed=7)
    r = verify(h, z0, None, Direction(v), EPS, spec="prediction")
    assert r.clean_error[0] == 0.0 and r.spec == "prediction"
    r = verify(h, z0, None, Direction(v), EPS, spec="band", output_index=0, tau=0.2, method="complete")
    assert r.unknown_fraction == [0.0] * 3
    for c in r.counterexamples:
        assert abs(c.outputs[0] - float(h(z0[c.sample:c.sample + 1]).detach()[0, 0])) >= 0.2 - 1e-9


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"method": "exact"}, "unknown method"),
        ({"eps": []}, "eps is empty"),
        ({"eps": [0.1, -1.0]}, "finite and >= 0"),
        ({"latent": "pose"}, "set kind"),
        ({"latent": Basis(torch.randn(4, 9, dtype=DT)), "method": "complete"}, "k ≤ 8"),
        ({"labels": torch.tensor([5] * 40)}, "out of range"),
    ],
)
def test_errors(kwargs, match):
    h, z0, y, v = _data(seed=0)
    args = {"labels": y, "latent": Direction(v), "eps": EPS}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        verify(h, z0, args.pop("labels"), args.pop("latent"), args.pop("eps"), **args)
