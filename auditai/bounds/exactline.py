"""Complete check along one direction: exact enumeration of the linear pieces (ExactLine).

Restricted to the segment z(t) = z0 + t·v, t ∈ [−R, R], a head made of affine layers and
ReLU/LeakyReLU is piecewise linear in t (Sotoudeh & Thakur 2019, "Computing linear restrictions
of neural networks"). Starting from a few breakpoints (±R, 0, ±ε_e), every ReLU layer adds the
points where a neuron changes sign inside a segment (found by linear interpolation, exact on a
segment where the layer's input is affine). After the last layer each spec margin is affine on
every segment, so its minimum over [−ε, ε] is the minimum over the breakpoints with |t| ≤ ε, and
the first |t| at which a margin reaches a threshold is found segment by segment.

Everything is batched over samples: points are a flat list sorted by (sample, t). Work in float64.

Rounding (the tolerance `tol` returned per sample): a dot product of length n computed in floating
point has error ≤ γ_n·|w|·|x| with γ_n = n·u/(1 − n·u) (Higham, *Accuracy and Stability of
Numerical Algorithms*, Thm 3.5). With the magnitudes a_{l+1} = |W|·a_l + |b|, a_0 = |z0| + R·|v| (an
upper bound of |x_l(t)| for every t in [−R, R], one vector per sample), the error after L layers is ≤ L·γ_{n+1}·a_L (induction: |W|·(c·a_l) + γ·a_{l+1}
≤ (c + γ)·a_{l+1}); each interpolation adds ≤ 6u·a, and ReLU is 1-Lipschitz, so a sign misread
within the error changes nothing beyond it. We use tol = 2·(L + 2)·γ_{n+3}·max_rows(|C|·a_L + |d|),
twice that derivation. A margin counts as certified only when it exceeds tol.

This module imports only torch (and auditai.errors, which imports nothing).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from auditai.bounds.guard import global_hooks, refuse_hidden_forward
from auditai.bounds.ops import _LAYER_CLASSES
from auditai.errors import UnsupportedLayerError

PIECEWISE_LINEAR = ("affine", "relu")


@dataclass(frozen=True)
class LayerOp:
    """One step of a flattened head: kind ∈ {affine, relu, tanh, sigmoid, flatten}.

    `f(x)` applies the step; `fabs(a)` maps magnitudes (|W|·a + |b| for affine steps).
    For kind "relu", `slope` is the negative slope (0 for ReLU, α for LeakyReLU).
    """

    kind: str
    f: Callable[[Tensor], Tensor]
    fabs: Callable[[Tensor], Tensor]
    width: int
    position: str
    slope: float = 0.0
    depth: int = 1


def _linear_op(m: nn.Linear, pos: str) -> LayerOp:
    W, b = m.weight, m.bias
    Wa = W.abs()
    ba = None if b is None else b.abs()
    return LayerOp("affine", lambda x: F.linear(x, W, b), lambda a: F.linear(a, Wa, ba), W.shape[1] + 1, pos)


def _bn_op(m: nn.modules.batchnorm._BatchNorm, pos: str) -> LayerOp:
    if m.training or m.running_mean is None:
        raise UnsupportedLayerError(type(m).__name__, pos, "BatchNorm must be in eval mode with running stats")
    scale = torch.rsqrt(m.running_var + m.eps)
    if m.weight is not None:
        scale = scale * m.weight
    shift = -m.running_mean * scale
    if m.bias is not None:
        shift = shift + m.bias

    def shape(t: Tensor, x: Tensor) -> Tensor:
        return t.view(1, -1, *([1] * (x.dim() - 2))).to(x)

    return LayerOp(
        "affine",
        lambda x: x * shape(scale, x) + shape(shift, x),
        lambda a: a * shape(scale.abs(), a) + shape(shift.abs(), a),
        2,
        pos,
    )


def _conv_op(m: nn.Conv1d | nn.Conv2d, pos: str) -> LayerOp:
    W, b = m.weight, m.bias
    Wa = W.abs()
    ba = None if b is None else b.abs()
    fan = int(W[0].numel()) + 1
    return LayerOp("affine", lambda x: m._conv_forward(x, W, b), lambda a: m._conv_forward(a, Wa, ba), fan, pos)


def _graph_op(head: nn.Module, prefix: str, in_shape) -> list[LayerOp]:
    """A head that is not a chain, as one LayerOp over its graph IR (kind "graph")."""
    from auditai.bounds.graph_bounds import fan_in, magnitudes_graph
    from auditai.bounds.graph_engine import read_graph

    if in_shape is None:
        first = next((m for m in head.modules() if isinstance(m, nn.Linear)), None)
        if first is None:
            raise UnsupportedLayerError(type(head).__name__, prefix, "give the input shape to read this graph")
        in_shape = (first.in_features,)
    g = read_graph(head, tuple(in_shape), prefix)
    g64 = g.to(torch.float64)
    return [LayerOp("graph", lambda x: g64.forward(x.double()), lambda a: magnitudes_graph(g64, a.double()),
                    fan_in(g), prefix, depth=len(g.nodes))]


def layer_ops(head: nn.Module, prefix: str = "head", in_shape=None) -> list[LayerOp]:
    """Flatten `head` into LayerOps; a head that is not a chain becomes one "graph" op (its IR);
    an unsupported module raises UnsupportedLayerError naming it."""
    if prefix == "head":
        try:
            return _chain_ops(head, prefix)
        except UnsupportedLayerError as chain_error:
            try:
                return _graph_op(head, prefix, in_shape)
            except UnsupportedLayerError as graph_error:
                raise graph_error from chain_error
    return _chain_ops(head, prefix)


def _chain_ops(head: nn.Module, prefix: str = "head") -> list[LayerOp]:
    ops: list[LayerOp] = []
    if prefix == "head":
        hooks = global_hooks()
        if hooks:
            raise UnsupportedLayerError(type(head).__name__, prefix, f"a {hooks[0]} is registered for every module")
    if isinstance(head, nn.Sequential):
        refuse_hidden_forward(head, prefix, nn.Sequential)
        for i, sub in enumerate(head):
            ops.extend(_chain_ops(sub, f"{prefix}[{i}]"))
        return ops
    m, pos = head, prefix
    refuse_hidden_forward(m, pos, next((c for c in _LAYER_CLASSES if isinstance(m, c)), None))
    ident = lambda x: x  # noqa: E731
    if isinstance(m, nn.Linear):
        ops.append(_linear_op(m, pos))
    elif isinstance(m, (nn.Conv1d, nn.Conv2d)):
        ops.append(_conv_op(m, pos))
    elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        ops.append(_bn_op(m, pos))
    elif isinstance(m, nn.ReLU):
        ops.append(LayerOp("relu", torch.relu, ident, 1, pos, 0.0))
    elif isinstance(m, nn.LeakyReLU):
        s = float(m.negative_slope)
        if not 0.0 <= s <= 1.0:
            raise UnsupportedLayerError("LeakyReLU", pos, f"negative_slope {s} outside [0, 1]")
        ops.append(LayerOp("relu", lambda x: F.leaky_relu(x, s), ident, 1, pos, s))
    elif isinstance(m, nn.Tanh):
        ops.append(LayerOp("tanh", torch.tanh, lambda a: a.clamp(max=1.0), 1, pos))
    elif isinstance(m, nn.Sigmoid):
        ops.append(LayerOp("sigmoid", torch.sigmoid, lambda a: torch.ones_like(a), 1, pos))
    elif isinstance(m, nn.Flatten):
        ops.append(LayerOp("flatten", lambda x: m(x), lambda a: m(a), 1, pos))
    elif isinstance(m, nn.Identity):
        pass
    elif isinstance(m, nn.Dropout):
        if m.training and m.p > 0:
            raise UnsupportedLayerError("Dropout", pos, "Dropout must be in eval mode")
    else:
        raise UnsupportedLayerError(type(m).__name__, pos)
    return ops


def is_piecewise_linear(head: nn.Module, in_shape=None) -> bool:
    """True when `head` is a chain whose every step is affine, ReLU or LeakyReLU (ExactLine applies;
    graphs are decided by splitting instead)."""
    return all(op.kind in ("affine", "relu", "flatten") for op in layer_ops(head, in_shape=in_shape))


def gamma(n: int, dtype: torch.dtype) -> float:
    """γ_n = n·u/(1 − n·u), u the unit roundoff of dtype (Higham Thm 3.5)."""
    u = torch.finfo(dtype).eps / 2
    nu = n * u
    return nu / (1 - nu) if nu < 1 else math.inf


def tolerance_factor(ops: list[LayerOp], dtype: torch.dtype) -> float:
    """The factor 2·(L + 2)·γ_{n+3} that multiplies the magnitude |C|·a + |d| (see module doc)."""
    n = max([op.width for op in ops] + [1])
    return 2.0 * (sum(op.depth for op in ops) + 2) * gamma(n + 3, dtype)


def magnitudes(ops: list[LayerOp], a0: Tensor) -> Tensor:
    """Propagate magnitudes a_{l+1} = |W|·a_l + |b| (activations keep |x|): an upper bound of |x_l|."""
    a = a0
    for op in ops:
        a = op.fabs(a)
    return a


@dataclass
class LineResult:
    """ExactLine answers for N samples and E radii.

    min_margin (N×E): min over t ∈ [−ε_e, ε_e] and rows of the margin; worst_t, worst_row (N×E)
    where it is reached; tol (N): rounding tolerance; radius (N): the first |t| ≤ R at which some
    margin reaches 3·tol (R when none does), so every |t| < radius has margins > 3·tol;
    pieces (N): the number of linear pieces of the head on [−R, R].
    """

    min_margin: Tensor
    worst_t: Tensor
    worst_row: Tensor
    tol: Tensor
    radius: Tensor
    pieces: Tensor


def _sort_points(sid: Tensor, t: Tensor) -> Tensor:
    o = torch.argsort(t, stable=True)
    o = o[torch.argsort(sid[o], stable=True)]
    return o


def _line_chunk(ops, z0, v, eps, R, C, d, factor) -> LineResult:
    n, E = eps.shape
    dev, dt = z0.device, z0.dtype
    zero = torch.zeros(n, 1, dtype=dt, device=dev)
    ts = torch.cat([-R[:, None], R[:, None], zero, eps, -eps], dim=1)
    ts, _ = ts.sort(dim=1)
    sid = torch.arange(n, device=dev).repeat_interleave(ts.shape[1])
    t = ts.flatten()
    keep = torch.ones_like(t, dtype=torch.bool)
    keep[1:] = ~((sid[1:] == sid[:-1]) & (t[1:] == t[:-1]))
    sid, t = sid[keep], t[keep]
    x = z0[sid] + t[:, None] * v
    # magnitudes: |x_l(t)| <= A_l for every t in [-R, R] (one vector per sample, not per point)
    A = magnitudes(ops, z0.abs() + R[:, None] * v.abs()).flatten(1)
    for op in ops:
        if op.kind == "relu":
            x2 = x.flatten(1)
            same = (sid[1:] == sid[:-1]).unsqueeze(1)
            pos, neg = x2 > 0, x2 < 0  # strict signs (bool passes are cheap)
            cross = ((pos[:-1] & neg[1:]) | (neg[:-1] & pos[1:])) & same
            s, j = cross.nonzero(as_tuple=True)
            if s.numel():
                xa, xb = x2[s], x2[s + 1]
                ar = torch.arange(s.numel(), device=dev)
                va, vb = xa[ar, j], xb[ar, j]
                lam = va / (va - vb)
                tn = t[s] + lam * (t[s + 1] - t[s])
                xn = xa + lam[:, None] * (xb - xa)
                xn[ar, j] = 0.0
                sid = torch.cat([sid, sid[s]])
                t = torch.cat([t, tn])
                x2 = torch.cat([x2, xn])
                o = _sort_points(sid, t)
                sid, t = sid[o], t[o]
                keep = torch.ones_like(t, dtype=torch.bool)
                keep[1:] = ~((sid[1:] == sid[:-1]) & (t[1:] == t[:-1]))
                if keep.all():
                    x2 = x2[o]
                else:
                    o = o[keep]
                    sid, t, x2 = sid[keep], t[keep], x2[o]
            shape = (t.shape[0],) + tuple(x.shape[1:])
            x = op.f(x2.view(shape))
        elif op.kind in ("affine", "flatten"):
            x = op.f(x)
        else:
            raise UnsupportedLayerError(
                op.kind.capitalize(), op.position,
                "the exact 1-D check needs a piecewise-linear head; use branch and bound (split)",
            )
    x = x.flatten(1)
    marg = torch.einsum("po,pmo->pm", x, C[sid]) + d[sid]
    mag = torch.einsum("no,nmo->nm", A, C.abs()) + d.abs()
    # pad into N×P
    counts = torch.bincount(sid, minlength=n)
    offs = torch.cumsum(counts, 0) - counts
    pos = torch.arange(t.shape[0], device=dev) - offs[sid]
    P = int(counts.max())
    m = marg.shape[1]
    inf = torch.tensor(math.inf, dtype=dt, device=dev)
    tP = torch.full((n, P), math.nan, dtype=dt, device=dev)
    tP[sid, pos] = t
    MP = torch.full((n, P, m), math.inf, dtype=dt, device=dev)
    MP[sid, pos] = marg
    tol = mag.amax(dim=1) * factor
    valid = ~torch.isnan(tP)
    mrow, rrow = MP.min(dim=2)  # N×P
    # per-eps minimum over |t| <= eps
    inside = (tP.abs().unsqueeze(2) <= eps.unsqueeze(1)) & valid.unsqueeze(2)  # N×P×E
    vals = torch.where(inside, mrow.unsqueeze(2), inf)
    mmin, arg = vals.min(dim=1)  # N×E
    worst_t = tP.gather(1, arg)
    worst_row = rrow.gather(1, arg)
    # radius: first |t| where a margin reaches theta = 3 tol
    th = (3.0 * tol).view(n, 1, 1)
    cand = torch.where((mrow <= th[:, :, 0]) & valid, tP.abs(), inf).amin(dim=1)
    if P > 1:
        ta, tb = tP[:, :-1, None], tP[:, 1:, None]
        ma, mb = MP[:, :-1], MP[:, 1:]
        seg = valid[:, 1:, None]
        with torch.no_grad():
            fa = (ma - th) / (ma - mb)
            fb = (mb - th) / (mb - ma)
        pos_side = torch.where(mb <= th, ta + (tb - ta) * fa, inf)
        pos_side = torch.where(ma <= th, ta.expand_as(ma), pos_side)
        neg_side = torch.where(ma <= th, (tb - (tb - ta) * fb).abs(), inf)
        neg_side = torch.where(mb <= th, tb.abs().expand_as(mb), neg_side)
        c2 = torch.where(ta >= 0, pos_side, torch.where(tb <= 0, neg_side, inf))
        c2 = torch.where(seg, c2, inf).nan_to_num(nan=math.inf)
        cand = torch.minimum(cand, c2.amin(dim=(1, 2)))
    radius = torch.minimum(cand, R)
    return LineResult(mmin, worst_t, worst_row, tol, radius, counts - 1)


@torch.no_grad()
def exact_line(
    head: nn.Module,
    z0: Tensor,
    v: Tensor,
    eps: Tensor,
    C: Tensor,
    d: Tensor,
    radius_cap: Tensor | float | None = None,
    chunk: int | None = None,
) -> LineResult:
    """Exact minimum margin of ``C[n]·head(z0[n] + t·v) + d[n]`` over |t| ≤ eps[n, e] (ExactLine).

    Args:
        head: piecewise-linear head (Linear, Conv, BatchNorm-eval, ReLU, LeakyReLU, Flatten, …).
        z0: N×d centres; v: d, the direction (not normalised here: t multiplies v as given).
        eps: N×E radii (or N); C: N×m×out; d: N×m.
        radius_cap: R (scalar or N): the segment is [−R, R] with R ≥ max eps; the radius is
            searched up to R.
        chunk: samples per chunk (memory); results do not depend on it.
    Computed in the dtype of z0 (use float64). Returns a LineResult.
    """
    ops = layer_ops(head)
    for op in ops:
        if op.kind not in ("affine", "relu", "flatten"):
            raise UnsupportedLayerError(
                op.kind.capitalize(), op.position,
                "the exact 1-D check needs a piecewise-linear head; use branch and bound (split)",
            )
    if eps.dim() == 1:
        eps = eps[:, None]
    n = z0.shape[0]
    R = eps.amax(dim=1) if eps.shape[1] else torch.zeros(n, dtype=z0.dtype, device=z0.device)
    if radius_cap is not None:
        R = torch.maximum(R, torch.as_tensor(radius_cap, dtype=z0.dtype, device=z0.device).expand(n))
    factor = tolerance_factor(ops, z0.dtype)
    chunk = n if chunk is None else max(1, int(chunk))
    parts = [
        _line_chunk(ops, z0[i:i + chunk], v, eps[i:i + chunk], R[i:i + chunk], C[i:i + chunk], d[i:i + chunk], factor)
        for i in range(0, n, chunk)
    ]
    if len(parts) == 1:
        return parts[0]
    return LineResult(*[torch.cat([getattr(p, f) for p in parts]) for f in
                        ("min_margin", "worst_t", "worst_row", "tol", "radius", "pieces")])
