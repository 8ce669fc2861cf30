"""ExactLine on piecewise-linear graphs: every linear piece of a graph along a segment.

Along z(t) = z0 + t·v a piecewise-linear graph is linear between consecutive breakpoints. The
nodes are visited in topological order with the values of every node at every point so far;
where a nonlinear node's input changes piece between two neighbouring points (a ReLU or
LeakyReLU input changes sign, a Hardtanh input passes a clamp value, the argmax of a MaxPool
window changes), the crossing is inserted as a new point, and every value computed so far is
interpolated there (exact: all of them are linear on the segment). Then the node is applied.
The result has the same form as the chain walk in exactline.py: points sorted per sample.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import Tensor

from auditai.bounds.graph import Graph, apply
from auditai.bounds.maxpool import windows

MAX_MAXPOOL_ROUNDS = 64


def _sorted_unique(sid: Tensor, t: Tensor) -> Tuple[Tensor, Tensor]:
    """Order by (sample, t) and a mask keeping the first of equal (sample, t) pairs."""
    o = torch.argsort(t, stable=True)
    o = o[torch.argsort(sid[o], stable=True)]
    s2, t2 = sid[o], t[o]
    keep = torch.ones_like(t2, dtype=torch.bool)
    keep[1:] = ~((s2[1:] == s2[:-1]) & (t2[1:] == t2[:-1]))
    return o[keep], keep


def _insert(vals: List[Optional[Tensor]], sid: Tensor, t: Tensor, seg: Tensor, lam: Tensor,
            pin: Optional[Tuple[int, Tensor, Tensor]] = None):
    """Insert points at fraction `lam` of segments `seg` (index of the left point) into every value.

    `pin` = (node, flat coordinate per new point, value): set that coordinate exactly (the kink).
    """
    t_new = t[seg] + lam * (t[seg + 1] - t[seg])
    sid_all = torch.cat([sid, sid[seg]])
    t_all = torch.cat([t, t_new])
    out = []
    for k, v in enumerate(vals):
        if v is None:
            out.append(None)
            continue
        lam_b = lam.reshape(-1, *([1] * (v.dim() - 1))).to(v.dtype)
        nv = v[seg] + lam_b * (v[seg + 1] - v[seg])
        if pin is not None and pin[0] == k:
            flat = nv.reshape(nv.shape[0], -1)
            flat[torch.arange(flat.shape[0], device=flat.device), pin[1]] = pin[2]
            nv = flat.reshape(nv.shape)
        out.append(torch.cat([v, nv]))
    o, _ = _sorted_unique(sid_all, t_all)
    return sid_all[o], t_all[o], [None if v is None else v[o] for v in out]


def _refine_level(vals, src: int, level: float, sid: Tensor, t: Tensor):
    """Insert the points where coordinates of node `src` cross `level` between neighbours."""
    y = vals[src].reshape(vals[src].shape[0], -1) - level
    same = (sid[1:] == sid[:-1]).unsqueeze(1)
    pos, neg = y > 0, y < 0
    cross = ((pos[:-1] & neg[1:]) | (neg[:-1] & pos[1:])) & same
    s, j = cross.nonzero(as_tuple=True)
    if not s.numel():
        return sid, t, vals
    ya, yb = y[s, j], y[s + 1, j]
    lam = ya / (ya - yb)
    return _insert(vals, sid, t, s, lam, (src, j, torch.full_like(ya, level)))


def _refine_maxpool(vals, node, src: int, sid: Tensor, t: Tensor):
    """Insert the points where the argmax of a window switches between neighbours."""
    for _ in range(MAX_MAXPOOL_ROUNDS):
        w = windows(vals[src], node.attrs, float("-inf"))         # (P, C, K, Q)
        arg = w.argmax(2)                                           # (P, C, Q)
        P = w.shape[0]
        a_l, b_r = arg[:-1], arg[1:]
        same = (sid[1:] == sid[:-1]).reshape(-1, 1, 1)
        wl, wr = w[:-1], w[1:]
        xa_l = wl.gather(2, a_l.unsqueeze(2)).squeeze(2)
        xb_l = wl.gather(2, b_r.unsqueeze(2)).squeeze(2)
        xa_r = wr.gather(2, a_l.unsqueeze(2)).squeeze(2)
        xb_r = wr.gather(2, b_r.unsqueeze(2)).squeeze(2)
        switch = same & (a_l != b_r) & (xa_l > xb_l) & (xb_r > xa_r)
        if not switch.any() or P < 2:
            return sid, t, vals
        s, c, q = switch.nonzero(as_tuple=True)
        da, db = xa_l[s, c, q] - xb_l[s, c, q], xa_r[s, c, q] - xb_r[s, c, q]
        lam = (da / (da - db)).clamp(0, 1)
        sid, t, vals = _insert(vals, sid, t, s, lam)
    return sid, t, vals


def walk_graph(g: Graph, sid: Tensor, t: Tensor, x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """(sample ids, t, output values) at every breakpoint of the graph along the points' lines."""
    vals: List[Optional[Tensor]] = [None] * len(g.nodes)
    vals[0] = x
    for i in range(1, len(g.nodes)):
        n = g.nodes[i]
        src = n.inputs[0]
        if n.op in ("relu", "leaky_relu"):
            sid, t, vals = _refine_level(vals, src, 0.0, sid, t)
        elif n.op == "hardtanh":
            for level in (float(n.attrs["min"]), float(n.attrs["max"])):
                if abs(level) != float("inf"):
                    sid, t, vals = _refine_level(vals, src, level, sid, t)
        elif n.op == "maxpool":
            sid, t, vals = _refine_maxpool(vals, n, src, sid, t)
        elif n.op not in ("input",) and not g.piecewise_linear():
            raise ValueError(f"node {n.name} ({n.op}) is not piecewise linear")
        vals[i] = apply(n, *[vals[j] for j in n.inputs])
    return sid, t, vals[g.output]
