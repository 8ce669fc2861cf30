"""An exact oracle for small ReLU heads over boxes: a mixed-integer linear program.

For f(z) = W_L·relu(… relu(W_1 z + b_1) …) + b_L on the box set z = z0 + B·δ, ‖δ‖_∞ ≤ ε,
the extreme of a spec row c·f(z) is the optimum of (big-M formulation, Tjeng et al. 2019):

    variables  δ ∈ [−ε, ε]^k,  h_j, a_j (pre/post activation of hidden layer j),  s_j ∈ {0, 1}
    h_1 = W_1 B δ + (W_1 z0 + b_1),   h_{j+1} = W_{j+1} a_j + b_{j+1}
    for a neuron with interval [l, u] (from interval arithmetic, computed here independently):
        l ≥ 0:  a = h            u ≤ 0:  a = 0
        else:   a ≥ h,  a ≥ 0,  a ≤ u·s,  a ≤ h − l·(1 − s)
    objective  c·(W_L a_{L−1} + b_L)      (minimised, and maximised as min of −c·…)

Any valid l ≤ h ≤ u makes the program exact (the big-M constants only need to be valid), so
the intervals are widened by a tiny margin against rounding. Solved with scipy.optimize.milp
(HiGHS) with a relative gap of 1e-9. Only numpy and scipy here: nothing from the engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp


def interval_bounds(weights: Sequence[np.ndarray], biases: Sequence[np.ndarray], A1: np.ndarray,
                    c1: np.ndarray, eps: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """Pre-activation intervals of each hidden layer (plain interval arithmetic), widened by a margin."""
    out = []
    centre = c1
    radius = np.abs(A1).sum(1) * eps
    for j in range(len(weights) - 1):
        if j > 0:
            W, b = weights[j], biases[j]
            centre, radius = W @ centre + b, np.abs(W) @ radius
        l, u = centre - radius, centre + radius
        pad = 1e-7 * (1.0 + np.maximum(np.abs(l), np.abs(u)))
        l, u = l - pad, u + pad
        out.append((l, u))
        lr, ur = np.maximum(l, 0), np.maximum(u, 0)
        centre, radius = (ur + lr) / 2, (ur - lr) / 2
    return out


@dataclass
class Extreme:
    value: float  # optimal objective of the MILP
    delta: np.ndarray  # the optimising δ (k,)


def spec_extremes(weights: Sequence[np.ndarray], biases: Sequence[np.ndarray], z0: np.ndarray,
                  B: np.ndarray, eps: float, c: np.ndarray) -> tuple[Extreme, Extreme]:
    """(min, max) of c·f(z0 + Bδ) over ‖δ‖_∞ ≤ eps, f = Linear/ReLU/…/Linear given by weights."""
    L = len(weights)
    k = B.shape[1]
    A1 = weights[0] @ B
    c1 = weights[0] @ z0 + biases[0]
    if L == 1:  # an affine head: the extremes are at a vertex, by Hölder
        g = c @ A1
        base = float(c @ c1)
        d = np.sign(g) * eps
        return Extreme(base - float(np.abs(g).sum() * eps), -d), Extreme(base + float(np.abs(g).sum() * eps), d)
    ivs = interval_bounds(weights, biases, A1, c1, eps)
    sizes = [w.shape[0] for w in weights[:-1]]
    # variable layout: δ | (h_j, a_j, s_j) for each hidden layer
    off = [k]
    for n in sizes:
        off.append(off[-1] + 3 * n)
    nv = off[-1]
    lb = np.full(nv, -np.inf)
    ub = np.full(nv, np.inf)
    integ = np.zeros(nv)
    lb[:k], ub[:k] = -eps, eps
    rows, lo, hi = [], [], []

    def add(row: np.ndarray, a: float, b: float) -> None:
        rows.append(row)
        lo.append(a)
        hi.append(b)

    for j, n in enumerate(sizes):
        h0, a0, s0 = off[j], off[j] + n, off[j] + 2 * n
        l, u = ivs[j]
        lb[h0:h0 + n], ub[h0:h0 + n] = l, u
        lb[a0:a0 + n], ub[a0:a0 + n] = 0.0, np.maximum(u, 0.0)
        lb[s0:s0 + n], ub[s0:s0 + n] = 0.0, 1.0
        integ[s0:s0 + n] = 1
        # h_j = W a_{j-1} + b (or A1 δ + c1)
        for i in range(n):
            r = np.zeros(nv)
            r[h0 + i] = 1.0
            if j == 0:
                r[:k] = -A1[i]
                add(r, c1[i], c1[i])
            else:
                pa = off[j - 1] + sizes[j - 1]
                r[pa:pa + sizes[j - 1]] = -weights[j][i]
                add(r, biases[j][i], biases[j][i])
        for i in range(n):
            h, a, s = h0 + i, a0 + i, s0 + i
            if l[i] >= 0:
                r = np.zeros(nv); r[a] = 1; r[h] = -1; add(r, 0.0, 0.0)
                ub[s] = lb[s] = 1.0
            elif u[i] <= 0:
                ub[a] = 0.0
                ub[s] = lb[s] = 0.0
            else:
                r = np.zeros(nv); r[a] = 1; r[h] = -1; add(r, 0.0, np.inf)  # a ≥ h
                r = np.zeros(nv); r[a] = 1; r[s] = -u[i]; add(r, -np.inf, 0.0)  # a ≤ u s
                r = np.zeros(nv); r[a] = 1; r[h] = -1; r[s] = -l[i]; add(r, -np.inf, -l[i])  # a ≤ h − l(1−s)
    last = off[-2] + sizes[-1]
    obj = np.zeros(nv)
    obj[last:last + sizes[-1]] = c @ weights[-1]
    const = float(c @ biases[-1])
    cons = LinearConstraint(np.array(rows), np.array(lo), np.array(hi))
    res = []
    for sign in (1.0, -1.0):
        r = milp(sign * obj, constraints=cons, integrality=integ, bounds=Bounds(lb, ub),
                 options={"mip_rel_gap": 1e-9, "time_limit": 30.0})
        if r.status != 0:
            raise RuntimeError(f"MILP did not solve to optimality: {r.message}")
        res.append(Extreme(sign * float(r.fun) + const, np.asarray(r.x[:k])))
    return res[0], res[1]


# ------------------------------------------------------------------ graphs (residual heads)
@dataclass
class GNode:
    """One node of a small ReLU graph: 'input', 'affine' (Σ_j W_j·x_{inputs[j]} + b) or 'relu'."""

    op: str
    inputs: tuple = ()
    weights: tuple = ()          # one matrix per input, for 'affine'
    bias: np.ndarray | None = None
    size: int = 0


def graph_intervals(nodes: Sequence[GNode], lo: np.ndarray, hi: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Interval of every node by plain interval arithmetic, widened by a margin (big-M constants)."""
    ivs: list = []
    for n in nodes:
        if n.op == "input":
            l, u = lo.astype(float), hi.astype(float)
        elif n.op == "relu":
            l, u = (np.maximum(v, 0.0) for v in ivs[n.inputs[0]])
        else:
            c = np.array(n.bias, dtype=float)
            r = np.zeros_like(c)
            for j, W in zip(n.inputs, n.weights):
                lj, uj = ivs[j]
                c = c + W @ ((lj + uj) / 2)
                r = r + np.abs(W) @ ((uj - lj) / 2)
            pad = 1e-7 * (1.0 + np.abs(c) + r)
            l, u = c - r - pad, c + r + pad
        ivs.append((l, u))
    return ivs


