"""Read an ONNX network into the graph IR (`auditai.bounds.graph`): any DAG of supported ops.

The graph is read **per sample**: every value is interpreted as the network computes it for a
batch of one, so a reshape to a fixed batch of 1 (``[1, -1]``), a per-feature constant of shape
``[1, 1, 5]`` or ``Shape → Gather → Concat → Reshape`` chains (folded with batch 1) all mean what
they mean for one sample. Each live value (one that depends on the input) is an IR node in one of
two forms: *batched* (its ONNX shape is ``[1, *ir_shape]``: ONNX axis 0 is the sample axis) or
*unbatched* (its ONNX shape is the IR shape itself, e.g. after a ``Reshape`` to ``[784]``).
Converting between them is a reshape; ops that need a batch axis (Conv, pooling, BatchNorm,
Resize) take the batched form.

Ops: Gemm (transA/transB/alpha/beta), MatMul by a constant (+ Add), Conv, ConvTranspose (strides,
pads incl. asymmetric, output_padding, group, dilations), BatchNormalization (eval, its own
epsilon), Add/Sub/Mul/Div by constants of any broadcast shape, Add/Sub/Sum of two branches, Neg,
Concat, Slice, Split, Gather by constant indices, Reshape, Flatten, Transpose, Squeeze/Unsqueeze
(attribute or input axes), Identity, Dropout (inference), Cast to float, Pad (constant),
AveragePool and MaxPool (any pads, ceil_mode, auto_pad: `auditai.onnx_pool`), Conv auto_pad,
GlobalAveragePool, ReduceMean/ReduceSum, Resize/Upsample (nearest by whole
factors, linear/bilinear), Relu, LeakyRelu, Tanh, Sigmoid, Clip, Max/Min with a scalar, Gelu and
its erf and tanh patterns (`auditai.onnx_gelu`), Softplus, Elu; Shape/Size of live values (their batch-1 shapes).

Constants and subgraphs of constants are folded with `onnx.reference.ReferenceEvaluator` (the
standard ops' own reference code; nothing from the file is run). Every node without a rule is
collected and reported in one UnsupportedLayerError naming each node and its op type.

Files are untrusted (`auditai.onnx_limits`): constants together and each value are capped at
``max_elements`` (2^28 by default), checked from shapes before anything is allocated, and
tensors with external data are refused (no path named by the file is opened).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from auditai.bounds.graph import Graph, GraphModule, Node
from auditai.errors import ModelFileError, UnsupportedLayerError
from auditai.onnx_gelu import _GeluPatterns
from auditai.onnx_limits import (
    MAX_ELEMENTS,
    attribute_elements,
    elements,
    fold_elements,
    refuse_external,
)
from auditai.onnx_ops import _attrs, _Builder, _Unsupported, _Val
from auditai.onnx_pool import _PoolOps

_ACT = {"Relu": "relu", "Tanh": "tanh", "Sigmoid": "sigmoid"}
_PASS = {"Identity", "Dropout"}


class _Reader(_GeluPatterns, _PoolOps, _Builder):
    """Reads ONNX nodes in order: folds constants, maps each live node to IR nodes."""

    # ---------------------------------------------------------------- constant folding
    def fold(self, node) -> None:
        from onnx import helper
        from onnx.reference import ReferenceEvaluator

        feeds = {i: np.asarray(self.consts[i]) for i in node.input if i}
        outs_n = len([o for o in node.output if o])
        try:  # the outputs' size from the inputs' shapes and values, before anything is evaluated
            need = attribute_elements(_attrs(node)) if node.op_type == "Constant" else \
                fold_elements(node.op_type, _attrs(node), [feeds.get(i) for i in node.input], outs_n)
        except (ValueError, TypeError, IndexError, OverflowError) as e:
            raise _Unsupported(f"cannot fold this constant node ({type(e).__name__}: {e})") from None
        if need is None:
            raise _Unsupported(f"cannot fold a constant {node.op_type} (the reader has no rule for the size "
                               "of its output)")
        what = f"node '{node.name or node.output[0]}' ({node.op_type})"
        self.budget.charge(need, what, count=False)
        try:
            ins = [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
                   for k, v in feeds.items()]
            outs_vi = [helper.make_empty_tensor_value_info(o) for o in node.output if o]
            m = helper.make_model(helper.make_graph([node], "fold", ins, outs_vi),
                                  opset_imports=[helper.make_opsetid("", self.opset)])
            outs = ReferenceEvaluator(m).run(None, feeds)
        except Exception as e:  # noqa: BLE001 - the reference code raises many kinds
            raise _Unsupported(f"cannot fold this constant node ({type(e).__name__}: {e})") from None
        outs = [np.asarray(v) for v in outs]
        self.budget.charge(sum(int(v.size) for v in outs), what)  # the real size (at most `need`)
        for name, val in zip([o for o in node.output if o], outs):
            if name:
                self.consts[name] = val

    # ---------------------------------------------------------------- one node
    def read(self, node, where: str) -> None:
        op, at = node.op_type, _attrs(node)
        if node.domain not in ("", "ai.onnx"):
            raise _Unsupported(f"operator domain {node.domain!r}")
        if op == "Constant":
            self.fold(node)
            return
        if any(i in self.erf for i in node.input):
            self._gelu(node, op)
            return
        if any(i in self.tgelu for i in node.input):
            self._tanh_gelu(node, op)
            return
        if op == "Erf":
            self._erf(node)
            return
        if self._tanh_gelu_start(node, op):
            return
        live_in = [i for i in node.input if i in self.live]
        if op in ("Shape", "Size") and live_in:
            full = np.array(self.live[node.input[0]].full, dtype=np.int64)
            if op == "Size":
                self.consts[node.output[0]] = np.array(int(np.prod(full)), dtype=np.int64)
            else:
                s, e = at.get("start", 0), at.get("end", None)
                self.consts[node.output[0]] = full[s:e]
            return
        if not live_in:
            self.fold(node)
            return
        x = self.live.get(node.input[0])
        out = self._op(node, op, at, x, where)
        self.live[node.output[0]] = out

    def _op(self, node, op: str, at: dict, x: _Val | None, w: str) -> _Val:
        nm = node.name or node.output[0]
        if x is None and op not in ("Add", "Mul", "Sub", "Concat", "Sum", "Max", "Min"):
            raise _Unsupported("its first input is a constant and a later one depends on the input")
        if op in _PASS or (op == "Cast" and at.get("to") in (1, 11)):  # float16 casts round: not identities
            if op == "Dropout" and len(node.input) > 2 and node.input[2] and bool(self.const(node.input[2]).any()):
                raise _Unsupported("Dropout in training mode")
            if op == "Dropout" and len(node.output) > 1 and node.output[1]:
                self.consts[node.output[1]] = np.ones(x.full, dtype=bool)
            return x
        if op in _ACT:
            return self._ew(x, nm, _ACT[op], {}, w)
        if op == "LeakyRelu":
            return self._ew(x, nm, "leaky_relu", {"slope": float(at.get("alpha", 0.01))}, w)
        if op == "Elu":
            return self._ew(x, nm, "elu", {"alpha": float(at.get("alpha", 1.0))}, w)
        if op == "Softplus":
            return self._ew(x, nm, "softplus", {"beta": 1.0, "threshold": 20.0}, w)
        if op == "Gelu":
            return self._ew(x, nm, "gelu", {"approximate": at.get("approximate", "none")}, w)
        if op == "Clip":
            lo, hi = at.get("min"), at.get("max")
            if lo is None and self.opt_const(node, 1) is not None:
                lo = float(self.opt_const(node, 1))
            if hi is None and self.opt_const(node, 2) is not None:
                hi = float(self.opt_const(node, 2))
            return self._ew(x, nm, "hardtanh", {"min": -math.inf if lo is None else float(lo),
                                                "max": math.inf if hi is None else float(hi)}, w)
        if op in ("Max", "Min") and len([i for i in node.input if i]) == 2:
            other = [i for i in node.input if i and i not in self.live]
            if len(other) != 1 or self.consts[other[0]].size != 1:
                raise _Unsupported(f"{op} other than of one value and a scalar constant")
            c = float(self.consts[other[0]].reshape(-1)[0])
            x = self.live[next(i for i in node.input if i in self.live)]
            out = np.broadcast_shapes(x.full, self.consts[other[0]].shape)
            if tuple(out) != x.full:
                raise _Unsupported(f"{op} whose constant broadcasts the value up")
            lo, hi = (c, math.inf) if op == "Max" else (-math.inf, c)
            return self._ew(x, nm, "hardtanh", {"min": lo, "max": hi}, w)
        if op == "Expand":
            out = tuple(np.broadcast_shapes(x.full, tuple(int(s) for s in self.const(node.input[1]).reshape(-1))))
            return self.expand(x, out, nm, w)
        if op == "Neg":
            return self._ew(x, nm, "neg", {}, w)
        if op in ("Add", "Sub", "Mul", "Div", "Sum"):
            return self._arith(node, op, nm, w)
        if op == "Gemm":
            return self._gemm(node, at, x, nm, w)
        if op == "MatMul":
            b = self.const(node.input[1]).astype(np.float64)
            if b.ndim == 2:
                return self._linear(x, b.T, None, nm, w)
            if b.ndim == 1:
                y = self._linear(x, b[None, :], None, nm, w)
                return self.reshape(y, y.full[:-1], name=nm + "_squeeze")
            raise _Unsupported(f"a MatMul by a constant of shape {list(b.shape)}")
        if op in ("Conv", "ConvTranspose"):
            return self._conv(node, op, at, x, nm, w)
        if op == "BatchNormalization":
            if at.get("training_mode", 0) or at.get("is_test", 1) == 0:
                raise _Unsupported("BatchNormalization in training mode")
            if at.get("spatial", 1) != 1:
                raise _Unsupported("BatchNormalization with spatial=0 (per-element statistics)")
            if len([o for o in node.output if o]) > 1:
                raise _Unsupported("BatchNormalization with running-statistics outputs (training)")
            s, b, mean, var = (self.const(node.input[i]).astype(np.float64) for i in range(1, 5))
            scale = s / np.sqrt(var + float(at.get("epsilon", 1e-5)))
            x = self.batched(x)
            view = (-1,) + (1,) * (len(x.ir) - 1)
            idx = self.add(nm, "scale_shift", [x], {}, {"scale": scale.reshape(view),
                                                        "shift": (b - mean * scale).reshape(view)}, w)
            return _Val(idx, x.full, True)
        if op == "Concat":
            return self._concat(node, at, nm, w)
        if op == "Reshape":
            shape = [int(s) for s in self.const(node.input[1]).reshape(-1)]
            if not at.get("allowzero", 0):
                shape = [x.full[i] if s == 0 else s for i, s in enumerate(shape)]
            if shape.count(-1) == 1:
                known = math.prod(s for s in shape if s != -1)
                shape[shape.index(-1)] = math.prod(x.full) // max(1, known)
            return self.reshape(x, shape, name=nm)
        if op == "Flatten":
            a = at.get("axis", 1) % (len(x.full) + 1) if x.full else 0
            return self.reshape(x, (math.prod(x.full[:a]), math.prod(x.full[a:])), name=nm)
        if op in ("Squeeze", "Unsqueeze"):
            axes = at.get("axes")
            if axes is None and len(node.input) > 1 and node.input[1]:
                axes = [int(a) for a in self.const(node.input[1]).reshape(-1)]
            full = list(x.full)
            if op == "Squeeze":
                axes = [a % len(full) for a in axes] if axes is not None else [i for i, s in enumerate(full) if s == 1]
                if any(full[a] != 1 for a in axes):
                    raise _Unsupported(f"Squeeze of axes {axes} of shape {full}")
                full = [s for i, s in enumerate(full) if i not in axes]
            else:
                r = len(full) + len(axes)
                for a in sorted(a % r for a in axes):
                    full.insert(a, 1)
            return self.reshape(x, full, name=nm)
        if op == "Transpose":
            perm = list(at.get("perm", list(range(len(x.full)))[::-1]))
            if x.batched and perm[0] == 0:
                idx = self.add(nm, "permute", [x], {"dims": [p - 1 for p in perm[1:]]}, {}, w)
                return _Val(idx, tuple(x.full[p] for p in perm), True)
            x = self.unbatched(x)
            idx = self.add(nm, "permute", [x], {"dims": perm}, {}, w)
            return _Val(idx, tuple(x.full[p] for p in perm), False)
        if op in ("Slice", "Split", "Gather"):
            return self._select(node, op, at, x, nm, w)
        if op == "Pad":
            return self._pad(node, at, x, nm, w)
        if op in ("AveragePool", "MaxPool"):
            return self._pool(node, op, at, x, nm, w)
        if op == "GlobalAveragePool":
            x = self.batched(x)
            idx = self.add(nm, "mean", [x], {"dims": list(range(1, len(x.ir))), "keepdim": True}, {}, w)
            return _Val(idx, (1,) + self.nodes[idx].shape, True)
        if op in ("ReduceMean", "ReduceSum"):
            axes = at.get("axes")
            if axes is None and len(node.input) > 1 and node.input[1]:
                axes = [int(a) for a in self.const(node.input[1]).reshape(-1)]
            if not axes:
                if at.get("noop_with_empty_axes", 0):
                    return x
                axes = list(range(len(x.full)))
            axes = sorted(a % len(x.full) for a in axes)
            keep = bool(at.get("keepdims", 1))
            x, off = self.axis_dim(x, axes)
            idx = self.add(nm, "mean", [x], {"dims": [a - off for a in axes], "keepdim": keep}, {}, w)
            full = [1 if i in axes else s for i, s in enumerate(x.full)] if keep else \
                [s for i, s in enumerate(x.full) if i not in axes]
            v = _Val(idx, full, x.batched)
            if op == "ReduceSum":
                k = float(math.prod(x.full[a] for a in axes))
                v = _Val(self.add(nm + "_sum", "mul_const", [v], {}, {"value": np.array(k)}, w), v.full, v.batched)
            return v
        if op in ("Resize", "Upsample"):
            return self._resize(node, op, at, x, nm, w)
        raise _Unsupported("no bound rule for this operator")

    # ---------------------------------------------------------------- op families
def _opset(model) -> int:
    vs = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    return max(vs) if vs else 1


def _parse(data: bytes, where: str):
    import onnx

    try:
        model = onnx.load_from_string(data)
    except Exception as e:  # noqa: BLE001 - protobuf raises DecodeError and others
        raise ModelFileError(f"{where}: not a readable ONNX file (truncated or corrupt?): {e}") from None
    if not model.graph.node:
        raise ModelFileError(f"{where}: the ONNX graph has no nodes (truncated or corrupt?)")
    refuse_external(model, where)
    return model


def read_onnx_graph(data: bytes | str | Path, where: str | None = None, *,
                    max_elements: int = MAX_ELEMENTS) -> Graph:
    """The graph IR of an ONNX network (per sample; input shape from the graph's declared input).

    max_elements caps the constants held together and each value (`auditai.onnx_limits`):
    a file asking for more is refused with a ModelFileError before anything of that size exists.
    """
    from onnx import numpy_helper

    from auditai.bounds.trace import _prune

    if isinstance(data, (str, Path)):
        where = where or str(data)
        data = Path(data).read_bytes()
    where = where or "<onnx>"
    model = _parse(data, where)
    g = model.graph
    rd = _Reader(where, _opset(model), max_elements)
    for t in g.initializer:
        rd.budget.charge(elements(t.dims), f"initializer {t.name!r} of shape {list(t.dims)}")
        try:
            rd.consts[t.name] = numpy_helper.to_array(t)
        except (ValueError, TypeError) as e:
            raise ModelFileError(f"{where}: initializer {t.name!r} cannot be read ({e})") from None
    inputs = [i for i in g.input if i.name not in rd.consts]
    if len(inputs) != 1:
        raise ModelFileError(f"{where}: a network has one input, the graph has {len(inputs)}: {[i.name for i in inputs]}")
    dims = inputs[0].type.tensor_type.shape.dim
    full = []
    for k, d in enumerate(dims):
        if k == 0 and len(dims) > 1:
            full.append(1)  # the batch axis (symbolic, 1, or a fixed batch of N): read per sample
        elif d.HasField("dim_value") and d.dim_value > 0:
            full.append(int(d.dim_value))
        else:
            raise ModelFileError(f"{where}: input {inputs[0].name!r} has a symbolic size at axis {k} "
                                 f"({d.dim_param or '?'}); only the batch axis (0) may be symbolic")
    if not full:
        raise ModelFileError(f"{where}: input {inputs[0].name!r} declares no shape")
    rd.budget.value(full, f"input {inputs[0].name!r}")
    batched = len(full) > 1 and full[0] == 1
    ir = tuple(full[1:]) if batched else tuple(full)
    rd.nodes.append(Node("input", "input", (), {}, {}, ir, inputs[0].name))
    rd.live[inputs[0].name] = _Val(0, full, batched)
    for k, node in enumerate(g.node):
        name = node.name or f"#{k}"
        if any(i in rd.poison for i in node.input if i):
            rd.poison.update(o for o in node.output if o)
            for i in node.input:  # a pending pattern value that will never complete: name where it began
                if i in rd.tgelu and i not in rd.poison:
                    rd.unsupported.append((*rd.origin[i], rd.pending_trail(i)))
                    rd.poison.add(i)
            continue
        try:
            rd.read(node, f"{where} node '{name}' ({node.op_type})")
        except ModelFileError:
            raise
        except _Unsupported as why:
            rd.unsupported.append((name, node.op_type, str(why)))
            rd.poison.update(o for o in node.output if o)
        except (ValueError, RuntimeError, IndexError, KeyError, TypeError) as e:
            rd.unsupported.append((name, node.op_type, f"cannot read it ({type(e).__name__}: {e})"))
            rd.poison.update(o for o in node.output if o)
    outs = [o.name for o in g.output]
    for o in outs:
        if o in rd.erf or o in rd.tgelu:
            rd.unsupported.append((*rd.origin.get(o, (o, "output")), rd.pending_trail(o)))
    if rd.unsupported:
        listing = "; ".join(f"node '{n}' ({op}): {why}" for n, op, why in rd.unsupported)
        n0, op0, _ = rd.unsupported[0]
        raise UnsupportedLayerError(f"ONNX operator {op0}", f"node '{n0}' in {where}",
                                    f"{len(rd.unsupported)} node(s) without a bound rule: {listing}")
    if len(outs) != 1:
        raise ModelFileError(f"{where}: a network has one output, the graph has {len(outs)}: {outs}")
    if outs[0] not in rd.live:
        raise ModelFileError(f"{where}: the graph's output {outs[0]!r} does not depend on its input")
    out = rd.live[outs[0]]
    from auditai.onnx_passes import simplify

    return simplify(_prune(Graph(rd.nodes, out.idx)))


def load_onnx_graph(data: bytes | str | Path, where: str | None = None, *,
                    max_elements: int = MAX_ELEMENTS) -> GraphModule:
    """The ONNX network as a GraphModule (inputs of the graph's declared per-sample shape); runs no code.

    max_elements: the size limit of `read_onnx_graph`.
    """
    return GraphModule(read_onnx_graph(data, where, max_elements=max_elements)).eval()


__all__ = ["load_onnx_graph", "read_onnx_graph"]
