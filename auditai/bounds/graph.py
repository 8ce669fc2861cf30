"""The graph IR: a head (or any network) as nodes in topological order (DESIGN.md, "Bound engine").

Each `Node` is an op with its input nodes (indices of earlier nodes), its constant tensors and
its JSON-able attributes; `shape` is its per-sample output shape. Node 0 is the input. Readers
produce the IR (torch modules by tracing, `trace.py`; ONNX graphs, `auditai.onnx_io`; the model
file); the bound methods (`graph_bounds.py`) are pure functions over it.

Ops, by how they are bounded:
- linear (affine in their inputs jointly): linear, conv, conv_transpose, scale_shift
  (BatchNorm, per-element Mul/Add by constants), add, sub, neg, cat, slice, reshape,
  permute, pad, avgpool, upsample (nearest, bilinear), mean, mul_const, add_const;
- elementwise nonlinear: relu, leaky_relu, tanh, sigmoid, hardtanh, gelu, silu, elu, softplus;
- maxpool.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

LINEAR_OPS = frozenset({
    "linear", "conv", "conv_transpose", "scale_shift", "add", "sub", "neg", "cat", "slice",
    "reshape", "permute", "pad", "avgpool", "upsample", "mean", "mul_const", "add_const", "identity",
})
ACTIVATIONS = frozenset({"relu", "leaky_relu", "tanh", "sigmoid", "hardtanh", "gelu", "silu", "elu", "softplus"})
NONLINEAR_OPS = ACTIVATIONS | {"maxpool"}
PIECEWISE_LINEAR = frozenset({"relu", "leaky_relu", "hardtanh", "maxpool"}) | LINEAR_OPS
SUPPORTED_OPS = LINEAR_OPS | NONLINEAR_OPS


@dataclass(eq=False)
class Node:
    """One op of the graph: `inputs` index earlier nodes; `shape` excludes the batch."""

    name: str
    op: str
    inputs: Tuple[int, ...] = ()
    attrs: Dict[str, Any] = field(default_factory=dict)
    consts: Dict[str, Tensor] = field(default_factory=dict)
    shape: Tuple[int, ...] = ()
    where: str = ""


@dataclass(eq=False)
class Graph:
    """Nodes in topological order; node 0 is the input, `output` the node whose value is returned."""

    nodes: List[Node]
    output: int = -1

    def __post_init__(self) -> None:
        if self.output < 0:
            self.output = len(self.nodes) - 1

    @property
    def in_shape(self) -> Tuple[int, ...]:
        return self.nodes[0].shape

    @property
    def out_shape(self) -> Tuple[int, ...]:
        return self.nodes[self.output].shape

    def consumers(self) -> List[List[int]]:
        out: List[List[int]] = [[] for _ in self.nodes]
        for i, n in enumerate(self.nodes):
            for j in n.inputs:
                out[j].append(i)
        return out

    def is_chain(self) -> bool:
        """Every node takes exactly the node before it (a plain sequence of layers)."""
        return all(n.inputs == (i - 1,) for i, n in enumerate(self.nodes) if i > 0) and \
            self.output == len(self.nodes) - 1

    def piecewise_linear(self) -> bool:
        return all(n.op in PIECEWISE_LINEAR or n.op == "input" for n in self.nodes)

    def forward(self, x: Tensor, keep: bool = False):
        """The graph's function on a batch x (N, *in_shape); all values when `keep`."""
        vals: List[Optional[Tensor]] = [None] * len(self.nodes)
        vals[0] = x
        for i in range(1, len(self.nodes)):
            n = self.nodes[i]
            vals[i] = apply(n, *[vals[j] for j in n.inputs])
        return vals if keep else vals[self.output]

    def to(self, dtype: Optional[torch.dtype] = None, device=None) -> "Graph":
        """A copy with floating constants cast (gradients through the cast are kept)."""
        def cast(t: Tensor) -> Tensor:
            if not t.is_floating_point():
                return t.to(device=device) if device is not None else t
            return t.to(dtype=dtype or t.dtype, device=device or t.device)
        nodes = [Node(n.name, n.op, n.inputs, dict(n.attrs), {k: cast(v) for k, v in n.consts.items()},
                      n.shape, n.where) for n in self.nodes]
        return Graph(nodes, self.output)

    def describe(self) -> str:
        return "\n".join(f"{i:3d} {n.op:14s} {n.name} <- {list(n.inputs)} {n.shape}" for i, n in enumerate(self.nodes))


# ------------------------------------------------------------------------ forward rules
def _slice(x: Tensor, a: Dict[str, Any]) -> Tensor:
    dim = a["dim"] + 1
    return x.narrow(dim, a["start"], a["length"]) if a.get("step", 1) == 1 else \
        x.index_select(dim, torch.arange(a["start"], a["start"] + a["length"] * a["step"], a["step"], device=x.device))


def _upsample(x: Tensor, a: Dict[str, Any]) -> Tensor:
    mode = a["mode"]
    kw = {} if mode == "nearest" else {"align_corners": bool(a.get("align_corners", False))}
    return F.interpolate(x, size=tuple(a["size"]), mode=mode, **kw)


def _pool(x: Tensor, a: Dict[str, Any], maxpool: bool) -> Tensor:
    nd = len(a["kernel"])
    if maxpool:
        f = F.max_pool1d if nd == 1 else F.max_pool2d
        return f(x, a["kernel"], a["stride"], a["padding"], a.get("dilation", 1), ceil_mode=a.get("ceil", False))
    f = F.avg_pool1d if nd == 1 else F.avg_pool2d
    kw = {} if nd == 1 else {"divisor_override": a.get("divisor")}
    return f(x, a["kernel"], a["stride"], a["padding"], ceil_mode=a.get("ceil", False),
             count_include_pad=a.get("count_include_pad", True), **kw)


