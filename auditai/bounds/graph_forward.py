"""Forward-mode linear bounds through the graph IR, for inputs that move in few directions.

When the input set is x = x0 + M·δ with few columns k (a latent set through a generator, a box
with few perturbed coordinates), every node's value v is kept between two affine functions of δ:
Lw·δ + Lb ≤ v ≤ Uw·δ + Ub (Lw, Uw: (N, k, *shape)). Affine ops map them with their positive and
negative weight parts; activations use the same relaxation lines as CROWN (valid on the node's
interval), picking the input's lower or upper function by the sign of the line's slope; an op
without a forward rule here falls back to its interval (constant functions), which is always
valid. Each node's interval is its IBP interval intersected with the concretized functions.
The final bound is CROWN's backward pass from the spec rows C with these intermediate bounds, so
the work is O(k·width) per node instead of O(width²) for CROWN's intermediate passes. Sound for
the same reasons as CROWN; usually somewhat looser than full CROWN, much tighter than CROWN-IBP.
"""

from __future__ import annotations

import torch
from torch import Tensor

from auditai.bounds.graph import ACTIVATIONS, Graph, Node, apply, num_elements
from auditai.bounds.graph_bounds import InputMap, _ibp_node, _Relax, _relaxation, backward_output
from auditai.bounds.ops import dual_norm

_POSITIVE_MAPS = {"reshape", "permute", "slice", "identity", "pad", "avgpool", "upsample", "mean"}
_WEIGHTED = {"linear", "conv", "conv_transpose"}
MAX_FORWARD_DIMS = 64


def input_columns(im: InputMap) -> Tensor | None:
    """M (N or 1, k, *in) with x = x0 + M·δ, or None when k would exceed MAX_FORWARD_DIMS."""
    shape = im.x0.shape[1:]
    D = num_elements(shape)
    if im.basis is not None:
        k = im.basis.shape[1]
        return None if k > MAX_FORWARD_DIMS else im.basis.T.reshape(1, k, *shape).to(im.x0.dtype)
    if im.scale is None:
        if D > MAX_FORWARD_DIMS:
            return None
        return torch.eye(D, dtype=im.x0.dtype, device=im.x0.device).reshape(1, D, *shape)
    s = im.scale.reshape(-1, D) if im.scale.dim() > len(shape) else im.scale.reshape(1, D)
    cols = (s != 0).any(dim=0).nonzero().flatten()
    k = cols.numel()
    if k > MAX_FORWARD_DIMS:
        return None
    M = torch.zeros(s.shape[0], k, D, dtype=im.x0.dtype, device=im.x0.device)
    M[:, torch.arange(k), cols] = s[:, cols]
    return M.reshape(s.shape[0], k, *shape)


def _map(fn, w: Tensor) -> Tensor:
    """fn over (N, k, *s) with k folded into the batch."""
    n, k = w.shape[:2]
    out = fn(w.reshape(n * k, *w.shape[2:]))
    return out.reshape(n, k, *out.shape[1:])


def _signed(n: Node) -> tuple[Node, Node]:
    w = n.consts["weight"]
    mk = lambda t: Node(n.name, n.op, n.inputs, n.attrs, {"weight": t}, n.shape)
    return mk(w.clamp(min=0)), mk(w.clamp(max=0))


def _concretize(w: Tensor, b: Tensor, im: InputMap, upper: bool) -> Tensor:
    """min (or max) over ‖δ‖_p ≤ eps of w·δ + b, per element: (N, *s)."""
    n, k = w.shape[:2]
    dn = dual_norm(w.reshape(n, k, -1).transpose(1, 2), im.p).reshape(n, *b.shape[1:])
    e = im.eps.reshape(-1, *([1] * (b.dim() - 1)))
    return b + e * dn if upper else b - e * dn


