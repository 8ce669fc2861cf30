"""The bound methods: IBP, CROWN-IBP and CROWN over an affine image of an ℓp ball.

`bound(head, latent_set, C, method)` folds the set's basis B and centre z0 into the head's
first affine layer (DESIGN.md: every set becomes a plain ℓp ball around 0 in δ-space), then
- "ibp": interval propagation to the end, C folded into the last layer;
- "crown-ibp": intermediate bounds by IBP, the output by CROWN's backward pass from C;
- "crown": intermediate bounds by CROWN too (each intersected with the IBP bound computed
  from the already tightened layer before it), the output by CROWN. For piecewise-linear
  vector heads over sets of k ≤ 64 directions the same bounds are computed by symbolic.py,
  whose cost grows with the unstable neurons per sample instead of the width;
- "alpha-crown": CROWN with the ReLU/LeakyReLU lower slopes optimized per sample and spec row
  (alpha.py), over the graph IR for every head (chains included).
The names mean what they mean in auto_LiRPA. Large batches are split into chunks that fit a
memory budget; every sample's bound is independent of the others', so chunking never changes
a result.
"""

from __future__ import annotations

import math
from typing import Callable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from auditai.names import BOUND_METHODS, parse_bound_method

from auditai.bounds import symbolic
from auditai.bounds.crown import Relaxations, backward_lower, crown_intermediate
from auditai.bounds.graph_engine import bound_module_graph, check_graph, lower_to_chain, read_graph
from auditai.bounds.guard import (
    check_agreement,
    module_state,
    remember_verdict,
    set_points,
    verdict_cached,
)
from auditai.bounds.interval import first_mix_radius, ibp_last_layer, ibp_spec
from auditai.bounds.ops import (
    Activation,
    Conv,
    Dense,
    Reshape,
    Shift,
    fold_scale_shift,
    merge_dense,
    op_sources,
    to_ops,
)
from auditai.errors import InputError, UnsupportedLayerError

METHODS = BOUND_METHODS  # the engine's methods: auditai.names is their home
DEFAULT_MEMORY_BUDGET = 1 << 30  # bytes of coefficient tensors per chunk

Interval = Tuple[Tensor, Tensor]


def parse_method(method: str) -> str:
    """A bound method's name (auditai.names.parse_bound_method: a ChoiceError for any other)."""
    return parse_bound_method(method)


def _check_C(C: Optional[Tensor], n: int, out: int, dtype, device) -> Optional[Tensor]:
    if C is None:
        return None
    C = torch.as_tensor(C).to(dtype=dtype, device=device)
    if C.dim() == 2 and C.shape[1] == out:
        return C
    if C.dim() == 3 and C.shape[0] == n and C.shape[2] == out:
        return C
    raise InputError(
        f"C must be m×{out} or N×m×{out} (N={n}, the head has {out} outputs), got shape {tuple(C.shape)}"
    )


def prepare(ops: list, x0: Tensor, basis: Optional[Tensor]) -> Tuple[list, Tuple[int, ...]]:
    """Put the input map δ ↦ x0 + B·δ in front of the ops and fold it into the first Dense.

    Returns the new ops (taking δ, centre 0) and δ's per-sample shape.
    """
    ops = fold_scale_shift(list(ops))
    if basis is not None:
        first = Dense(basis, x0, name="latent set")
        if ops and isinstance(ops[0], Dense):
            first = merge_dense(first, ops[0])
            ops = ops[1:]
        return [first, *ops], (basis.shape[1],)
    return [Shift(x0), *ops], tuple(x0.shape[1:])


def _out_shape(ops: Sequence, in_shape: Tuple[int, ...]) -> Tuple[int, ...]:
    return tuple(ops[-1].out_shape) if ops else in_shape


