"""Exact rewrites of a graph read from ONNX, so that chains read as chains (the chain engine's fast path).

Each rewrite computes the same function (up to float rounding):
- a reshape moves past an elementwise node (its constant reshaped with it) and past a Linear
  that keeps the last axis; two reshapes merge; a reshape to its own shape disappears;
- an Add/Mul by a per-output constant after a Linear or Conv goes into its bias and weight
  (MatMul + Add, a scale), an Add/Mul by a per-input constant before a Linear goes into its
  weight and bias (input normalisation);
- the head form: flat codes in, flat scores out (`flat_head`).
Only nodes with a single consumer are rewritten.
"""

from __future__ import annotations

import math

import torch

from auditai.bounds.graph import ACTIVATIONS, Graph, Node

_EW = ACTIVATIONS | {"neg", "identity"}


def _copy(n: Node, **kw) -> Node:
    d = {"name": n.name, "op": n.op, "inputs": n.inputs, "attrs": dict(n.attrs), "consts": dict(n.consts),
         "shape": n.shape, "where": n.where}
    d.update(kw)
    return Node(**d)


def _per_last(c: torch.Tensor, k: int) -> torch.Tensor | None:
    """c as a vector over the last axis (k entries), or None if it varies along another axis."""
    if c.dim() == 0 or c.numel() == 1:
        return c.reshape(1).expand(k).clone()
    if c.shape[-1] != k or c.numel() != k:
        return None
    return c.reshape(k)


def _step(nodes: list[Node], out: int) -> bool:
    users: list[list[int]] = [[] for _ in nodes]
    for i, n in enumerate(nodes):
        for j in n.inputs:
            users[j].append(i)
    for j, p in enumerate(nodes):
        if j == 0 or len(users[j]) != 1 or j == out:
            continue
        i = users[j][0]
        n = nodes[i]
        if len(n.inputs) != 1:
            continue
        src = nodes[p.inputs[0]] if p.inputs else None
        if p.op == "reshape":
            s1 = src.shape
            if n.op == "reshape":
                nodes[i] = _copy(n, inputs=p.inputs)
                nodes[j] = _copy(p, op="identity", attrs={})
                return True
            if (n.op in _EW or n.op in ("add_const", "mul_const")) and tuple(n.shape) == tuple(p.shape):
                consts = dict(n.consts)
                if "value" in consts:
                    v = consts["value"]
                    consts["value"] = v if v.numel() == 1 else v.expand(n.shape).reshape(s1).clone()
                nodes[j] = _copy(n, inputs=p.inputs, consts=consts, shape=s1)
                nodes[i] = _copy(p, inputs=(j,), shape=n.shape, attrs={"shape": list(n.shape)})
                return True
            if n.op == "linear" and s1 and s1[-1] == p.shape[-1]:
                out_f = n.shape[-1]
                nodes[j] = _copy(n, inputs=p.inputs, shape=tuple(s1[:-1]) + (out_f,))
                nodes[i] = _copy(p, inputs=(j,), shape=n.shape, attrs={"shape": list(n.shape)})
                return True
        if n.op in ("add_const", "mul_const") and p.op in ("linear", "conv", "conv_transpose"):
            w, b = p.consts["weight"], p.consts.get("bias")
            if p.op == "linear":
                k = w.shape[0]
                v = _per_last(n.consts["value"], k)
            else:
                k = w.shape[0] if p.op == "conv" else w.shape[1] * p.attrs.get("groups", 1)
                c = n.consts["value"]
                full = c.reshape((1,) * (len(p.shape) - c.dim()) + tuple(c.shape)) if c.dim() <= len(p.shape) else None
                v = None
                if full is not None and all(s == 1 for s in full.shape[1:]) and full.shape[0] in (1, k):
                    v = full.reshape(-1).expand(k).clone()
            if v is None:
                continue
            v = v.to(w.dtype)
            if n.op == "add_const":
                b = v if b is None else b + v
            else:
                if p.op == "conv_transpose":
                    g = p.attrs.get("groups", 1)
                    w = (w.reshape(g, w.shape[0] // g, w.shape[1], *w.shape[2:]) *
                         v.reshape(g, 1, -1, *([1] * (w.dim() - 2)))).reshape(w.shape)
                else:
                    w = w * v.reshape(-1, *([1] * (w.dim() - 1)))
                b = None if b is None else b * v
            consts = {"weight": w, **({"bias": b} if b is not None else {})}
            nodes[i] = _copy(p, consts=consts, shape=n.shape, name=n.name)
            nodes[j] = _copy(p, op="identity", attrs={}, consts={})
            return True
        if n.op == "linear" and p.op in ("add_const", "mul_const"):
            w, b = n.consts["weight"], n.consts.get("bias")
            v = _per_last(p.consts["value"], w.shape[1])
            if v is None:
                continue
            v = v.to(w.dtype)
            if p.op == "add_const":
                shift = w @ v
                b = shift if b is None else b + shift
            else:
                w = w * v.reshape(1, -1)
            nodes[i] = _copy(n, inputs=p.inputs, consts={"weight": w, **({"bias": b} if b is not None else {})})
            nodes[j] = _copy(p, op="identity", attrs={}, consts={})
            return True
    for j, p in enumerate(nodes):
        if p.op == "reshape" and tuple(nodes[p.inputs[0]].shape) == tuple(p.shape) and j != 0:
            nodes[j] = _copy(p, op="identity", attrs={})
            if j != out:
                return True
    return False


def simplify(g: Graph) -> Graph:
    """The rewrites of the module docstring, to a fixed point; dead and identity nodes dropped."""
    from auditai.bounds.trace import _prune

    nodes = [_copy(n) for n in g.nodes]
    for _ in range(10 * len(nodes) + 10):
        g2 = _prune(Graph(nodes, g.output))
        nodes, out = [_copy(n) for n in g2.nodes], g2.output
        g = Graph(nodes, out)
        if not _step(nodes, out):
            break
    return _prune(Graph(nodes, g.output))


def flat_head(g: Graph) -> Graph:
    """g with flat codes in and flat scores out: a reshape from (d,) first and to (m,) last."""
    nodes = [_copy(n) for n in g.nodes]
    out = g.output
    in_shape = nodes[0].shape
    if len(in_shape) != 1:
        d = math.prod(in_shape)
        first = Node("onnx_input_shape", "reshape", (0,), {"shape": list(in_shape)}, {}, tuple(in_shape), "input")
        nodes[0] = _copy(nodes[0], shape=(d,))
        nodes = [nodes[0], first] + [_copy(n, inputs=tuple(i + 1 for i in n.inputs)) for n in nodes[1:]]
        out += 1
    if len(nodes[out].shape) != 1 or out == 0:
        m = math.prod(nodes[out].shape)
        nodes.append(Node("onnx_output_flat", "reshape", (out,), {"shape": [m]}, {}, (m,), "output"))
        out = len(nodes) - 1
    return simplify(Graph(nodes, out))


__all__ = ["flat_head", "simplify"]
