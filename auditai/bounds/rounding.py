"""Sound IBP and CROWN-IBP bounds computed in float32, with an outward rounding allowance.

For a chain head Dense → act → Dense → … → Dense (act: ReLU or LeakyReLU, BatchNorm folded)
`certified_lower` returns, per sample and spec row, a float64 number L − R such that
C·f(z) + d ≥ L − R for every z in the set, where f is the head with its float64 weights
evaluated in exact arithmetic. L is the bound the float32 pass computed, R the allowance.

Rounding model (Higham, *Accuracy and Stability of Numerical Algorithms*, §2.2 and Thm 3.5):
each float op has relative error ≤ u (u = 2⁻²⁴ in float32, 2⁻⁵³ in float64), and a dot
product of length n, in any summation order, has |fl(w·x) − w·x| ≤ γ_n·|w|·|x|,
γ_n = n·u/(1 − n·u). The allowance uses the *computed* quantities, so it is small:

- first layer, in float64: h₁ = W₁(z0 + Bδ) + b₁ = ĉ₁ + Ĝδ up to γ⁶⁴·‖W₁ᵢ‖₁(‖z0‖∞ + ε·max‖Bⱼ‖₁),
  its interval ĉ₁ ± ε‖Ĝᵢ‖_q rounded outward to float32 (nextafter);
- IBP layer j (in float64 by default, `forward64`; the same analysis with u = 2⁻²⁴ otherwise):
  the previous interval [l, u] (sound) is a box ĉ ± r̂ up to η = 2u·v, v = max(|l|, |u|)
  (|c| + r = v exactly); ĉ' = fl(Wĉ + b), r̂' = fl(|W|r̂), and the exact W a + b lies in
  ĉ' ± (r̂' + E), E = (γ_{n+1}(1 + 2u) + 2u + w)·|W|v + (γ_{n+1} + w)|b|, w = u(1 + u) when the
  weights are rounded copies (0 when exact). |W|v ≤ M = ‖Wᵢ‖₂·‖v‖₂ (Cauchy–Schwarz; |Wᵢ| and
  v are non-negative), which costs no matrix product. The intervals are then rounded outward
  to float32 (nextafter). In float32 the radii's γ_n errors would compound through the layers
  (measured: ~10⁴× the actual float32 rounding on a 1024-wide head), in float64 they vanish;
- CROWN backward in float32: the invariant C·out + d ≥ Λ·x_j + κ − R holds for the *computed*
  Λ, whatever rounding made it. A step Λ ↦ fl(Λ[Ŵ | b̂]) is a sum of products over blocks of
  b ≈ 4√n inner indices added one by one (`blocked_mm`), so every term passes at most
  b + n/b roundings and the step adds γ_{b+n/b+1}·|Λ|·(M + |b̂|) (+ w) to R instead of γ_n;
  an activation Λ ↦ fl(fl(Λ·lo) + fl(Λ⁻·(up − lo))) adds 4u·|Λ'|·v_h, v_h = max(|l|, |u|)
  (see `_activation_step`), and κ += Λ⁻·t (float32 blocks of 64, summed in float64) adds
  (γ_64 + γ⁶⁴)·|Λ⁻·t|. The relaxation lines are made valid exactly: exact lines on stable
  neurons; a lower line αh with α ∈ [slope, 1] holds everywhere; the upper line's intercept t
  is raised by its computed violations at l and u (σ minus a line is convex, so its maximum
  over [l, u] is at an end) plus their rounding;
- the folding of C into the last layer and the input step are done in float64 (γ⁶⁴ terms).

Every sum of non-negative terms in R is computed with a relative error below γ_{n+2}, covered
by the factor (1 + 8·γ_{n+8}) on R. Heads outside this chain are not handled here (`chain_of`
returns None): the caller bounds them in float64. Measured on the 5 × 1024 head of
benchmarks/bench_bounds.py (tests/verify/test_precision.py checks a 3 × 256 one): the allowance
is 450–490× the actual |float32 bound − float64 bound| (medians; 1.1e-3 on bounds of ~20).
CUDA: matmuls must not use TF32 (`torch.backends.cuda.matmul.allow_tf32` False, the default).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from auditai.errors import InputError
from auditai.names import parse_precision_name
from auditai.bounds.ops import Activation, Dense, dual_norm, fold_scale_shift
from auditai.bounds.relax import relax

U32 = 2.0 ** -24
U64 = 2.0 ** -53
PRECISIONS = ("float32", "float64")


def gamma(n: int, u: float = U32) -> float:
    """γ_n = n·u/(1 − n·u) (Higham Thm 3.5)."""
    nu = n * u
    return nu / (1.0 - nu) if nu < 1 else math.inf


def parse_precision(precision: str | None, device) -> str:
    """'float32' or 'float64'; None or "auto" means float32 on CUDA and float64 on CPU."""
    v = "auto" if precision is None else parse_precision_name(precision)
    if v == "auto":
        return "float32" if torch.device(device).type == "cuda" else "float64"
    return v


def _down(x: Tensor) -> Tensor:
    return torch.nextafter(x, torch.full_like(x, -math.inf))


def _up(x: Tensor) -> Tensor:
    return torch.nextafter(x, torch.full_like(x, math.inf))


def block_size(n: int) -> int:
    """About 4·√n, a power of two in [32, 128]: the depth block + n/block stays within ~2× of
    its minimum (2√n) while each product keeps an inner dimension long enough to run fast."""
    return int(min(128, max(32, 2 ** round(math.log2(4 * math.sqrt(max(n, 1)))))))


def blocked_mm(A: Tensor, W: Tensor, block: int | None = None) -> tuple[Tensor, int]:
    """(A @ W, depth): the product as a sum of products over blocks of `block` inner indices,
    added one by one. Each term passes at most `depth` = block + blocks roundings, whatever
    order the library sums a block in, so the error is ≤ γ_depth·|A||W| instead of γ_n
    (n the inner length). A: (R, n), W: (n, out)."""
    n = A.shape[-1]
    block = block_size(n) if block is None else block
    if n <= 2 * block:
        return A @ W, n
    acc = A[:, :block] @ W[:block]
    buf = torch.empty_like(acc)
    blocks = 1
    for s in range(block, n, block):
        torch.matmul(A[:, s:s + block], W[s:s + block], out=buf)
        acc.add_(buf)
        blocks += 1
    return acc, block + blocks


def v_len(A: Tensor) -> int:
    return A.shape[-1] + 2


def _rows(A: Tensor, v: Tensor) -> Tensor:
    """A (N×m×n) times v (N×n) → N×m."""
    return torch.einsum("nmi,ni->nm", A, v)


@dataclass
class Layer:
    W64: Tensor
    b64: Tensor | None
    W: Tensor  # float32
    b: Tensor | None
    w: float  # u(1+u) when W, b are rounded copies, else 0
    row_norm: Tensor  # upper bound of ‖Ŵᵢ‖₂ (float32)
    row_norm64: Tensor  # upper bound of ‖W64ᵢ‖₂ (float64)
    W64abs: Tensor
    Wb: Tensor  # [Ŵ | b̂] (out × in+1), float32: the bias term rides along the backward product


class Float32Chain:
    """A Dense/ReLU chain prepared for `certified_lower` (float64 and float32 weights)."""

    def __init__(self, dense: list[Dense], acts: list[Activation]) -> None:
        self.layers: list[Layer] = []
        for op in dense:
            W64 = op.weight.detach().double()
            b64 = None if op.bias is None else op.bias.detach().double()
            W = W64.float()
            b = None if b64 is None else b64.float()
            exact = torch.equal(W.double(), W64) and (b is None or torch.equal(b.double(), b64))
            n = W.shape[1]
            rn = torch.linalg.vector_norm(W, dim=1) * (1 + gamma(n + 4))
            rn64 = torch.linalg.vector_norm(W64, dim=1) * (1 + gamma(n + 4, U64))
            Wb = W if b is None else torch.cat([W, b[:, None]], 1)
            self.layers.append(Layer(W64, b64, W, b, 0.0 if exact else U32 * (1 + U32), _up(rn), _up(rn64),
                                     W64.abs(), Wb))
        self.acts = acts

    @property
    def widths(self) -> list[int]:
        return [L.W.shape[0] for L in self.layers]


def chain_of(ops: list) -> Float32Chain | None:
    """The chain when `ops` (float64 engine ops) are Dense (act Dense)*, else None."""
    ops = fold_scale_shift(list(ops))
    if not ops or len(ops) % 2 == 0:
        return None
    dense, acts = ops[0::2], ops[1::2]
    if not all(isinstance(o, Dense) and (o.bias is None or o.bias.dim() == 1) for o in dense):
        return None
    if not all(isinstance(a, Activation) and a.kind in ("relu", "leaky_relu") for a in acts):
        return None
    return Float32Chain(dense, acts)


def _act_interval(a: Activation, l: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    if a.kind == "relu":  # exact in floating point
        return torch.relu(l), torch.relu(u)
    s = a.slope
    return _down(torch.nn.functional.leaky_relu(l, s)), _up(torch.nn.functional.leaky_relu(u, s))


def _widen(c: Tensor, r: Tensor, E: Tensor) -> tuple[Tensor, Tensor]:
    """A float32 interval containing [c − r − E, c + r + E] (exact reals): outward nextafter
    after every rounded operation."""
    lo = _down(_down(c - r) - E)
    hi = _up(_up(c + r) + E)
    return lo, hi


@torch.no_grad()
def certified_lower(chain: Float32Chain, z: Tensor, B: Tensor, eps: Tensor, p: float, C: Tensor,
                    d: Tensor, method: str = "crown-ibp", forward64: bool = True) -> tuple[Tensor, Tensor]:
    """(L, R), both N×m float64: C·f(z0 + Bδ) + d ≥ L − R for every ‖δ‖_p ≤ ε (module doc).

    z: N×d codes, B: d×k, eps: N, C: N×m×out, d: N×m (float64). method: 'ibp' or 'crown-ibp'.
    """
    if method not in ("ibp", "crown-ibp"):
        raise InputError(f"float32 bounds support ibp and crown-ibp, not {method!r}")
    if z.device.type == "cuda" and (torch.backends.cuda.matmul.allow_tf32
                                    or torch.get_float32_matmul_precision() != "highest"):
        raise InputError("float32 bounds need IEEE float32 products: TF32 matmuls are enabled "
                         "(torch.set_float32_matmul_precision('highest') turns them off)")
    z, B, eps, C, d = z.double(), B.double(), eps.double(), C.double(), d.double()
    Ls = chain.layers
    n_batch, k = z.shape[0], B.shape[1]
    # ---- first layer in float64: h1 = c1 + G δ
    L1 = Ls[0]
    dim = L1.W64.shape[1]
    G = L1.W64 @ B  # n1×k
    c1 = z @ L1.W64.T + (L1.b64 if L1.b64 is not None else 0.0)
    g64 = gamma(dim + k + 4, U64)
    zmax = z.abs().amax(dim=1, keepdim=True)
    bmax = B.abs().sum(dim=1).amax()
    e64 = g64 * (L1.W64.abs().sum(dim=1)[None] * (zmax + eps[:, None] * bmax)
                 + (L1.b64.abs()[None] if L1.b64 is not None else 0.0)) * 2
    r1 = eps[:, None] * dual_norm(G, p)[None] * (1 + gamma(k + 4, U64))
    slack = e64 + 4 * U64 * (c1.abs() + r1)
    uf = U64 if forward64 else U32
    lo, hi = (c1 - r1 - slack), (c1 + r1 + slack)
    if not forward64:
        lo, hi = _down(lo.float()), _up(hi.float())
    pre: list[tuple[Tensor, Tensor]] = [(lo, hi)]
    # ---- IBP forward (float64 by default: its radii carry γ_n relative errors through every layer)
    for j in range(1, len(Ls) - 1):
        al, au = _act_interval(chain.acts[j - 1], *pre[-1])
        v = torch.maximum(al.abs(), au.abs())
        Lj = Ls[j]
        W, b = (Lj.W64, Lj.b64) if forward64 else (Lj.W, Lj.b)
        w = 0.0 if forward64 else Lj.w
        n = W.shape[1]
        rn = Lj.row_norm64 if forward64 else Lj.row_norm
        vn = _up(torch.linalg.vector_norm(v, dim=1, keepdim=True) * (1 + gamma(n + 4, uf)))
        M = _up(rn[None] * vn)  # ≥ |W| v (Cauchy–Schwarz)
        bab = b.abs()[None] if b is not None else torch.zeros_like(M[:, :1])
        cf = gamma(n + 1, uf) * (1 + 2 * uf) + 2 * uf + w
        c = (al + au) / 2
        r = (au - al) / 2
        cc = c @ W.T if b is None else torch.addmm(b, c, W.T)
        rr = r @ (Lj.W64abs if forward64 else W.abs()).T
        E = _up((cf * M + (gamma(n + 1, uf) + w) * bab) * (1 + 8 * uf))
        pre.append(_widen(cc, rr, E))
    if forward64:
        pre = [(_down(l.float()), _up(u.float())) for l, u in pre]
    post: list[tuple[Tensor, Tensor, Tensor]] = []
    mags: list[Tensor] = []  # upper bounds of ‖v‖₂ at the input of Dense j ≥ 1 (index j−1), N×1
    for j in range(1, len(Ls)):
        al, au = _act_interval(chain.acts[j - 1], *pre[j - 1])
        v = torch.maximum(al.abs(), au.abs())
        post.append((al, au, v))
        n = v.shape[1]
        mags.append(_up(torch.linalg.vector_norm(v, dim=1, keepdim=True) * (1 + gamma(n + 4))))
    last = Ls[-1]
    out = last.W64.shape[0]
    gC = gamma(out + 4, U64)
    Cabs = C.abs()
    if len(Ls) == 1:  # one affine layer: exact over the ball up to float64 rounding
        A = torch.einsum("nmo,ok->nmk", C, G)
        lb = _rows(C, c1) - eps[:, None] * dual_norm(A, p, 1) + d
        R = 4 * gC * (_rows(Cabs, c1.abs() + e64 + r1) + eps[:, None] * A.abs().sum(-1)) + _rows(Cabs, e64)
        return lb, R
    al, au, v = post[-1]
    v64 = v.double()
    wv = v64 @ last.W64.abs().T + (last.b64.abs() if last.b64 is not None else 0.0)  # N×out
    GL = torch.einsum("nmo,oi->nmi", C, last.W64)
    g = _rows(C, last.b64[None].expand(n_batch, -1)) if last.b64 is not None else torch.zeros_like(d)
    if method == "ibp":
        cm = (al.double() + au.double()) / 2
        rm = (au.double() - al.double()) / 2
        lb = _rows(GL, cm) - _rows(GL.abs(), rm) + g + d
        R = 4 * gamma(v.shape[1] + out + 8, U64) * (_rows(Cabs, wv) + _rows(GL.abs(), v64) + d.abs())
        return lb, R
    # ---- CROWN backward in float32, from the input of the last Dense (C·W_L folded in float64)
    Lam = GL.float()
    kappa = g + d
    R = _rows(Cabs, wv) * (2 * gC) + d.abs() * (4 * U64)
    R = R + (U32 * (1 + U32)) * _rows(Lam.abs(), v).double()
    for i in range(len(Ls) - 2, -1, -1):
        Lam, kappa, R, vh = _activation_step(chain.acts[i], pre[i], post[i], Lam, kappa, R)
        if i == 0:
            break
        Li = Ls[i]  # Λ ↦ fl(Λ[Ŵ | b̂]) blocked: the bias term is the last column
        N_, m_, n_ = Lam.shape
        prod, depth = blocked_mm(Lam.reshape(-1, n_), Li.Wb)
        cf = gamma(depth + 1) * (1 + 2 * U32) + Li.w
        # one pass over |Λ'| for both: the activation step's rounding ≤ 4u·|Λ'|·v_h (see
        # _activation_step) and this product's ≤ γ_depth·|Λ'|·(|Ŵ|·v + |b̂|) (Cauchy–Schwarz:
        # |Ŵ|v ≤ ‖Ŵᵢ‖₂‖v‖₂); the weights are rounded up, and the float32 sums of non-negative
        # terms are covered by the (1 + 2γ_{n+4}) factor
        wts = Li.row_norm[None] * mags[i - 1] + (Li.b.abs()[None] if Li.b is not None else 0.0)
        wts = _up(_up(cf * (1 + 8 * U32) * wts) + _up(4 * U32 * vh))
        R = R + (1 + 2 * gamma(n_ + 8)) * _rows(Lam.abs(), wts).double()
        if Li.b is not None:
            kappa = kappa + prod[:, -1].reshape(N_, m_).double()
            prod = prod[:, :-1]
        Lam = prod.reshape(N_, m_, -1)
    R = R + 4 * U32 * (1 + 2 * gamma(Lam.shape[2] + 4)) * _rows(Lam.abs(), vh).double()
    return _input_step(chain, Lam, kappa, R, c1, G, e64, eps, p)


def blocked_rows(A: Tensor, v: Tensor, block: int = 64) -> Tensor:
    """Σᵢ A[n, m, i]·v[n, i] as float64 (N×m): float32 products over blocks of `block` indices,
    the blocks added in float64: error ≤ (γ_block + γ⁶⁴_n)·|A|·|v|."""
    n = A.shape[-1]
    acc = None
    for s in range(0, n, block):
        part = torch.bmm(A[:, :, s:s + block], v[:, s:s + block, None]).squeeze(2).double()
        acc = part if acc is None else acc + part
    return acc


def _lines(act: Activation, l: Tensor, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(lower slope, upper slope, upper intercept) of σ on [l, u]: relax()'s lines, exact ones
    on stable neurons (σ is linear there), so only unstable neurons carry an intercept."""
    lo_d, _, up_d, up_b = relax(act.kind, l, u, act.slope)
    s = 0.0 if act.kind == "relu" else act.slope
    on, off = l >= 0, u <= 0
    lo_d = torch.where(on, 1.0, torch.where(off, s, lo_d))
    up_d = torch.where(on, 1.0, torch.where(off, s, up_d))
    up_b = torch.where(on | off, 0.0, up_b)
    return lo_d, up_d, up_b


