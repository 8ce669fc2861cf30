"""From a module to bounds through the graph IR: read (trace), check (the guard), lower, bound.

`read_graph` traces a module once per state (cached by the identities and versions of its
parameters, buffers and plain attributes: guard.module_state); the guard's verdict is cached
under the same key, so a module in a state already checked is neither traced nor checked again.
A chain-shaped graph of the chain engine's ops is lowered to that engine's op list
(`lower_to_chain`): the chain engine is the graph engine's fast path for chains. Every other graph is bounded by `graph_bounds.bound_graph`, in chunks of samples that
fit the memory budget.
"""

from __future__ import annotations

import math
import weakref
from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn

from auditai.bounds.graph import Graph, GraphModule, num_elements
from auditai.bounds.graph_bounds import InputMap, bound_graph
from auditai.bounds.guard import (
    RELATIVE_TOLERANCE,
    ConversionMismatchError,
    _close,
    _float64_call,
    _rel_error,
    module_state,
    remember_verdict,
    verdict_cached,
)
from auditai.bounds.ops import Activation, Conv, Dense, Reshape, ScaleShift
from auditai.bounds.trace import trace_module
from auditai.errors import UnsupportedLayerError

_CACHE: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()


def read_graph(module: nn.Module, in_shape: Tuple[int, ...], root_name: str = "head") -> Graph:
    """The graph IR of `module` (traced with torch.fx; cached per module state, guard.module_state)."""
    if isinstance(module, GraphModule):
        g = module.graph
        if tuple(g.in_shape) != tuple(in_shape):
            raise UnsupportedLayerError("GraphModule", root_name,
                                        f"its input has per-sample shape {tuple(g.in_shape)}, the set gives {tuple(in_shape)}")
        return g
    state = module_state(module, in_shape)
    hit = _CACHE.get(module)
    if state is not None and hit is not None and hit[0] == state[0] and len(hit[1]) == len(state[1]) \
            and all(r() is t for r, t in zip(hit[1], state[1])):
        return hit[2]
    g = trace_module(module, in_shape, root_name)
    if state is not None:
        try:
            _CACHE[module] = (state[0], [weakref.ref(t) for t in state[1]], g)
        except TypeError:
            pass
    return g


def lower_to_chain(g: Graph, dtype: torch.dtype, device) -> Optional[list]:
    """The chain engine's ops for a chain-shaped graph of its op kinds, else None."""
    if not g.is_chain():
        return None
    ops: list = []
    shape = g.in_shape

    def cast(t: Optional[Tensor]) -> Optional[Tensor]:
        return None if t is None else t.to(dtype=dtype, device=device)

    for n in g.nodes[1:]:
        c, a = n.consts, n.attrs
        if n.op == "linear" and len(shape) == 1:
            ops.append(Dense(cast(c["weight"]), cast(c.get("bias")), name=n.where or n.name))
        elif n.op == "conv" and len(shape) in (2, 3):
            ops.append(Conv(cast(c["weight"]), cast(c.get("bias")), tuple(a["stride"]), tuple(a["padding"]),
                            tuple(a["dilation"]), a["groups"], shape, n.shape, name=n.where or n.name))
        elif n.op == "scale_shift" and "scale" in c and "shift" in c and c["scale"].numel() == shape[0] \
                and c["shift"].numel() == shape[0]:
            ops.append(ScaleShift(cast(c["scale"].reshape(-1)), cast(c["shift"].reshape(-1)), shape,
                                  name=n.where or n.name))
        elif n.op == "reshape":
            ops.append(Reshape(shape, n.shape, name=n.where or n.name))
        elif n.op in ("relu", "tanh", "sigmoid"):
            ops.append(Activation(n.op, shape, name=n.where or n.name))
        elif n.op == "leaky_relu" and 0 <= a["slope"] <= 1:
            ops.append(Activation("leaky_relu", shape, slope=float(a["slope"]), name=n.where or n.name))
        else:
            return None
        shape = n.shape
    return ops if ops else None


def check_graph(module: nn.Module, g: Graph, points: Tensor, root_name: str = "head") -> None:
    """The guard for graphs: g and the module agree in float64 at `points` (relative 1e-6).

    Skipped when the module was checked before in exactly its present state (guard.py's verdict
    cache); `g` is then the graph traced from that same state (read_graph's cache has the same key).
    """
    state = module_state(module, tuple(points.shape[1:])) if not isinstance(module, GraphModule) else None
    if verdict_cached(module, state, "graph"):
        return
    _check_graph(module, g, points, root_name)
    remember_verdict(module, state, "graph")


def _check_graph(module: nn.Module, g: Graph, points: Tensor, root_name: str) -> None:
    with torch.no_grad():
        x = points.detach().double()
        try:
            want = _float64_call(module)(x)
        except Exception as err:
            raise ConversionMismatchError(type(module).__name__, root_name,
                                          f"the module fails on points of the set ({type(err).__name__}: {err})") from err
        got = g.to(torch.float64).forward(x)
        if isinstance(want, Tensor) and _close(got, want):
            return
        err = _rel_error(got, want) if isinstance(want, Tensor) else math.inf
    raise ConversionMismatchError(
        type(module).__name__, root_name,
        f"the graph read from it computes another function than the module: largest relative difference "
        f"{err:.3g} at the set's points (tolerance {RELATIVE_TOLERANCE:g}); refusing to bound a function the "
        "model does not compute")


def _chunk(n: int, g: Graph, m: int, itemsize: int, method: str, budget: int, bound_upper: bool) -> int:
    widths = [num_elements(nd.shape) for nd in g.nodes]
    w = max(widths)
    rows = m * (2 if bound_upper else 1)
    if method in ("crown", "alpha-crown"):
        rows = max(rows, 2 * w)
    per = rows * w * itemsize * 8 if method != "ibp" else w * itemsize * 8
    return max(1, min(n, budget // max(1, per)))


def bound_module_graph(module: nn.Module, g: Graph, x0: Tensor, eps: Tensor, p: float,
                       basis: Optional[Tensor], scale: Optional[Tensor], C: Optional[Tensor], method: str,
                       bound_upper: bool, budget: int, alpha_options=None) -> Tuple[Tensor, Optional[Tensor]]:
    """Bounds of C·g(x) over the set, x = x0 + B·δ or x0 + scale⊙δ or x0 + δ, in chunks of samples
    (method "alpha-crown": alpha.py with `alpha_options`)."""
    g = g.to(dtype=x0.dtype, device=x0.device)
    n = x0.shape[0]
    m = num_elements(g.out_shape) if C is None else C.shape[-2]
    chunk = _chunk(n, g, m, x0.element_size(), method, budget, bound_upper)
    lows: List[Tensor] = []
    ups: List[Optional[Tensor]] = []
    for s in range(0, n, chunk):
        sl = slice(s, min(n, s + chunk))
        Cs = C[sl] if (C is not None and C.dim() == 3) else C
        sc = scale[sl] if (scale is not None and scale.dim() == x0.dim()) else scale
        im = InputMap(x0[sl], eps[sl], p, basis=basis, scale=sc)
        if method == "alpha-crown":
            from auditai.bounds.alpha import alpha_bound_graph

            lo, up = alpha_bound_graph(g, im, Cs, bound_upper, alpha_options)
        else:
            lo, up = bound_graph(g, im, Cs, method, bound_upper)
        lows.append(lo)
        ups.append(up)
    lower = torch.cat(lows)
    return lower, (torch.cat(ups) if bound_upper else None)