def graph_spec_extremes(nodes: Sequence[GNode], lo: np.ndarray, hi: np.ndarray, c: np.ndarray) -> tuple[float, float]:
    """(min, max) of c·(last node) over the box lo ≤ x ≤ hi for a DAG of affine and ReLU nodes
    (residual adds are affine nodes with two inputs). Same big-M formulation as `spec_extremes`."""
    ivs = graph_intervals(nodes, lo, hi)
    off, nv = [], 0
    for n in nodes:
        off.append(nv)
        nv += len(ivs[len(off) - 1][0]) * (2 if n.op == "relu" else 1)  # relu: value and indicator
    lb, ub, integ = np.full(nv, -np.inf), np.full(nv, np.inf), np.zeros(nv)
    rows, rlo, rhi = [], [], []

    def add(row, a, b):
        rows.append(row)
        rlo.append(a)
        rhi.append(b)

    for i, n in enumerate(nodes):
        l, u = ivs[i]
        k, o = len(l), off[i]
        lb[o:o + k], ub[o:o + k] = l, u
        if n.op == "affine":
            for t in range(k):
                r = np.zeros(nv)
                r[o + t] = 1.0
                for j, W in zip(n.inputs, n.weights):
                    r[off[j]:off[j] + W.shape[1]] -= W[t]
                add(r, n.bias[t], n.bias[t])
        elif n.op == "relu":
            hj = off[n.inputs[0]]
            hl, hu = ivs[n.inputs[0]]
            s0 = o + k
            lb[s0:s0 + k], ub[s0:s0 + k], integ[s0:s0 + k] = 0.0, 1.0, 1
            for t in range(k):
                a, h, s = o + t, hj + t, s0 + t
                r = np.zeros(nv); r[a] = 1; r[h] = -1; add(r, 0.0, np.inf)                   # a ≥ h
                r = np.zeros(nv); r[a] = 1; r[s] = -max(hu[t], 0.0); add(r, -np.inf, 0.0)     # a ≤ u s
                r = np.zeros(nv); r[a] = 1; r[h] = -1; r[s] = -min(hl[t], 0.0)
                add(r, -np.inf, -min(hl[t], 0.0))                                             # a ≤ h − l(1−s)
                lb[a] = 0.0
    last = off[-1]
    obj = np.zeros(nv)
    obj[last:last + len(c)] = c
    cons = LinearConstraint(np.array(rows), np.array(rlo), np.array(rhi))
    out = []
    for sign in (1.0, -1.0):
        r = milp(sign * obj, constraints=cons, integrality=integ, bounds=Bounds(lb, ub),
                 options={"mip_rel_gap": 1e-9, "time_limit": 30.0})
        if r.status != 0:
            raise RuntimeError(f"MILP did not solve to optimality: {r.message}")
        out.append(sign * float(r.fun))
    return out[0], out[1]
