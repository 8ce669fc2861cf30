"""IBP, CROWN-IBP and CROWN over the graph IR (graph.py), for heads that are not chains.

The input x of the graph is an affine image of an ℓp ball: x = x0 + B·δ (a latent set's basis),
x = x0 + s⊙δ (a box given per element, `bound_box`) or x = x0 + δ, with ‖δ‖_p ≤ ε per sample.
- IBP: node by node, intervals; the input map's interval is exact per coordinate (Hölder).
- CROWN: a backward pass from the spec rows in reverse topological order; where a node has
  several consumers their coefficients add up; a linear node maps coefficients by its
  vector-Jacobian product (its bias is the node at 0), linear and conv by hand; a nonlinear
  node by its relaxation lines (lower line where the coefficient is ≥ 0, upper where < 0).
  Intermediate bounds at the inputs of nonlinear nodes from IBP (CROWN-IBP) or from CROWN
  itself intersected with IBP (CROWN). Same definitions as auto_LiRPA's methods.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from auditai.bounds.graph import ACTIVATIONS, NONLINEAR_OPS, Graph, Node, apply, num_elements
from auditai.bounds.maxpool import maxpool_backward, maxpool_relaxation
from auditai.bounds.ops import dual_norm
from auditai.bounds.relax import (
    convex_increasing_relaxation,
    hardtanh_relaxation,
    kinked_interval,
    leaky_relu_relaxation,
    quasi_convex_relaxation,
    relax,
    softplus_interval,
    softplus_relaxation,
)
from auditai.errors import UnsupportedLayerError

Interval = Tuple[Tensor, Tensor]


@dataclass
class InputMap:
    """x = x0 + B·δ (basis: flat-in × k), x0 + scale⊙δ, or x0 + δ; ‖δ‖_p ≤ eps per sample."""

    x0: Tensor                       # (N, *in)
    eps: Tensor                      # (N,)
    p: float
    basis: Optional[Tensor] = None   # (prod(in), k)
    scale: Optional[Tensor] = None   # (N, *in) or (*in)

    @property
    def n(self) -> int:
        return self.x0.shape[0]

    def interval(self) -> Interval:
        """Exact per-coordinate interval of x over the ball."""
        e = self.eps.reshape(-1, *([1] * (self.x0.dim() - 1)))
        if self.basis is not None:
            r = (self.eps.unsqueeze(1) * dual_norm(self.basis, self.p).unsqueeze(0)).reshape(self.x0.shape)
        elif self.scale is not None:
            r = e * self.scale.abs()
        else:
            r = e.expand_as(self.x0)
        return self.x0 - r, self.x0 + r

    def concretize(self, A: Tensor, bias: Tensor) -> Tensor:
        """Lower bound of A·x + bias over the set; A (L, m, *in), L ∈ {1, N}; returns (N, m)."""
        nd = self.x0.dim() - 1
        Af = A.flatten(2)
        const = torch.einsum("lmd,nd->nm", Af, self.x0.flatten(1)) if Af.shape[0] == 1 else \
            torch.einsum("nmd,nd->nm", Af, self.x0.flatten(1))
        if self.basis is not None:
            Ad = Af @ self.basis
        elif self.scale is not None:
            Ad = Af * self.scale.reshape(-1 if self.scale.dim() > nd else 1, 1, Af.shape[-1])
        else:
            Ad = Af
        return bias + const - self.eps.unsqueeze(1) * dual_norm(Ad, self.p)


# ----------------------------------------------------------------------------- IBP
def _ibp_node(n: Node, ivs: List[Interval]) -> Interval:
    op, c = n.op, n.consts
    if op in ("relu", "tanh", "sigmoid", "hardtanh", "maxpool") or \
            (op == "leaky_relu" and n.attrs["slope"] >= 0) or (op == "elu" and n.attrs["alpha"] >= 0):
        (l, u), = ivs
        return apply(n, l), apply(n, u)  # monotone
    if op in ("leaky_relu", "elu"):
        (l, u), = ivs
        return kinked_interval(lambda x: apply(n, x), l, u)
    if op == "softplus":
        (l, u), = ivs
        return softplus_interval(l, u, *_softplus_params(n))
    if op in ("gelu", "silu"):
        (l, u), = ivs
        lo_d, lo_b, up_d, up_b = _relaxation(n, l, u)
        return lo_b, up_b
    if op in ("cat", "slice", "reshape", "permute", "identity"):
        return apply(n, *[iv[0] for iv in ivs]), apply(n, *[iv[1] for iv in ivs])
    if op == "add":
        return ivs[0][0] + ivs[1][0], ivs[0][1] + ivs[1][1]
    if op == "sub":
        return ivs[0][0] - ivs[1][1], ivs[0][1] - ivs[1][0]
    if op == "neg":
        return -ivs[0][1], -ivs[0][0]
    (l, u), = ivs
    mid, rad = (l + u) / 2, (u - l) / 2
    if op == "linear":
        return _from_cr(F.linear(mid, c["weight"], c.get("bias")), F.linear(rad, c["weight"].abs()))
    if op in ("conv", "conv_transpose"):
        abs_node = Node(n.name, n.op, n.inputs, n.attrs, {"weight": c["weight"].abs()}, n.shape)
        return _from_cr(apply(n, mid), apply(abs_node, rad))
    if op in ("scale_shift", "mul_const"):
        s = c.get("scale", c.get("value"))
        return _from_cr(apply(n, mid), rad * s.abs() if s is not None else rad)
    if op == "add_const":
        return l + c["value"], u + c["value"]
    if op == "pad":
        zero = Node(n.name, n.op, n.inputs, {**n.attrs, "value": 0.0}, {}, n.shape)
        return _from_cr(apply(n, mid), apply(zero, rad))
    if op in ("avgpool", "upsample", "mean"):  # non-negative coefficients, no bias
        return apply(n, l), apply(n, u)
    raise ValueError(f"node {n.name}: no IBP rule for {op!r}")


def _from_cr(c: Tensor, r: Tensor) -> Interval:
    return c - r, c + r


def ibp_graph(g: Graph, im: InputMap, tighten=None,
              ivs: Optional[List[Optional[Interval]]] = None) -> List[Optional[Interval]]:
    """Intervals of every node, filled into `ivs` (a new list when None); `tighten(j)` may
    replace the interval of a nonlinear node's input j before that node is evaluated (CROWN's
    intermediate bounds)."""
    if ivs is None:
        ivs = [None] * len(g.nodes)
    ivs[0] = im.interval()
    for i in range(1, len(g.nodes)):
        n = g.nodes[i]
        if tighten is not None and n.op in NONLINEAR_OPS and n.inputs[0] != 0:
            ivs[n.inputs[0]] = tighten(n.inputs[0])
        if n.op == "linear" and n.inputs == (0,) and len(g.in_shape) == 1 and not _box_like(im):
            ivs[i] = _exact_affine(im, n.consts["weight"], n.consts.get("bias"))
        else:
            ivs[i] = _ibp_node(n, [ivs[j] for j in n.inputs])
    return ivs


def _box_like(im: InputMap) -> bool:
    """The set is a box (ℓ∞ without a basis): intervals are exact through any affine map already."""
    return im.p == math.inf and im.basis is None


def _exact_affine(im: InputMap, W: Tensor, b: Optional[Tensor]) -> Interval:
    """Exact range of W·x + b over the input map's set, W (m, in) or (N, m, in): by Hölder per row,
    as auto_LiRPA's first layer (an interval of x first would lose the ball's shape)."""
    A = W if W.dim() == 3 else W.unsqueeze(0)
    bias = torch.zeros(im.n, A.shape[1], dtype=A.dtype, device=A.device) if b is None else \
        (b if b.dim() == 2 else b.unsqueeze(0)).expand(im.n, A.shape[1])
    lo = im.concretize(A, bias)
    up = -im.concretize(-A, -bias)
    return lo, up


# ----------------------------------------------------------------------------- relaxations
def _relaxation(n: Node, l: Tensor, u: Tensor):
    op, a = n.op, n.attrs
    if op in ("relu", "tanh", "sigmoid"):
        return relax(op, l, u)
    if op == "leaky_relu":
        return leaky_relu_relaxation(l, u, float(a["slope"]))
    if op == "hardtanh":
        return hardtanh_relaxation(l, u, float(a["min"]), float(a["max"]))
    if op == "softplus":
        return softplus_relaxation(l, u, *_softplus_params(n))
    if op == "elu":
        alpha = float(a["alpha"])
        f = lambda x: F.elu(x, alpha)  # noqa: E731
        if 0 <= alpha <= 1:  # convex and increasing
            df = lambda x: torch.where(x > 0, torch.ones_like(x), alpha * torch.exp(x.clamp(max=0)))  # noqa: E731
            return convex_increasing_relaxation(f, df, l, u)
        lo, up = kinked_interval(f, l, u)
        z = torch.zeros_like(l)
        return z, lo, z.clone(), up
    if op in ("gelu", "silu"):
        f = (lambda x: F.gelu(x, approximate=a.get("approximate", "none"))) if op == "gelu" else F.silu
        return quasi_convex_relaxation(f"{op}:{a.get('approximate', '')}", f, l, u)
    raise ValueError(f"node {n.name}: no relaxation for {op!r}")


def _softplus_params(n: Node) -> Tuple[float, float]:
    beta, thr = float(n.attrs.get("beta", 1.0)), float(n.attrs.get("threshold", 20.0))
    if not beta > 0:
        raise UnsupportedLayerError("Softplus", n.where or n.name, f"beta={beta:g}: only beta > 0 is bounded")
    return beta, thr


class _Relax:
    """Relaxation lines of the nonlinear nodes, computed once from their input intervals."""

    def __init__(self, g: Graph, ivs: List[Optional[Interval]]) -> None:
        self.g, self.ivs, self.cache = g, ivs, {}

    def __getitem__(self, i: int):
        if i not in self.cache:
            n = self.g.nodes[i]
            l, u = self.ivs[n.inputs[0]]
            self.cache[i] = maxpool_relaxation(n, l, u) if n.op == "maxpool" else _relaxation(n, l, u)
        return self.cache[i]


# ----------------------------------------------------------------------------- CROWN
def _vjp_linear(n: Node, A: Tensor, in_shapes: List[Tuple[int, ...]]) -> List[Tensor]:
    """A·J for a linear node (J its Jacobian), A of (L, m, *out) → per input (L, m, *in_j)."""
    L, m = A.shape[:2]
    flat = A.reshape(L * m, *A.shape[2:])
    if n.op == "linear":
        return [A @ n.consts["weight"]]
    if n.op == "conv" and n.attrs.get("groups", 1) >= 1:
        w = n.consts["weight"]
        nd = len(in_shapes[0]) - 1
        f = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[nd - 1]
        a = n.attrs
        base = f(flat, w, None, a["stride"], a["padding"], 0, a["groups"], a["dilation"])
        pad = [in_shapes[0][1 + i] - base.shape[2 + i] for i in range(nd)]
        if any(p_ for p_ in pad):
            base = f(flat, w, None, a["stride"], a["padding"], tuple(pad), a["groups"], a["dilation"])
        return [base.reshape(L, m, *in_shapes[0])]
    if n.op == "add_const":
        return [A]
    prim = [torch.zeros(L * m, *s, dtype=A.dtype, device=A.device) for s in in_shapes]
    nob = Node(n.name, n.op, n.inputs, n.attrs, {k: v for k, v in n.consts.items() if k != "bias" and k != "shift"}, n.shape)
    if n.op == "pad":
        nob.attrs = {**n.attrs, "value": 0.0}
    _, pull = torch.func.vjp(lambda *xs: apply(nob, *xs), *prim)
    return [g.reshape(L, m, *s) for g, s in zip(pull(flat), in_shapes)]


def _bias_linear(n: Node, A: Tensor, in_shapes: List[Tuple[int, ...]]) -> Optional[Tensor]:
    """Σ A ⊙ node(0): the constant part of an affine node, (L, m) (None when it has none)."""
    c = n.consts
    if n.op == "linear":
        # A (L, m, *lead, out): the bias is added at every leading position (a Linear on N×…×in)
        if c.get("bias") is None:
            return None
        b = A @ c["bias"]
        return b if b.dim() == 2 else b.flatten(2).sum(-1)
    if n.op in ("conv", "conv_transpose"):
        if c.get("bias") is None:
            return None
        return A.sum(dim=tuple(range(3, A.dim()))) @ c["bias"]
    if n.op in ("scale_shift", "add_const", "pad") and (c.get("shift") is not None or n.op != "scale_shift"):
        zeros = [torch.zeros(1, *s, dtype=A.dtype, device=A.device) for s in in_shapes]
        f0 = apply(n, *zeros)[0]
        return (A * f0).flatten(2).sum(-1)
    return None


def backward_bound(g: Graph, start: int, A: Tensor, rel: _Relax, im: InputMap,
                   lower_slopes: Optional[Dict[int, Tensor]] = None) -> Tensor:
    """Lower bound of A·(value of node `start`) over the set; A (L, m, *shape), L ∈ {1, N}.

    `lower_slopes[i]` ((N, m or 1, *shape)) replaces the lower slope of ReLU/LeakyReLU node i
    (its lower line passes through 0; α-CROWN, alpha.py, keeps the slope valid)."""
    shapes = [nd.shape for nd in g.nodes]
    acc: Dict[int, Tensor] = {start: A}
    bias = torch.zeros(im.n, A.shape[1], dtype=A.dtype, device=A.device)
    for i in range(start, 0, -1):
        Ai = acc.pop(i, None)
        if Ai is None:
            continue
        n = g.nodes[i]
        ins = [shapes[j] for j in n.inputs]
        if n.op in ACTIVATIONS:
            lo_d, lo_b, up_d, up_b = rel[i]
            pos, neg = Ai.clamp(min=0), Ai.clamp(max=0)
            bias = bias + (pos * lo_b.unsqueeze(1)).flatten(2).sum(-1) + (neg * up_b.unsqueeze(1)).flatten(2).sum(-1)
            lo_s = lower_slopes[i] if lower_slopes is not None and i in lower_slopes else lo_d.unsqueeze(1)
            new = [pos * lo_s + neg * up_d.unsqueeze(1)]
        elif n.op == "maxpool":
            new, b = maxpool_backward(Ai, rel[i], ins[0])
            bias = bias + b
        else:
            b = _bias_linear(n, Ai, ins)
            if b is not None:
                bias = bias + b
            new = _vjp_linear(n, Ai, ins)
        for j, Aj in zip(n.inputs, new):
            acc[j] = acc[j] + Aj if j in acc else Aj
    A0 = acc.get(0)
    if A0 is None:  # the output does not depend on the input
        return bias
    return im.concretize(A0, bias)


def _kink_at_zero(n: Node) -> bool:
    """ReLU and LeakyReLU of slope in [0, 1]: exact lines on an interval that does not cross 0."""
    return n.op == "relu" or (n.op == "leaky_relu" and 0.0 <= float(n.attrs["slope"]) <= 1.0)


# bytes of backward coefficients per block of intermediate rows (CROWN's intermediate bounds)
_ROW_BLOCK_BYTES = 1 << 28


def _identity_rows(shape, dtype, device) -> Tensor:
    D = num_elements(shape)
    eye = torch.eye(D, dtype=dtype, device=device)
    return torch.cat([eye, -eye]).reshape(1, 2 * D, *shape)


def bound_graph(g: Graph, im: InputMap, C: Optional[Tensor], method: str,
                bound_upper: bool = True) -> Tuple[Tensor, Optional[Tensor]]:
    """Bounds of C·g(x) over the input map's set (C: (m, out), (N, m, out) or None)."""
    if method == "ibp":
        ivs = ibp_graph(g, im)
        last = g.nodes[g.output]
        if C is not None and last.op == "linear" and len(g.nodes[last.inputs[0]].shape) == 1:
            return _ibp_fold_C(g, im, ivs, last, C.to(im.x0.dtype), bound_upper)
        l, u = ivs[g.output]
        l, u = l.flatten(1), u.flatten(1)
        if C is None:
            return l, (u if bound_upper else None)
        c, r = (u + l) / 2, (u - l) / 2
        if C.dim() == 2:
            cc, rr = c @ C.T, r @ C.abs().T
        else:
            cc, rr = torch.einsum("nmi,ni->nm", C, c), torch.einsum("nmi,ni->nm", C.abs(), r)
        return cc - rr, (cc + rr if bound_upper else None)
    ivs: List[Optional[Interval]] = [None] * len(g.nodes)
    rel = _Relax(g, ivs)
    tighten = None
    if method == "crown":
        consumers = g.consumers()
        widest = max(num_elements(nd.shape) for nd in g.nodes)

        def tighten(j: int) -> Interval:
            """CROWN bounds of node j (its relaxations so far) intersected with its IBP interval.

            Only the elements whose bounds can matter get CROWN rows: those of nonzero width, and
            where node j feeds only ReLU-like nodes (kink at 0), only the neurons its IBP interval
            leaves unstable in some sample (as auto_LiRPA does: a stable neuron's relaxation is its
            exact linear piece whatever its interval). Rows go in blocks, so no identity of the
            node's full size (an image, say) is built at once; the bounds equal the full identity's."""
            l_ibp, u_ibp = ivs[j]
            lf, uf = l_ibp.flatten(1), u_ibp.flatten(1)
            shape = g.nodes[j].shape
            need = (uf > lf).any(dim=0)
            if consumers[j] and all(_kink_at_zero(g.nodes[c]) for c in consumers[j]):
                need &= ((lf < 0) & (uf > 0)).any(dim=0)
            sel = need.nonzero().flatten()
            if sel.numel() == 0:
                return l_ibp, u_ibp
            nl, nu = lf.clone(), uf.clone()
            block = max(1, _ROW_BLOCK_BYTES // max(1, 2 * lf.shape[0] * widest * lf.element_size()))
            for s0 in range(0, sel.numel(), block):
                idx = sel[s0:s0 + block]
                r = idx.numel()
                rows = torch.zeros(r, lf.shape[1], dtype=lf.dtype, device=lf.device)
                rows[torch.arange(r, device=lf.device), idx] = 1.0
                A = torch.cat([rows, -rows]).reshape(1, 2 * r, *shape)
                bnd = backward_bound(g, j, A, rel, im)
                nl[:, idx] = torch.maximum(lf[:, idx], bnd[:, :r])
                nu[:, idx] = torch.maximum(torch.minimum(uf[:, idx], -bnd[:, r:]), nl[:, idx])
            return nl.reshape(l_ibp.shape), nu.reshape(u_ibp.shape)
    ibp_graph(g, im, tighten, ivs)
    return backward_output(g, im, rel, C, bound_upper)


def backward_output(g: Graph, im: InputMap, rel: "_Relax", C: Optional[Tensor],
                    bound_upper: bool) -> Tuple[Tensor, Optional[Tensor]]:
    """CROWN's last pass: bounds of C·output (C None: the identity) back through the graph with
    the relaxations `rel` holds; the upper bound as the lower bound of −C (one pass for both)."""
    out_shape = g.out_shape
    D = num_elements(out_shape)
    if C is None:
        A = torch.eye(D, dtype=im.x0.dtype, device=im.x0.device).reshape(1, D, *out_shape)
    else:
        A = (C if C.dim() == 3 else C.unsqueeze(0)).reshape(C.shape[0] if C.dim() == 3 else 1, C.shape[-2], *out_shape)
    A = A.to(im.x0.dtype)
    m = A.shape[1]
    if bound_upper:
        A = torch.cat([A, -A], dim=1)
    lower = backward_bound(g, g.output, A, rel, im)
    if not bound_upper:
        return lower, None
    return lower[:, :m], -lower[:, m:]


def _ibp_fold_C(g: Graph, im: InputMap, ivs: List[Optional[Interval]], last: Node, C: Tensor,
                bound_upper: bool) -> Tuple[Tensor, Optional[Tensor]]:
    """IBP with the spec folded into the final Linear (C·W, C·b), as auto_LiRPA's IBP does."""
    W, b = last.consts["weight"], last.consts.get("bias")
    CW = C @ W                                       # (m, in) or (N, m, in)
    Cb = None if b is None else C @ b                # (m,) or (N, m)
    if last.inputs[0] == 0 and not _box_like(im):
        lo, up = _exact_affine(im, CW, Cb)
        return lo, (up if bound_upper else None)
    l, u = ivs[last.inputs[0]]
    c, r = (u + l) / 2, (u - l) / 2
    if CW.dim() == 2:
        cc, rr = c @ CW.T, r @ CW.abs().T
    else:
        cc, rr = torch.einsum("nmi,ni->nm", CW, c), torch.einsum("nmi,ni->nm", CW.abs(), r)
    if Cb is not None:
        cc = cc + Cb
    return cc - rr, (cc + rr if bound_upper else None)


# ----------------------------------------------------------------------------- rounding
def magnitudes_graph(g: Graph, a0: Tensor) -> Tensor:
    """Upper bounds of |value| of the output for inputs with |x| ≤ a0 (a0 ≥ 0, (N, *in)).

    The rounding tolerance of a bound computation scales with these (exactline.py, split.py).
    """
    vals: List[Optional[Tensor]] = [None] * len(g.nodes)
    vals[0] = a0
    for i in range(1, len(g.nodes)):
        n = g.nodes[i]
        c, op = n.consts, n.op
        xs = [vals[j] for j in n.inputs]
        a = xs[0]
        if op in ("relu", "leaky_relu", "tanh", "gelu", "silu", "identity", "neg", "maxpool", "avgpool",
                  "upsample", "mean", "reshape", "permute", "slice"):
            out = apply(n, a) if op in ("maxpool", "avgpool", "upsample", "mean", "reshape", "permute", "slice") else a
        elif op == "hardtanh":
            out = torch.minimum(a, torch.full_like(a, max(abs(n.attrs["min"]), abs(n.attrs["max"]))))
            out = torch.maximum(out, torch.full_like(a, min(abs(n.attrs["min"]), abs(n.attrs["max"]))))
        elif op == "sigmoid":
            out = torch.ones_like(a)
        elif op == "elu":
            out = a * max(1.0, float(n.attrs["alpha"]))
        elif op == "softplus":
            out = a + math.log(2.0) / float(n.attrs.get("beta", 1.0))
        elif op in ("add", "sub"):
            out = xs[0] + xs[1]
        elif op == "cat":
            out = apply(n, *xs)
        elif op == "linear":
            out = F.linear(a, c["weight"].abs(), None if c.get("bias") is None else c["bias"].abs())
        elif op in ("conv", "conv_transpose"):
            out = apply(Node(n.name, op, n.inputs, n.attrs, {"weight": c["weight"].abs(), **(
                {"bias": c["bias"].abs()} if c.get("bias") is not None else {})}, n.shape), a)
        elif op == "scale_shift":
            out = a * c["scale"].abs() if "scale" in c else a
            out = out + c["shift"].abs() if "shift" in c else out
        elif op == "mul_const":
            out = a * c["value"].abs()
        elif op == "add_const":
            out = a + c["value"].abs()
        elif op == "pad":
            out = F.pad(a, tuple(n.attrs["pads"]), value=abs(float(n.attrs.get("value", 0.0))))
        else:
            raise ValueError(f"node {n.name}: no magnitude rule for {op!r}")
        vals[i] = out
    return vals[g.output]


def fan_in(g: Graph) -> int:
    """The largest number of terms a node sums (for the rounding factor γ_n)."""
    w = 1
    for n in g.nodes[1:]:
        if n.op == "linear":
            w = max(w, n.consts["weight"].shape[1] + 1)
        elif n.op in ("conv", "conv_transpose"):
            wt = n.consts["weight"]
            w = max(w, int(wt[0].numel() * (wt.shape[0] if n.op == "conv_transpose" else 1)) + 1)
        elif n.op in ("avgpool", "maxpool"):
            w = max(w, int(math.prod(n.attrs["kernel"])) + 1)
        elif n.op == "mean":
            w = max(w, int(math.prod(g.nodes[n.inputs[0]].shape)) + 1)
        elif n.op == "upsample":
            w = max(w, 5)
        else:
            w = max(w, len(n.inputs) + 1)
    return w