def _conv(x: Tensor, n: Node, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    a = n.attrs
    nd = x.dim() - 2
    if n.op == "conv":
        f = (F.conv1d, F.conv2d, F.conv3d)[nd - 1]
        return f(x, weight, bias, a["stride"], a["padding"], a["dilation"], a["groups"])
    f = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[nd - 1]
    return f(x, weight, bias, a["stride"], a["padding"], a["output_padding"], a["groups"], a["dilation"])


def _per_channel(v: Tensor, x: Tensor) -> Tensor:
    return v.reshape(-1, *([1] * (x.dim() - 2)))


_ELEMENTWISE: Dict[str, Callable[[Tensor, Dict[str, Any]], Tensor]] = {
    "relu": lambda x, a: torch.relu(x),
    "leaky_relu": lambda x, a: F.leaky_relu(x, a["slope"]),
    "tanh": lambda x, a: torch.tanh(x),
    "sigmoid": lambda x, a: torch.sigmoid(x),
    "hardtanh": lambda x, a: torch.clamp(x, a["min"], a["max"]),
    "gelu": lambda x, a: F.gelu(x, approximate=a.get("approximate", "none")),
    "silu": lambda x, a: F.silu(x),
    "elu": lambda x, a: F.elu(x, a["alpha"]),
    "softplus": lambda x, a: F.softplus(x, a.get("beta", 1.0), a.get("threshold", 20.0)),
}


def apply(n: Node, *xs: Tensor) -> Tensor:
    """Node `n` on batched inputs (each (N, *shape)); constants broadcast per sample."""
    a, c, op = n.attrs, n.consts, n.op
    if op in _ELEMENTWISE:
        return _ELEMENTWISE[op](xs[0], a)
    x = xs[0]
    if op == "identity":
        return x
    if op == "linear":
        return F.linear(x, c["weight"], c.get("bias"))
    if op in ("conv", "conv_transpose"):
        return _conv(x, n, c["weight"], c.get("bias"))
    if op == "scale_shift":  # x·scale + shift, constants broadcast against the per-sample shape
        y = x * c["scale"] if "scale" in c else x
        return y + c["shift"] if "shift" in c else y
    if op == "mul_const":
        return x * c["value"]
    if op == "add_const":
        return x + c["value"]
    if op == "add":
        return xs[0] + xs[1]
    if op == "sub":
        return xs[0] - xs[1]
    if op == "neg":
        return -x
    if op == "cat":
        return torch.cat(xs, dim=a["dim"] + 1)
    if op == "slice":
        return _slice(x, a)
    if op == "reshape":
        return x.reshape(x.shape[0], *a["shape"])
    if op == "permute":
        return x.permute(0, *[d + 1 for d in a["dims"]])
    if op == "pad":
        return F.pad(x, tuple(a["pads"]), value=float(a.get("value", 0.0)))
    if op == "avgpool":
        return _pool(x, a, maxpool=False)
    if op == "maxpool":
        return _pool(x, a, maxpool=True)
    if op == "upsample":
        return _upsample(x, a)
    if op == "mean":
        return x.mean(dim=tuple(d + 1 for d in a["dims"]), keepdim=bool(a.get("keepdim", False)))
    raise ValueError(f"node {n.name}: unknown op {op!r}")


def infer_shapes(nodes: Sequence[Node], in_shape: Sequence[int], dtype=torch.float64, device=None) -> None:
    """Fill every node's per-sample `shape` by running the graph on a zero batch of 2."""
    vals = [torch.zeros(2, *in_shape, dtype=dtype, device=device)]
    nodes[0].shape = tuple(int(s) for s in in_shape)
    for n in nodes[1:]:
        saved = n.consts
        n.consts = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in saved.items()}
        try:
            y = apply(n, *[vals[j] for j in n.inputs])
        finally:
            n.consts = saved
        n.shape = tuple(y.shape[1:])
        vals.append(y)


def num_elements(shape: Sequence[int]) -> int:
    return int(math.prod(shape))


class GraphModule(torch.nn.Module):
    """An nn.Module that computes a Graph: what the ONNX reader and the model file return for a
    head that is not a chain. Its constants are buffers (so `.to()`, `.double()`, `state_dict`
    work); the engine bounds `module.graph` directly instead of tracing it."""

    def __init__(self, graph: Graph) -> None:
        super().__init__()
        self._names: List[Dict[str, str]] = []
        nodes = []
        for i, n in enumerate(graph.nodes):
            names = {}
            for k, v in n.consts.items():
                key = f"n{i}_{k}"
                self.register_buffer(key, v.detach().clone())
                names[k] = key
            self._names.append(names)
            nodes.append(Node(n.name, n.op, n.inputs, dict(n.attrs), {}, n.shape, n.where))
        self._skeleton = Graph(nodes, graph.output)

    @property
    def graph(self) -> Graph:
        nodes = [Node(n.name, n.op, n.inputs, n.attrs, {k: getattr(self, key) for k, key in names.items()},
                      n.shape, n.where) for n, names in zip(self._skeleton.nodes, self._names)]
        return Graph(nodes, self._skeleton.output)

    def forward(self, x: Tensor) -> Tensor:
        return self.graph.forward(x)
