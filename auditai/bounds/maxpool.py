"""Max pooling in the graph bounds: its windows, its relaxation and its CROWN backward step.

The relaxation of y = max over a window: y ≥ x_j* (j* = argmax of the window's lower bounds);
y ≤ x_j* where x_j* dominates the window (its lower bound ≥ every other upper bound), else y ≤ the
largest upper bound, a constant. `graph_bounds` uses it for CROWN over graphs, `exactline_graph`
the windows.
"""

from __future__ import annotations

import math
from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from auditai.bounds.graph import Node


def windows(x: Tensor, a: dict, fill: float) -> Tensor:
    """(N, C, K, P): the pooling windows of x (N, C, *spatial), padding filled with `fill`."""
    nd = len(a["kernel"])
    if nd == 1:
        x = x.unsqueeze(2)
    k = (1, a["kernel"][0]) if nd == 1 else tuple(a["kernel"])
    s = (1, a["stride"][0]) if nd == 1 else tuple(a["stride"])
    pd = (0, a["padding"][0]) if nd == 1 else tuple(a["padding"])
    dl = a.get("dilation", 1)
    dl = (1, dl[0] if isinstance(dl, (list, tuple)) else dl) if nd == 1 else \
        (tuple(dl) if isinstance(dl, (list, tuple)) else (dl, dl))
    x = F.pad(x, (pd[1], pd[1], pd[0], pd[0]), value=fill)
    N, C = x.shape[:2]
    w = F.unfold(x.reshape(N * C, 1, *x.shape[2:]), k, dilation=dl, stride=s)  # (N·C, K, P)
    return w.reshape(N, C, w.shape[1], w.shape[2])


def maxpool_relaxation(n: Node, l: Tensor, u: Tensor):
    """max over a window ≥ x_j* (j* = argmax of the lower bounds); ≤ x_j* when x_j* dominates the
    window (l_j* ≥ every other u), else ≤ the largest upper bound (a constant)."""
    a = n.attrs
    lw, uw = windows(l, a, -math.inf), windows(u, a, -math.inf)
    jstar = lw.argmax(2, keepdim=True)                            # (N, C, 1, P)
    lmax = lw.gather(2, jstar).squeeze(2)
    umax = uw.amax(2)
    others = uw.scatter(2, jstar, -math.inf).amax(2)
    dominant = lmax >= others
    spatial = l.shape[2:]
    pos = torch.arange(math.prod(spatial), dtype=l.dtype, device=l.device).reshape(1, 1, *spatial)
    pw = windows(pos, a, -1.0)                                   # (1, 1, K, P) input positions
    idx = pw.expand(l.shape[0], l.shape[1], -1, -1).gather(2, jstar).squeeze(2).long()
    return idx.reshape(*l.shape[:2], *n.shape[1:]), dominant.reshape(*l.shape[:2], *n.shape[1:]), \
        umax.reshape(*l.shape[:2], *n.shape[1:])


def maxpool_backward(A: Tensor, relaxation, in_shape) -> Tuple[List[Tensor], Tensor]:
    """The coefficients A (L, m, *out) of a max pool mapped to its input (lower line where A ≥ 0,
    upper where A < 0) and the bias the constant upper lines add (N, m)."""
    idx, dominant, umax = relaxation
    pos, neg = A.clamp(min=0), A.clamp(max=0)
    N = idx.shape[0]
    L, m = A.shape[:2]
    if L != N:
        pos, neg = pos.expand(N, *pos.shape[1:]), neg.expand(N, *neg.shape[1:])
    dom = dominant.unsqueeze(1)
    to_x = pos + torch.where(dom, neg, torch.zeros_like(neg))        # coefficients on x_j*
    const = torch.where(dom, torch.zeros_like(neg), neg)             # times the constant umax
    bias = (const * umax.unsqueeze(1)).flatten(2).sum(-1)
    C = in_shape[0]
    out = torch.zeros(N, m, C, math.prod(in_shape[1:]), dtype=A.dtype, device=A.device)
    ix = idx.flatten(2).unsqueeze(1).expand(N, m, C, -1)
    out.scatter_add_(3, ix, to_x.flatten(3))
    return [out.reshape(N, m, *in_shape)], bias

