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
    """Free variables introduced at one activation: its unstable neurons, per sample.

    A neuron's variable h lies between its relaxation lines; with its pre-activation
    z = GU·F + gU, the lower line is lo_d·(GU·F) + lo_e with lo_e = lo_d·gU + lo_b (upper alike).
    """

    off: int  # index of the first new free variable (= number of variables before)
    w: int  # padded count of unstable neurons
    lo_d: Tensor  # N×w (zero on padding)
    lo_e: Tensor
    up_d: Tensor
    up_e: Tensor
    GU: Tensor  # N×w×off: their pre-activation as a function of the earlier variables


def applies(ops: Sequence, in_shape: Tuple[int, ...]) -> bool:
    """Vector heads of Dense layers and ReLU/LeakyReLU over a δ of at most 64 dims."""
    return (
        len(in_shape) == 1
        and in_shape[0] <= 64
        and all(isinstance(op, (Dense, Activation)) for op in ops)
        and all(op.piecewise_linear for op in ops if isinstance(op, Activation))
    )


def _eliminate(coef: Tensor, bias: Tensor, layers: List[_Layer], eps: Tensor, p: float,
               upper: bool = False) -> Tensor:
    """Lower (or upper) bound of coef·F + bias over the set: substitute each layer's free
    variables by a relaxation line (lower line where the coefficient helps the bound, upper line
    where it hurts, as CROWN's backward pass does), then concretize δ by Hölder."""
    for L in reversed(layers):
        if L.w:
            a = coef[..., L.off : L.off + L.w]
            first = a >= 0 if not upper else a < 0
            d = torch.where(first, L.lo_d.unsqueeze(1), L.up_d.unsqueeze(1))
            e = torch.where(first, L.lo_e.unsqueeze(1), L.up_e.unsqueeze(1))
            bias = bias + (a * e).sum(-1)
            coef = torch.baddbmm(coef[..., : L.off], a * d, L.GU)
        else:
            coef = coef[..., : L.off]
    dev = eps.unsqueeze(1) * dual_norm(coef, p)
    return bias + dev if upper else bias - dev


def _rows_of(Gt: Tensor, idx: Tensor) -> Tensor:
    """Neurons idx (N×w) of the representation Gt (N×c×D, or a shared c×D): N×w×c."""
    if Gt.dim() == 2:
        return Gt.T[idx]
    n, c, _ = Gt.shape
    return Gt.gather(2, idx.unsqueeze(1).expand(n, c, idx.shape[1])).transpose(1, 2)


def _per_sample(mask: Tensor) -> Tuple[Tensor, Tensor, int]:
    """Indices of each sample's True entries padded to the widest sample, their validity, width."""
    counts = mask.sum(1)
    w = int(counts.max()) if mask.shape[0] else 0
    idx = torch.argsort(mask.to(torch.int8), dim=1, descending=True, stable=True)[:, :w]
    valid = torch.arange(w, device=mask.device).unsqueeze(0) < counts.unsqueeze(1)
    return idx, valid, w


def symbolic_crown(
    ops: Sequence, eps: Tensor, p: float, k: int, C: Optional[Tensor], bound_upper: bool
) -> Tuple[Tensor, Optional[Tensor]]:
    """Full CROWN bounds of C·f(δ) over ‖δ‖_p ≤ eps for prepared vector ops (see `applies`)."""
    n = eps.shape[0]
    dt, dev = eps.dtype, eps.device
    # Gt[v, j]: coefficient of free variable v in neuron j, stored variables × neurons so that a
    # Dense layer is one GEMM; shared (c×D) until the first activation makes it per sample
    Gt: Tensor = torch.eye(k, dtype=dt, device=dev)
    g: Tensor = torch.zeros(n, k, dtype=dt, device=dev)
    c_ibp = torch.zeros(n, k, dtype=dt, device=dev)
    r_ibp = eps.unsqueeze(1).expand(n, k)
    fresh = True
    layers: List[_Layer] = []
    nvars = k
    for op in ops:
        if isinstance(op, Dense):
            W = op.weight
            Gt = Gt @ W.T
            g = g @ W.T if op.bias is None else g @ W.T + op.bias
            if fresh:
                r_ibp = eps.unsqueeze(1) * dual_norm(W, p)
                c_ibp = op.forward(c_ibp)
                fresh = False
            else:
                c_ibp, r_ibp = op.forward(c_ibp), r_ibp @ _abs_weight(W).T
            continue
        # activation: CROWN bounds of the neurons IBP leaves unstable, intersected with IBP
        D = g.shape[1]
        l, u = c_ibp - r_ibp, c_ibp + r_ibp
        idx0, valid0, w0 = _per_sample((l < 0) & (u > 0))
        if w0:
            coef, bias = _rows_of(Gt, idx0), g.gather(1, idx0)
            lo_c = _eliminate(coef, bias, layers, eps, p)
            up_c = _eliminate(coef, bias, layers, eps, p, upper=True)
            li, ui = l.gather(1, idx0), u.gather(1, idx0)
            new_l = torch.where(valid0, torch.maximum(li, lo_c), li)
            new_u = torch.where(valid0, torch.maximum(torch.minimum(ui, up_c), new_l), ui)
            l, u = l.scatter(1, idx0, new_l), u.scatter(1, idx0, new_u)
        lo_d, lo_b, up_d, up_b = relax(op.kind, l, u, op.slope)
        unstable = (l < 0) & (u > 0)
        idx, valid_b, w = _per_sample(unstable)
        valid = valid_b.to(dt)
        GU = _rows_of(Gt, idx) * valid.unsqueeze(-1)

        def pick(t: Tensor) -> Tensor:
            return t.gather(1, idx) * valid

        layers.append(_Layer(nvars, w, pick(lo_d), pick(lo_d * g + lo_b), pick(up_d), pick(up_d * g + up_b), GU))
        # stable neurons map exactly: slope 1 (active), 0 or the leaky slope (inactive);
        # each unstable neuron becomes a new free variable of its own
        stable_slope = torch.where(unstable, torch.zeros_like(lo_d), lo_d)
        new = torch.zeros(n, w, D, dtype=dt, device=dev).scatter_(2, idx.unsqueeze(-1), valid.unsqueeze(-1))
        Gt = torch.cat([Gt * stable_slope.unsqueeze(1), new], dim=1)
        g = g * stable_slope
        nvars += w
        fl, fu = op.forward(l), op.forward(u)
        c_ibp, r_ibp = (fu + fl) * 0.5, (fu - fl) * 0.5
    # the output as a function of the free variables; spec rows folded in
    if C is None:
        coef, bias = (Gt.T.expand(n, *Gt.T.shape) if Gt.dim() == 2 else Gt.transpose(1, 2)), g
    elif C.dim() == 2:
        coef, bias = torch.matmul(Gt, C.T).transpose(-1, -2), g @ C.T
        if coef.dim() == 2:
            coef = coef.expand(n, *coef.shape)
    else:
        coef, bias = torch.matmul(C, Gt.transpose(-1, -2)), torch.einsum("nmo,no->nm", C, g)
    low = _eliminate(coef, bias, layers, eps, p)
    return low, (_eliminate(coef, bias, layers, eps, p, upper=True) if bound_upper else None)
