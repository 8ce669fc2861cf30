"""float32 verification (auditai.bounds.rounding): the allowance is sound, verdicts never
contradict float64's, and a memory budget below one sample is a clear error."""

from __future__ import annotations

import math

import pytest
import torch
from _verify_helpers import small_head
from torch import nn

from auditai.bounds import bound
from auditai.bounds.ops import to_ops
from auditai.bounds.rounding import certified_lower, chain_of, parse_precision
from auditai.errors import AuditaiError
from auditai.latent import Basis, Dims, LatentSet
from auditai.verify import verify


def _random_chain(g: torch.Generator, d: int, widths: list[int], out: int, scale: float, act=nn.ReLU,
                  dtype=torch.float64) -> nn.Module:
    layers: list[nn.Module] = []
    n = d
    for w in widths:
        layers += [nn.Linear(n, w), act()]
        n = w
    layers.append(nn.Linear(n, out))
    h = nn.Sequential(*layers).to(dtype).eval()
    with torch.no_grad():
        for p in h.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * scale / max(1, p.shape[-1]) ** 0.5)
    return h


def _margins(C: torch.Tensor, h: nn.Module, z: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.einsum("nmo,no->nm", C, h(z))


def _case(seed: int, scale: float, p: float, act=nn.ReLU):
    g = torch.Generator().manual_seed(seed)
    d, k, N = 5, 2, 6
    widths = [int(torch.randint(4, 24, (1,), generator=g)) for _ in range(int(torch.randint(0, 4, (1,), generator=g)))]
    out = 4
    h = _random_chain(g, d, widths, out, scale, act)
    z = torch.randn(N, d, generator=g, dtype=torch.float64) * scale
    B = torch.randn(d, k, generator=g, dtype=torch.float64)
    eps = torch.rand(N, generator=g, dtype=torch.float64) * 0.3 * scale
    C = torch.randn(N, 3, out, generator=g, dtype=torch.float64)
    return h, z, B, eps, p, C


@pytest.mark.parametrize("scale", [1.0, 1e3, 1e-3])
@pytest.mark.parametrize("p", [math.inf, 2.0, 1.0])
def test_allowance_is_sound_and_below_the_float64_bound(scale, p):
    """L − R ≤ the float64 engine's bound, and ≤ C·f(z) at points of the set (float64 forward),
    on random chains, including large-magnitude weights (scale 1e3 per layer) and tiny ones."""
    d_zero = None
    for seed in range(12):
        act = nn.LeakyReLU if seed % 4 == 3 else nn.ReLU
        h, z, B, eps, pp, C = _case(seed, scale, p, act)
        chain = chain_of(to_ops(h, (z.shape[1],), dtype=torch.float64))
        assert chain is not None
        d_zero = torch.zeros(C.shape[:2], dtype=torch.float64)
        for method in ("ibp", "crown-ibp"):
            lb, R = certified_lower(chain, z, B, eps, pp, C, d_zero, method)
            assert (R >= 0).all() and torch.isfinite(lb - R).all()
            ref = bound(h, LatentSet(z, B, eps, pp), C, method=method, bound_upper=False)[0]
            scale_out = ref.abs() + R + 1e-30
            # the float64 engine bound itself is exact up to ~1e-12 relative
            assert ((lb - R) <= ref + 1e-9 * scale_out).all(), (seed, method, (lb - R - ref).max())
            # soundness against concrete points of the set: corners of a δ cube inside the ball
            dirs = torch.randn(64, B.shape[1], generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
            dirs = dirs / torch.linalg.vector_norm(dirs, ord=pp, dim=1, keepdim=True)
            pts = z[:, None, :] + eps[:, None, None] * (dirs @ B.T)[None]  # N×64×d
            marg = _margins(C.repeat_interleave(64, 0), h, pts.reshape(-1, z.shape[1])).reshape(z.shape[0], 64, -1)
            assert ((lb - R) <= marg.amin(1) + 1e-9 * scale_out).all()


def test_allowance_covers_a_float32_rounded_head_of_a_float64_model():
    """A float64 head whose weights are not float32 numbers: the weight rounding is in R."""
    g = torch.Generator().manual_seed(7)
    h = _random_chain(g, 6, [32, 32], 5, 1.0)
    with torch.no_grad():
        for prm in h.parameters():
            prm.add_(1e-9 * torch.randn(prm.shape, generator=g, dtype=torch.float64))
    chain = chain_of(to_ops(h, (6,), dtype=torch.float64))
    assert any(L.w > 0 for L in chain.layers)
    z = torch.randn(20, 6, generator=g, dtype=torch.float64)
    B = torch.eye(6, dtype=torch.float64)[:, :3]
    eps = torch.full((20,), 0.05, dtype=torch.float64)
    C = torch.randn(20, 4, 5, generator=g, dtype=torch.float64)
    lb, R = certified_lower(chain, z, B, eps, math.inf, C, torch.zeros(20, 4, dtype=torch.float64))
    ref = bound(h, LatentSet(z, B, eps, math.inf), C, bound_upper=False)[0]
    assert ((lb - R) <= ref).all()
    # and R is far below the bounds themselves: tight enough to matter
    assert (R < 1e-3 * (ref.abs() + 1)).all()


def test_allowance_is_within_a_few_hundred_times_the_actual_rounding():
    """On a 3 × 256 head the allowance exceeds |float32 bound − float64 bound| by a bounded
    factor (a-priori bounds are worst cases; this keeps them from growing by orders of magnitude)."""
    g = torch.Generator().manual_seed(3)
    h = _random_chain(g, 16, [256, 256, 256], 10, 1.0, dtype=torch.float32)
    h64 = _random_chain(g, 16, [256, 256, 256], 10, 1.0)
    h64.load_state_dict({k: v.double() for k, v in h.state_dict().items()})
    z = torch.randn(64, 16, generator=g, dtype=torch.float64)
    B = torch.eye(16, dtype=torch.float64)[:, :4]
    eps = torch.full((64,), 0.05, dtype=torch.float64)
    C = torch.randn(64, 9, 10, generator=g, dtype=torch.float64).sign()
    chain = chain_of(to_ops(h64, (16,), dtype=torch.float64))
    lb, R = certified_lower(chain, z, B, eps, math.inf, C, torch.zeros(64, 9, dtype=torch.float64))
    ref = bound(h64, LatentSet(z, B, eps, math.inf), C, bound_upper=False)[0]
    r32 = bound(h, LatentSet(z.float(), B.float(), eps.float(), math.inf), C.float(), bound_upper=False)[0]
    allowance = ref - (lb - R)
    actual = (r32.double() - ref).abs()
    assert (allowance >= 0).all()
    assert float(allowance.median()) < 2000 * float(actual.median())
    # and a small fraction of the bounds themselves
    assert float(allowance.median()) < 1e-3 * float(ref.abs().median())


def _label_case(seed: int):
    g = torch.Generator().manual_seed(seed)
    d = int(torch.randint(2, 6, (1,), generator=g))
    width = int(torch.randint(4, 20, (1,), generator=g))
    depth = int(torch.randint(1, 3, (1,), generator=g))
    out = int(torch.randint(2, 5, (1,), generator=g))
    head = small_head(d=d, width=width, out=out, depth=depth, seed=seed,
                      dtype=torch.float32 if seed % 2 else torch.float64)
    z = torch.randn(24, d, generator=g, dtype=torch.float64)
    with torch.no_grad():
        y = head.double()(z).argmax(1) if seed % 2 == 0 else head(z.float()).argmax(1)
    flip = torch.rand(24, generator=g) < 0.2  # some clean mistakes
    y = torch.where(flip, (y + 1) % out, y)
    kind = Dims(list(range(min(d, 2)))) if seed % 3 else Basis(torch.randn(d, 2, generator=g, dtype=torch.float64))
    eps = sorted(float(e) for e in torch.rand(3, generator=g) * 0.6)
    return head, z, y, kind, eps


@pytest.mark.parametrize("method", ["crown-ibp", "ibp"])
def test_float32_verdicts_never_contradict_float64(method):
    """50 random heads and sets: every float32 'verified' is float64-verified; every float32
    'falsified' has a counterexample whose float64 margin replays ≤ 0."""
    verified32 = falsified32 = 0
    for seed in range(50):
        head, z, y, kind, eps = _label_case(seed)
        r32 = verify(head, z, y, kind, eps, method=method, precision="float32", radius=False, attack_steps=5)
        r64 = verify(head, z, y, kind, eps, method=method, precision="float64", radius=False, attack_steps=5)
        assert r32.precision == "float32" and r64.precision == "float64"
        v32, v64 = r32.verdicts, r64.verdicts
        assert not ((v32 == 1) & (v64 != 1)).any(), seed
        assert not ((v64 == 1) & (v32 == -1)).any(), seed
        verified32 += int((v32 == 1).sum())
        falsified32 += int((v32 == -1).sum())
        h64 = head.double()
        basis = kind.make(z, 0.0).basis
        for c in r32.counterexamples:
            zz = z[c.sample] + torch.tensor(c.delta, dtype=torch.float64) @ basis.T
            assert torch.allclose(zz, torch.tensor(c.z, dtype=torch.float64))
            assert float(torch.linalg.vector_norm(torch.tensor(c.delta), ord=kind.make(z, 0.0).p)) <= c.eps * (1 + 1e-9)
            with torch.no_grad():
                out = h64(zz[None])[0]
            yy = int(y[c.sample])
            others = torch.cat([out[:yy], out[yy + 1:]])
            assert float((out[yy] - others).min()) <= 0  # the label loses (or ties) at z
    assert verified32 > 100 and falsified32 > 100  # both verdicts occur


def test_precision_defaults_and_fallback():
    assert parse_precision(None, "cpu") == "float64"
    assert parse_precision(None, "cuda") == "float32"
    assert parse_precision("FP32", "cpu") == "float32"
    with pytest.raises(ValueError, match="precision"):
        parse_precision("half", "cpu")
    head = small_head(d=3, width=8, out=3, act=nn.Tanh)  # not a ReLU chain: bounded in float64
    z = torch.randn(5, 3, dtype=torch.float64)
    r = verify(head, z, head(z).argmax(1), Dims([0]), [0.1], precision="float32", radius=False)
    assert r.precision == "float64"
    assert r.to_dict()["precision"] == "float64"


def test_memory_budget_below_one_sample_is_a_clear_error():
    head = small_head(d=4, width=16, out=3)
    z = torch.randn(5, 4, dtype=torch.float64)
    with pytest.raises(AuditaiError, match=r"memory budget 100 bytes is too small for one sample.*needs about \d+ bytes"):
        verify(head, z, head(z).argmax(1), Dims([0, 1]), [0.1], memory_budget=100)