def _pre_activation_bounds(
    ops: Sequence, eps: Tensor, p: float, in_shape: Tuple[int, ...], crown: bool, keep_pre: bool = True
) -> Tuple[List[Optional[Interval]], Tensor, Tensor, bool, Relaxations]:
    """Intervals at every activation's input, by IBP or by CROWN ∩ IBP.

    Returns (pre, c, r, fresh, relaxations) where (c, r) is the interval before the last
    op and `fresh` says no op has mixed the ball's coordinates yet.
    """
    n = eps.shape[0]
    pre: List[Optional[Interval]] = [None] * len(ops)
    relaxations = Relaxations(ops, pre)
    c = torch.zeros(n, *in_shape, dtype=eps.dtype, device=eps.device)
    r = eps.reshape(n, *([1] * len(in_shape))).expand_as(c)
    fresh, exact = True, True
    # in-place arithmetic saves memory passes, but autograd (certified training) needs the originals
    inplace = not torch.is_grad_enabled()
    for i, op in enumerate(ops[:-1] if ops else []):
        if isinstance(op, Activation):
            l, u = c - r, c + r
            if keep_pre:
                pre[i] = (l, u)
                if crown and not exact:
                    pre[i] = crown_intermediate(ops, pre, i, eps, p, len(in_shape), relaxations)
                l, u = pre[i]
                fl, fu = op.forward(l), op.forward(u)
            elif inplace:  # IBP alone: nothing else refers to l and u
                fl, fu = op.forward_(l), op.forward_(u)
            else:
                fl, fu = op.forward(l), op.forward(u)
            c = torch.lerp(fl, fu, 0.5)
            r = fu.sub_(c) if inplace else fu - c
            fresh, exact = False, False
            continue
        if fresh and isinstance(op, (Dense, Conv)):
            exact = isinstance(op, Dense) or p != 1.0
            r = first_mix_radius(op, eps, p, r)
            c = op.forward(c)
            fresh = False
        elif isinstance(op, (Shift, Reshape)):
            c, r = op.forward(c), op.forward_abs(r)
        else:
            c, r = op.forward(c), op.forward_abs(r)
            fresh, exact = False, False
    return pre, c, r, fresh, relaxations


def bound_ops(
    ops: list,
    in_shape: Tuple[int, ...],
    eps: Tensor,
    p: float,
    C: Optional[Tensor],
    method: str,
    bound_upper: bool,
) -> Tuple[Tensor, Optional[Tensor]]:
    """Bounds of C·f(δ) over ‖δ‖_p ≤ eps for prepared ops (see `prepare`)."""
    method = parse_method(method)
    if method == "crown" and ops and symbolic.applies(ops, in_shape):
        return symbolic.symbolic_crown(ops, eps, p, in_shape[0], C, bound_upper)
    pre, c, r, fresh, relaxations = _pre_activation_bounds(
        ops, eps, p, in_shape, crown=method == "crown", keep_pre=method != "ibp")
    last = ops[-1]
    if method == "ibp":
        if isinstance(last, Dense) and C is not None:
            lo, up = ibp_last_layer(last, C, c.flatten(1), r.flatten(1), eps, p, fresh)
        else:
            if isinstance(last, Activation):
                fl, fu = last.forward(c - r), last.forward(c + r)
                c, r = (fu + fl) / 2, (fu - fl) / 2
            elif fresh and isinstance(last, (Dense, Conv)):
                r, c = first_mix_radius(last, eps, p, r), last.forward(c)
            else:
                c, r = last.forward(c), last.forward_abs(r)
            lo, up = ibp_spec(C, c, r)
        return lo, (up if bound_upper else None)
    if isinstance(last, Activation):
        pre[-1] = (c - r, c + r)  # (forward-mode bounds are not kept for a final activation)
        if method == "crown":
            pre[-1] = crown_intermediate(ops, pre, len(ops) - 1, eps, p, len(in_shape), relaxations)
    out_shape = tuple(last.out_shape)
    if C is None:
        D = math.prod(out_shape)
        A = torch.eye(D, dtype=eps.dtype, device=eps.device).reshape(D, *out_shape)
    else:
        A = C.reshape(*C.shape[:-1], *out_shape)
    m = A.shape[-1 - len(out_shape)]
    if bound_upper:
        A = torch.cat([A, -A], dim=-1 - len(out_shape))
    lower = backward_lower(ops, A, relaxations, eps, p, len(in_shape))
    if not bound_upper:
        return lower, None
    return lower[:, :m], -lower[:, m:]


