"""Write a graph head (the IR, `auditai.bounds.graph`) as the ONNX network δ ↦ f(z0 + B·δ).

Used by `auditai.onnx_io.head_to_onnx` for heads that are not chains of layers (residual, pooling,
generator-shaped heads): each IR node becomes the ONNX node(s) computing it for a batch of one
(opset 17). An op without an ONNX form here (GELU with the tanh approximation, average pooling
with a divisor override) is refused with an error naming its node.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from torch import Tensor

from auditai.bounds.graph import Graph
from auditai.errors import UnsupportedLayerError

OPSET = 17


class _Writer:
    def __init__(self) -> None:
        from onnx import helper

        self.h = helper
        self.nodes: list = []
        self.inits: list = []
        self.k = 0

    def name(self, p: str) -> str:
        self.k += 1
        return f"{p}_{self.k}"

    def const(self, a: Any, p: str, dtype=np.float32) -> str:
        from onnx import numpy_helper

        n = self.name(p)
        arr = a.detach().cpu().double().numpy() if isinstance(a, Tensor) else np.asarray(a)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr.astype(dtype)), n))
        return n

    def node(self, op: str, ins: list, **attrs) -> str:
        out = self.name(f"{op.lower()}_out")
        self.nodes.append(self.h.make_node(op, ins, [out], name=self.name(op), **attrs))
        return out


def _pads(torch_pads: list, rank: int) -> list:
    """F.pad's (last dim first) pairs as ONNX pads over all `rank` axes (the batch axis unpadded)."""
    begin, end = [0] * rank, [0] * rank
    for i in range(len(torch_pads) // 2):
        begin[rank - 1 - i], end[rank - 1 - i] = int(torch_pads[2 * i]), int(torch_pads[2 * i + 1])
    return begin + end


def graph_to_onnx(g: Graph, z0: Tensor, basis: Tensor) -> Any:
    """ONNX model of δ (1×k) ↦ g(z0 + B·δ) flattened to 1×m; g's input is flat (d,)."""
    import onnx
    from onnx import TensorProto, helper

    if len(g.in_shape) != 1:
        raise UnsupportedLayerError("GraphModule", "head", f"its input has shape {list(g.in_shape)}, not flat codes")
    w = _Writer()
    B, z0d = basis.detach().double(), z0.detach().double().reshape(-1)
    k = B.shape[1]
    vals = {0: w.node("Gemm", ["delta", w.const(B, "B"), w.const(z0d, "z0")], transB=1)}
    for i, n in enumerate(g.nodes[1:], start=1):
        xs = [vals[j] for j in n.inputs]
        x, a, c, rank = xs[0], n.attrs, n.consts, len(g.nodes[n.inputs[0]].shape) + 1
        op = n.op
        if op == "linear":
            y = w.node("MatMul", [x, w.const(c["weight"].T, "W")])
            if c.get("bias") is not None:
                y = w.node("Add", [y, w.const(c["bias"], "b")])
        elif op in ("conv", "conv_transpose"):
            nd = c["weight"].dim() - 2
            ins = [x, w.const(c["weight"], "W")] + ([w.const(c["bias"], "b")] if c.get("bias") is not None else [])
            kw = {"strides": list(a["stride"]), "pads": list(a["padding"]) * 2, "dilations": list(a["dilation"]),
                  "group": int(a["groups"]), "kernel_shape": list(c["weight"].shape[2:])}
            if op == "conv_transpose":
                kw["output_padding"] = list(a["output_padding"])
            y = w.node("Conv" if op == "conv" else "ConvTranspose", ins, **kw)
            assert nd == len(a["stride"])
        elif op in ("scale_shift", "mul_const", "add_const"):
            y = x
            if "scale" in c or op == "mul_const":
                y = w.node("Mul", [y, w.const(c.get("scale", c.get("value")), "s")])
            if "shift" in c or op == "add_const":
                y = w.node("Add", [y, w.const(c.get("shift", c.get("value")), "t")])
        elif op in ("add", "sub"):
            y = w.node("Add" if op == "add" else "Sub", xs)
        elif op == "neg":
            y = w.node("Neg", [x])
        elif op == "identity":
            y = w.node("Identity", [x])
        elif op == "cat":
            y = w.node("Concat", xs, axis=int(a["dim"]) + 1)
        elif op == "slice":
            s, ln, st = int(a["start"]), int(a["length"]), int(a.get("step", 1))
            y = w.node("Slice", [x, w.const([s], "st", np.int64), w.const([s + ln * st], "en", np.int64),
                                 w.const([int(a["dim"]) + 1], "ax", np.int64), w.const([st], "sp", np.int64)])
        elif op == "reshape":
            y = w.node("Reshape", [x, w.const([1, *a["shape"]], "shape", np.int64)])
        elif op == "permute":
            y = w.node("Transpose", [x], perm=[0] + [int(d) + 1 for d in a["dims"]])
        elif op == "pad":
            y = w.node("Pad", [x, w.const(_pads(list(a["pads"]), rank), "pads", np.int64),
                               w.const(float(a.get("value", 0.0)), "v")], mode="constant")
        elif op in ("avgpool", "maxpool"):
            nd = len(a["kernel"])
            kw = {"kernel_shape": list(a["kernel"]), "strides": list(a["stride"]), "pads": list(a["padding"]) * 2}
            if op == "maxpool":
                dl = a.get("dilation", 1)
                kw["dilations"] = list(dl) if isinstance(dl, (list, tuple)) else [int(dl)] * nd
                y = w.node("MaxPool", [x], **kw)
            else:
                if a.get("divisor") is not None or a.get("ceil"):
                    raise UnsupportedLayerError("avgpool", n.where or n.name, "divisor_override / ceil_mode is not exported")
                y = w.node("AveragePool", [x], count_include_pad=int(bool(a.get("count_include_pad", True))), **kw)
        elif op == "upsample":
            in_sh = g.nodes[n.inputs[0]].shape
            sizes = w.const([1, in_sh[0], *a["size"]], "sizes", np.int64)
            if a["mode"] == "nearest":
                kw = {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}
            else:
                kw = {"mode": "linear", "coordinate_transformation_mode":
                      "align_corners" if a.get("align_corners") else "half_pixel"}
            y = w.node("Resize", [x, "", "", sizes], **kw)
        elif op == "mean":
            y = w.node("ReduceMean", [x], axes=[int(d) + 1 for d in a["dims"]], keepdims=int(bool(a.get("keepdim"))))
        elif op in ("relu", "tanh", "sigmoid"):
            y = w.node({"relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid"}[op], [x])
        elif op == "leaky_relu":
            y = w.node("LeakyRelu", [x], alpha=float(a["slope"]))
        elif op == "elu":
            y = w.node("Elu", [x], alpha=float(a["alpha"]))
        elif op == "hardtanh":
            lo = "" if math.isinf(a["min"]) else w.const(float(a["min"]), "lo")
            hi = "" if math.isinf(a["max"]) else w.const(float(a["max"]), "hi")
            y = w.node("Clip", [x, lo, hi])
        elif op == "silu":
            y = w.node("Mul", [x, w.node("Sigmoid", [x])])
        elif op == "gelu" and a.get("approximate", "none") == "none":
            e = w.node("Erf", [w.node("Div", [x, w.const(math.sqrt(2.0), "r2")])])
            y = w.node("Mul", [w.node("Mul", [x, w.node("Add", [e, w.const(1.0, "one")])]), w.const(0.5, "half")])
        elif op == "softplus" and float(a.get("beta", 1.0)) == 1.0:
            y = w.node("Softplus", [x])
        else:
            raise UnsupportedLayerError(op, n.where or n.name, "no ONNX export for this op")
        vals[i] = y
    m = math.prod(g.out_shape)
    out = w.node("Reshape", [vals[g.output], w.const([1, m], "out_shape", np.int64)])
    graph = helper.make_graph(
        w.nodes, "auditai_unit_test",
        [helper.make_tensor_value_info("delta", TensorProto.FLOAT, [1, k])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, m])], initializer=w.inits)
    model = helper.make_model(graph, producer_name="auditai", opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


__all__ = ["graph_to_onnx"]
