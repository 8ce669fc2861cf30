"""The graph IR as plain data: JSON nodes + named tensors, for the model file (DESIGN.md, "Layout").

A head that is not a chain of the saved layer types is stored as its graph IR (read by
`auditai.bounds.graph_engine.read_graph`): each node's op, inputs, JSON attributes and the names
of its constant tensors (kept in the model file's safetensors member). Loading validates every
node (a known op, inputs that point backwards, attributes of plain JSON types, constants that
exist) and rebuilds a `GraphModule`: nothing from the file is executed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from auditai.bounds.graph import SUPPORTED_OPS, Graph, GraphModule, Node, infer_shapes
from auditai.errors import ModelFileError

_JSON_SCALARS = (str, int, float, bool, type(None))


def _jsonable_attr(v: Any) -> bool:
    if isinstance(v, _JSON_SCALARS):
        return True
    if isinstance(v, list):
        return all(_jsonable_attr(x) for x in v)
    return False


def graph_to_data(g: Graph, prefix: str = "head_graph") -> tuple[dict, dict[str, Tensor]]:
    """(JSON-able description, tensors) of a graph; tensor keys start with `prefix`."""
    nodes, tensors = [], {}
    for i, n in enumerate(g.nodes):
        consts = {}
        for k, t in n.consts.items():
            key = f"{prefix}/{i}/{k}"
            tensors[key] = t.detach().cpu().clone().contiguous()
            consts[k] = key
        attrs = {k: (list(v) if isinstance(v, tuple) else v) for k, v in n.attrs.items()}
        for k, v in attrs.items():
            if not _jsonable_attr(v):
                raise ModelFileError(f"node {n.name} ({n.op}): attribute {k}={v!r} cannot be stored")
        nodes.append({"name": n.name, "op": n.op, "inputs": list(n.inputs), "attrs": attrs, "consts": consts,
                      "shape": list(n.shape), "where": n.where})
    return {"nodes": nodes, "output": g.output}, tensors


def graph_from_data(data: Any, tensors: Mapping[str, Tensor], where: str, what: str = "head") -> GraphModule:
    """Rebuild a GraphModule from `graph_to_data`'s output, validating every field.

    `what` names the part in error messages ("head", "classifier")."""
    if not isinstance(data, dict) or not isinstance(data.get("nodes"), list) or not data["nodes"]:
        raise ModelFileError(f"{where}: the {what} graph must be an object with a non-empty 'nodes' list")
    nodes: list[Node] = []
    for i, d in enumerate(data["nodes"]):
        at = f"{where}: {what} graph node {i}"
        if not isinstance(d, dict):
            raise ModelFileError(f"{at} is not an object")
        op = d.get("op")
        if i == 0:
            if op != "input":
                raise ModelFileError(f"{at} must be the input, got op {op!r}")
        elif op not in SUPPORTED_OPS:
            raise ModelFileError(f"{at}: unknown op {op!r} (known: {', '.join(sorted(SUPPORTED_OPS))})")
        inputs = d.get("inputs", [])
        if not isinstance(inputs, list) or not all(isinstance(j, int) and 0 <= j < i for j in inputs) or \
                (i > 0 and not inputs):
            raise ModelFileError(f"{at} ({op}): inputs {inputs!r} must be indices of earlier nodes")
        attrs = d.get("attrs", {})
        if not isinstance(attrs, dict) or not all(isinstance(k, str) and _jsonable_attr(v) for k, v in attrs.items()):
            raise ModelFileError(f"{at} ({op}): attributes must be an object of plain JSON values")
        consts = {}
        for k, key in (d.get("consts") or {}).items():
            if key not in tensors:
                raise ModelFileError(f"{at} ({op}): tensor {key!r} is missing")
            consts[k] = tensors[key]
        shape = d.get("shape")
        if not isinstance(shape, list) or not all(isinstance(s, int) and s > 0 for s in shape):
            raise ModelFileError(f"{at} ({op}): shape {shape!r} must be a list of positive integers")
        nodes.append(Node(str(d.get("name", f"n{i}")), op, tuple(inputs), attrs, consts, tuple(shape),
                          str(d.get("where", ""))))
    out = data.get("output", len(nodes) - 1)
    if not isinstance(out, int) or not 0 < out < len(nodes):
        raise ModelFileError(f"{where}: {what} graph output {out!r} is not a node index")
    stored = [n.shape for n in nodes]
    try:
        infer_shapes(nodes, nodes[0].shape)
    except Exception as e:  # noqa: BLE001 - any failure means the stored graph does not fit together
        raise ModelFileError(f"{where}: the {what} graph does not compute: {type(e).__name__}: {e}") from None
    for i, (n, s) in enumerate(zip(nodes, stored)):
        if tuple(n.shape) != tuple(s):
            raise ModelFileError(f"{where}: {what} graph node {i} ({n.op}) gives shape {n.shape}, the file says {s}")
    return GraphModule(Graph(nodes, out)).eval()


def read_head_graph(head: nn.Module, latent_dim: int) -> Graph:
    """The head's graph IR, checked against the head at random codes (float64, relative 1e-6)."""
    return read_module_graph(head, (int(latent_dim),), "head")


def read_module_graph(module: nn.Module, in_shape: tuple[int, ...], name: str) -> Graph:
    """The graph IR of `module` (inputs of per-sample shape `in_shape`), checked against the
    module at random inputs (float64, relative 1e-6); an op without a rule raises
    UnsupportedLayerError naming it and its position under `name`."""
    from auditai.bounds.graph_engine import check_graph, read_graph

    shape = tuple(int(s) for s in in_shape)
    g = read_graph(module, shape, name)
    gen = torch.Generator().manual_seed(0)
    pts = torch.randn(8, *shape, generator=gen, dtype=torch.float64)
    check_graph(module, g, pts, name)
    if any(not math.isfinite(float(t.detach().double().abs().max())) for n in g.nodes for t in n.consts.values()
           if t.is_floating_point() and t.numel()):
        raise ModelFileError(f"the {name} has constants that are not finite")
    return g