def _chunk_size(n: int, m: int, widths: Sequence[int], itemsize: int, method: str,
                memory_budget: Optional[int], bound_upper: bool, symbolic_k: Optional[int] = None) -> int:
    """Samples per chunk so that the coefficient tensors of one chunk fit the budget."""
    budget = DEFAULT_MEMORY_BUDGET if memory_budget is None else int(memory_budget)
    w = max(widths) if widths else 1
    rows = m * (2 if bound_upper else 1)
    if method == "crown" and symbolic_k is not None:
        # symbolic CROWN holds w×c and 2w×c coefficients, c = k + unstable neurons so far
        per_sample = 4 * w * (symbolic_k + w // 2) * itemsize
    else:
        if method == "crown":
            rows = max(rows, 2 * w)
        per_sample = rows * w * itemsize * 6  # A, its negative part, products: measured ≈ 6×
    return max(1, min(n, budget // max(1, per_sample)))


def guard_conversion(module: nn.Module, ops_float64: Callable[[], list], x0: Tensor, eps: Tensor, p: float,
                     basis: Optional[Tensor], root_name: str = "head",
                     sources: Optional[Callable[[str], Optional[nn.Module]]] = None) -> None:
    """Check, in float64, that the ops compute `module` at the set's centres and points (guard.py).

    Raises ConversionMismatchError naming the first op where they part; runs before any bound.
    A module already checked in exactly its present state is not checked again (guard.py's
    verdict cache: a changed weight, attribute, forward or hook means a new check).
    """
    state = module_state(module, tuple(x0.shape[1:]))
    if verdict_cached(module, state, "chain"):
        return
    with torch.no_grad():
        ops = ops_float64()
        pts = set_points(x0.detach().double(), eps.detach().double(), p,
                         None if basis is None else basis.detach().double())
    check_agreement(module, ops, pts, root_name, sources)
    remember_verdict(module, state, "chain")


def _read(module: nn.Module, in_shape: Tuple[int, ...], dtype, device, root_name: str):
    """(chain ops, float64 ops builder, op sources) for chain heads, or (None, graph, None)."""
    try:
        ops = to_ops(module, in_shape, dtype=dtype, device=device, root_name=root_name)
    except UnsupportedLayerError as chain_error:
        try:
            g = read_graph(module, in_shape, root_name)
        except UnsupportedLayerError as graph_error:
            raise graph_error from chain_error
        lowered = lower_to_chain(g, dtype, device)
        if lowered is None:
            return None, g, None
        return lowered, (lambda: lower_to_chain(g, torch.float64, device)), None
    rebuild = (lambda: ops) if dtype == torch.float64 else (
        lambda: to_ops(module, in_shape, dtype=torch.float64, device=device, root_name=root_name))
    return ops, rebuild, op_sources(module, root_name).get


def bound_input(
    module: nn.Module,
    x0: Tensor,
    eps: Tensor,
    p: float,
    basis: Optional[Tensor] = None,
    C: Optional[Tensor] = None,
    method: str = "crown-ibp",
    bound_upper: bool = True,
    memory_budget: Optional[int] = None,
    root_name: str = "head",
    alpha_options=None,
) -> Tuple[Tensor, Optional[Tensor]]:
    """Bounds of C·module(x0 + B·δ) over ‖δ‖_p ≤ eps (B = identity when basis is None).

    alpha_options: a mapping of α-CROWN options (alpha.AlphaOptions) for method "alpha-crown"."""
    method = parse_method(method)
    n = x0.shape[0]
    if method == "alpha-crown":  # the graph engine for every head
        ops, graph = None, read_graph(module, tuple(x0.shape[1:]), root_name)
    else:
        ops, rebuild, sources = _read(module, tuple(x0.shape[1:]), x0.dtype, x0.device, root_name)
        graph = rebuild
    if ops is None:  # not a chain: the graph engine
        with torch.no_grad():
            pts = set_points(x0.detach().double(), eps.detach().double(), p,
                             None if basis is None else basis.detach().double())
        check_graph(module, graph, pts, root_name)
        Cg = _check_C(C, n, math.prod(graph.out_shape), x0.dtype, x0.device)
        budget = DEFAULT_MEMORY_BUDGET if memory_budget is None else int(memory_budget)
        return bound_module_graph(module, graph, x0, eps, p, basis, None, Cg, method, bound_upper, budget,
                                  alpha_options)
    guard_conversion(module, rebuild, x0, eps, p, basis, root_name, sources)
    out_shape = _out_shape(ops, tuple(x0.shape[1:]))
    out = math.prod(out_shape)
    C = _check_C(C, n, out, x0.dtype, x0.device)
    if not ops:  # the identity head
        ops = []
    widths = [math.prod(op.out_shape) for op in ops] or [out]
    m = out if C is None else C.shape[-2]
    k = None if basis is None else basis.shape[1]
    sym_k = k if (method == "crown" and k is not None and symbolic.applies(ops, (k,))) else None
    chunk = _chunk_size(n, m, widths, x0.element_size(), method, memory_budget, bound_upper, sym_k)
    lows, ups = [], []
    for s in range(0, n, chunk):
        sl = slice(s, min(n, s + chunk))
        Cs = C[sl] if (C is not None and C.dim() == 3) else C
        prepared, in_shape = prepare(ops, x0[sl], basis)
        lo, up = bound_ops(prepared, in_shape, eps[sl], p, Cs, method, bound_upper)
        lows.append(lo)
        ups.append(up)
    lower = torch.cat(lows) if len(lows) > 1 else lows[0]
    upper = None if not bound_upper else (torch.cat(ups) if len(ups) > 1 else ups[0])
    return lower, upper