def _activation_step(act: Activation, pre: tuple[Tensor, Tensor], post: tuple[Tensor, Tensor, Tensor],
                     Lam: Tensor, kappa: Tensor, R: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Λ·σ(h) ≥ Λ'·h + Λ⁻·t on [l, u] with valid lines; returns (Λ', κ, R, v_h) (module doc).

    Λ' = fl(fl(Λ·lo) + fl(Λ⁻·δ̂)), δ̂ = fl(up − lo): the upper slope used is lo + δ̂ (within
    u·|up| of up, covered by the intercept's pad). Where lo = 1 the relaxation has up > 1/2, so
    |Λ| ≤ 2|Λ·up|; elsewhere both terms have one sign: either way Λ' differs from the exact
    Λ·lo + Λ⁻·δ̂ by ≤ 4u·|Λ'|, which the caller adds as 4u·|Λ'|·v_h, v_h = max(|l|, |u|)."""
    l, u = pre
    al, au, _v = post
    lo_d, up_d, up_b = _lines(act, l, u)
    diff = up_d - lo_d
    # the upper line s·h + t must lie above σ on [l, u]: raise t by its end violations
    vl = al - (up_d * l + up_b)
    vu = au - (up_d * u + up_b)
    vh = torch.maximum(l.abs(), u.abs())
    unstable = (l < 0) & (u > 0)
    pad = 6 * U32 * (au.abs() + al.abs() + up_d.abs() * vh + up_b.abs())
    t = torch.where(unstable, _up(up_b + torch.clamp(torch.maximum(vl, vu), min=0) + pad), 0.0)  # ≥ 0
    neg = Lam.clamp(max=0)
    kt = blocked_rows(neg, t)  # Λ⁻·t ≤ 0, one sign: |error| ≤ (γ_64 + γ⁶⁴)·|Λ⁻·t|
    kappa = kappa + kt
    R = R + (gamma(66) + gamma(v_len(neg) + 66, U64)) * (1 + 4 * U32) * kt.abs()
    Lam.mul_(lo_d.unsqueeze(1))  # Λ is this pass's own tensor
    Lam.addcmul_(neg, diff.unsqueeze(1))
    return Lam, kappa, R, vh


def _input_step(chain: Float32Chain, Lam: Tensor, kappa: Tensor, R: Tensor, c1: Tensor, G: Tensor,
                e64: Tensor, eps: Tensor, p: float) -> tuple[Tensor, Tensor]:
    """Λ·h1 = Λ(c1 + Gδ) up to |Λ|·e64, concretized over the ball in float64."""
    L64 = Lam.double()
    A = torch.einsum("nmi,ik->nmk", L64, G)
    lb = kappa + _rows(L64, c1) - eps[:, None] * dual_norm(A, p, 1)
    n1, k = G.shape
    g64 = gamma(n1 + k + 8, U64)
    R = R + _rows(L64.abs(), e64) + 4 * g64 * (_rows(L64.abs(), c1.abs() + eps[:, None] * G.abs().sum(1)[None])
                                            + kappa.abs() + lb.abs())
    return lb, R * (1 + 8 * gamma(max(chain.widths) + 8))
