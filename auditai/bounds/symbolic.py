"""Full CROWN for piecewise-linear vector heads over low-dimensional latent sets, fast.

CROWN's backward pass multiplies spec rows through every layer: for intermediate bounds that
is one pass per neuron, the cost that makes full CROWN slow. Here the same numbers come from
a different association of the same products. Each pre-activation z_j is kept as an affine
function of *free variables*: δ (k of them) and one variable per neuron that is unstable in
an earlier layer (ReLU on a stable neuron is an exact linear map, so it stays inside the
function). A bound on a row a·z_j starts from a·G_j and eliminates the free variables layer
by layer, latest first: a neuron's variable is replaced by its lower relaxation line where
its coefficient is ≥ 0 and by its upper line where it is < 0, exactly the choice CROWN's
backward pass makes for that neuron, with the same coefficient. So the bounds equal CROWN's
(up to rounding) while the work scales with the number of unstable neurons per sample, not
with the width. Each intermediate bound is also intersected with the IBP bound from the
already tightened layer before it (both sound). Samples are independent: unstable sets are
gathered per sample and padded to the widest sample, so chunking never changes a result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from auditai.bounds.ops import Activation, Dense, _abs_weight, dual_norm
from auditai.bounds.relax import relax


@dataclass
class _Layer:
    """Free variables introduced at one activation: its unstable neurons, per sample."""

    off: int  # index of the first new free variable (= number of variables before)
    w: int  # padded count of unstable neurons
    lo_d: Tensor  # N×w relaxation lines of those neurons (zero on padding)
    lo_b: Tensor
    up_d: Tensor
    up_b: Tensor
    GU: Tensor  # N×w×off: their pre-activation as a function of the earlier variables
    gU: Tensor  # N×w


def applies(ops: Sequence, in_shape: Tuple[int, ...]) -> bool:
    """Vector heads of Dense layers and ReLU/LeakyReLU over a δ of at most 64 dims."""
    return (
        len(in_shape) == 1
        and in_shape[0] <= 64
        and all(isinstance(op, (Dense, Activation)) for op in ops)
        and all(op.piecewise_linear for op in ops if isinstance(op, Activation))
    )


def _eliminate(coef: Tensor, bias: Tensor, layers: List[_Layer], eps: Tensor, p: float) -> Tensor:
    """Lower bound of coef·F + bias over the set: substitute relaxations, then Hölder."""
    for L in reversed(layers):
        if L.w:
            a = coef[..., L.off : L.off + L.w]
            pos = a >= 0
            d = torch.where(pos, L.lo_d.unsqueeze(1), L.up_d.unsqueeze(1))
            b = torch.where(pos, L.lo_b.unsqueeze(1), L.up_b.unsqueeze(1))
            ad = a * d
            bias = bias + (ad * L.gU.unsqueeze(1)).sum(-1) + (a * b).sum(-1)
            coef = torch.baddbmm(coef[..., : L.off], ad, L.GU)
        else:
            coef = coef[..., : L.off]
    return bias - eps.unsqueeze(1) * dual_norm(coef, p)


def symbolic_crown(
    ops: Sequence, eps: Tensor, p: float, k: int, C: Optional[Tensor], bound_upper: bool
) -> Tuple[Tensor, Optional[Tensor]]:
    """Full CROWN bounds of C·f(δ) over ‖δ‖_p ≤ eps for prepared vector ops (see `applies`)."""
    n = eps.shape[0]
    dt, dev = eps.dtype, eps.device
    G: Tensor = torch.eye(k, dtype=dt, device=dev)  # shared k×k until it becomes per-sample
    g: Tensor = torch.zeros(n, k, dtype=dt, device=dev)
    c_ibp = torch.zeros(n, k, dtype=dt, device=dev)
    r_ibp = eps.unsqueeze(1).expand(n, k)
    fresh = True
    layers: List[_Layer] = []
    nvars = k
    for op in ops:
        if isinstance(op, Dense):
            W = op.weight
            G = W @ G if G.dim() == 2 else torch.matmul(W, G)
            g = g @ W.T if op.bias is None else g @ W.T + op.bias
            if fresh:
                r_ibp = eps.unsqueeze(1) * dual_norm(W, p)
                c_ibp = op.forward(c_ibp)
                fresh = False
            else:
                c_ibp, r_ibp = op.forward(c_ibp), r_ibp @ _abs_weight(W).T
            continue
        # activation: CROWN bounds of every neuron, intersected with IBP
        D = g.shape[1]
        Gb = G.unsqueeze(0).expand(n, *G.shape) if G.dim() == 2 else G
        coef = torch.cat([Gb, -Gb], dim=1)
        bias = torch.cat([g, -g], dim=1)
        low = _eliminate(coef, bias, layers, eps, p)
        l = torch.maximum(c_ibp - r_ibp, low[:, :D])
        u = torch.minimum(c_ibp + r_ibp, -low[:, D:])
        u = torch.maximum(u, l)
        lo_d, lo_b, up_d, up_b = relax(op.kind, l, u, op.slope)
        unstable = (l < 0) & (u > 0)
        counts = unstable.sum(1)
        w = int(counts.max()) if n else 0
        idx = torch.argsort(unstable.to(torch.int8), dim=1, descending=True, stable=True)[:, :w]
        valid = (torch.arange(w, device=dev).unsqueeze(0) < counts.unsqueeze(1)).to(dt)
        GU = Gb.gather(1, idx.unsqueeze(-1).expand(n, w, Gb.shape[2])) * valid.unsqueeze(-1)
        layers.append(_Layer(
            nvars, w,
            lo_d.gather(1, idx) * valid, lo_b.gather(1, idx) * valid,
            up_d.gather(1, idx) * valid, up_b.gather(1, idx) * valid,
            GU, g.gather(1, idx) * valid,
        ))
        # stable neurons map exactly: slope 1 (active), 0 or the leaky slope (inactive)
        stable_slope = torch.where(unstable, torch.zeros_like(lo_d), lo_d)
        G = torch.cat([Gb * stable_slope.unsqueeze(-1),
                       torch.zeros(n, D, w, dtype=dt, device=dev)], dim=2)
        if w:
            rows = idx.unsqueeze(-1)  # N×w×1: neuron of each new variable
            cols = (nvars + torch.arange(w, device=dev)).view(1, w, 1).expand(n, w, 1)
            G[torch.arange(n, device=dev).view(n, 1, 1), rows, cols] = valid.unsqueeze(-1)
        g = g * stable_slope
        nvars += w
        fl, fu = op.forward(l), op.forward(u)
        c_ibp, r_ibp = (fu + fl) * 0.5, (fu - fl) * 0.5
    # the output as a function of the free variables; spec rows folded in
    Gb = G.unsqueeze(0).expand(n, *G.shape) if G.dim() == 2 else G
    if C is None:
        coef, bias = Gb, g
    elif C.dim() == 2:
        coef, bias = torch.matmul(C, Gb), g @ C.T
    else:
        coef, bias = torch.bmm(C, Gb), torch.einsum("nmo,no->nm", C, g)
    m = coef.shape[1]
    if bound_upper:
        coef, bias = torch.cat([coef, -coef], dim=1), torch.cat([bias, -bias], dim=1)
    low = _eliminate(coef, bias, layers, eps, p)
    if not bound_upper:
        return low, None
    return low[:, :m], -low[:, m:]