def forward_bounds(g: Graph, im: InputMap, M: Tensor) -> list[tuple[Tensor, Tensor]]:
    """Intervals of every node: IBP intersected with the forward linear bounds."""
    N = im.n
    ivs: list[tuple[Tensor, Tensor] | None] = [None] * len(g.nodes)
    lin: list[tuple | None] = [None] * len(g.nodes)
    ivs[0] = im.interval()
    M = M.expand(N, *M.shape[1:])
    lin[0] = (M, im.x0, M, im.x0)
    for i in range(1, len(g.nodes)):
        n = g.nodes[i]
        ins = [lin[j] for j in n.inputs]
        ib = _ibp_node(n, [ivs[j] for j in n.inputs])
        out = None
        op = n.op
        if op in _WEIGHTED and all(x is not None for x in ins):
            Lw, Lb, Uw, Ub = ins[0]
            pos, neg = _signed(n)
            zero_in = torch.zeros(1, *g.nodes[n.inputs[0]].shape, dtype=Lb.dtype, device=Lb.device)
            bias = apply(n, zero_in)
            fp, fn = (lambda x, m=pos: apply(m, x)), (lambda x, m=neg: apply(m, x))
            out = (_map(fp, Lw) + _map(fn, Uw), fp(Lb) + fn(Ub) + bias,
                   _map(fp, Uw) + _map(fn, Lw), fp(Ub) + fn(Lb) + bias)
        elif op in _POSITIVE_MAPS and ins[0] is not None:
            Lw, Lb, Uw, Ub = ins[0]
            base = Node(n.name, n.op, n.inputs, {**n.attrs, "value": 0.0} if op == "pad" else n.attrs, n.consts, n.shape)
            f = lambda x, m=base: apply(m, x)
            out = (_map(f, Lw), f(Lb), _map(f, Uw), f(Ub))
            if op == "pad" and float(n.attrs.get("value", 0.0)) != 0.0:
                out = None  # a constant fill: use the interval
        elif op in ("add", "sub") and all(x is not None for x in ins):
            (a, b, c, d), (e, f_, g_, h) = ins
            out = (a + e, b + f_, c + g_, d + h) if op == "add" else (a - g_, b - h, c - e, d - f_)
        elif op == "neg" and ins[0] is not None:
            Lw, Lb, Uw, Ub = ins[0]
            out = (-Uw, -Ub, -Lw, -Lb)
        elif op in ("scale_shift", "mul_const") and ins[0] is not None:
            Lw, Lb, Uw, Ub = ins[0]
            sc = n.consts.get("scale") if op == "scale_shift" else n.consts["value"]
            sh = n.consts.get("shift") if op == "scale_shift" else None
            sp = torch.ones_like(Lb) if sc is None else sc.clamp(min=0)
            sn = torch.zeros_like(Lb) if sc is None else sc.clamp(max=0)
            sh = 0.0 if sh is None else sh
            out = (sp * Lw + sn * Uw, sp * Lb + sn * Ub + sh, sp * Uw + sn * Lw, sp * Ub + sn * Lb + sh)
        elif op == "add_const" and ins[0] is not None:
            Lw, Lb, Uw, Ub = ins[0]
            out = (Lw, Lb + n.consts["value"], Uw, Ub + n.consts["value"])
        elif op in ACTIVATIONS and ins[0] is not None:
            Lw, Lb, Uw, Ub = ins[0]
            l, u = ivs[n.inputs[0]]
            lo_d, lo_b, up_d, up_b = _relaxation(n, l, u)
            lp, ln_ = lo_d.clamp(min=0), lo_d.clamp(max=0)
            up, un = up_d.clamp(min=0), up_d.clamp(max=0)
            out = (lp.unsqueeze(1) * Lw + ln_.unsqueeze(1) * Uw, lp * Lb + ln_ * Ub + lo_b,
                   up.unsqueeze(1) * Uw + un.unsqueeze(1) * Lw, up * Ub + un * Lb + up_b)
        if out is None:  # no forward rule: the interval, as constant functions
            z = torch.zeros(N, M.shape[1], *n.shape, dtype=ib[0].dtype, device=ib[0].device)
            lin[i] = (z, ib[0], z, ib[1])
            ivs[i] = ib
            continue
        lin[i] = out
        lo = torch.maximum(ib[0], _concretize(out[0], out[1], im, upper=False))
        hi = torch.minimum(ib[1], _concretize(out[2], out[3], im, upper=True))
        ivs[i] = (lo, torch.maximum(hi, lo))
    return ivs  # type: ignore[return-value]


def bound_graph_forward(g: Graph, im: InputMap, C: Tensor | None,
                        bound_upper: bool = True) -> tuple[Tensor, Tensor | None] | None:
    """Bounds of C·g(x) (C (m, out) or (N, m, out)) with forward intermediate bounds and a CROWN
    backward pass from C; None when the set moves in more than MAX_FORWARD_DIMS directions."""
    M = input_columns(im)
    if M is None:
        return None
    ivs = forward_bounds(g, im, M)
    return backward_output(g, im, _Relax(g, ivs), C, bound_upper)
