"""ONNX in and out: read a head from the verification community's exchange format, and hand a
unit test's samples to a complete verifier (α,β-CROWN) as ONNX networks + VNN-LIB properties.

Import uses the `onnx` package only (protobuf parsing, no onnxruntime, no code from the file) and
rebuilds the head from the bound engine's supported layers. It reads chain-shaped graphs of Gemm,
MatMul, Conv, Relu, Sigmoid, Tanh, LeakyRelu, Flatten, Reshape (as a flatten), BatchNormalization,
Identity/Dropout, and Add/Sub/Mul/Div by constants, which are folded into the neighbouring affine
layer (input normalisation included) or, where folding is not exact, turned into a diagonal
affine layer (Linear, or a 1×1 depthwise Conv).

Export writes, per sample, the network δ ↦ f_d(z0 + B·δ) with z0 + B·δ folded into the head's first
Linear (W1·B, W1·z0 + b1: the set becomes a box in δ-space, DESIGN.md) and a VNN-LIB property whose
satisfying points are counterexamples: δ in the box and some y_j ≥ y_label.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from auditai.errors import InputError, ModelFileError, UnsupportedLayerError

OPSET = 17
IR_VERSION = 8


# =========================================================================== import
class _Chain:
    """Builds the nn.Sequential while walking a chain-shaped ONNX graph."""

    def __init__(self, where: str, shape: list[int | None]) -> None:
        self.where = where
        self.mods: list[nn.Module] = []
        self.shape = shape  # per-sample shape of the current activation (None: unknown)
        self.pending: tuple[np.ndarray, np.ndarray] | None = None  # x_true = a·x + b
        self.affine_open = False  # last module is Linear/Conv with nothing after it

    # -- elementwise affine by constants -----------------------------------
    def elementwise(self, a: np.ndarray, b: np.ndarray) -> None:
        pa, pb = self.pending if self.pending is not None else (np.ones(()), np.zeros(()))
        self.pending = (a * pa, a * pb + b)

    def _per_channel(self, c: np.ndarray, n: int | None) -> np.ndarray | None:
        """c as a vector over the channel axis (axis 1 of the activation), or None if it varies
        along other axes. The activation's rank is len(self.shape) + 1."""
        rank = len(self.shape) + 1
        c = np.asarray(c, dtype=np.float64)
        if c.ndim > rank:
            return None
        full = c.reshape((1,) * (rank - c.ndim) + c.shape)
        if any(s != 1 for i, s in enumerate(full.shape) if i != 1):
            return None
        v = full.reshape(-1)
        if v.size == 1 and n is not None:
            v = np.full(n, v.item())
        return v if n is None or v.size == n else None

    def flush(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Fold the pending a·x + b backward into the last affine layer (exact: it scales and
        shifts that layer's outputs), or return it per channel for the caller to fold forward
        into the next affine layer or to materialise."""
        if self.pending is None:
            return None
        a, b = self.pending
        self.pending = None
        if self.affine_open:
            last = self.mods[-1]
            n = last.out_features if isinstance(last, nn.Linear) else last.out_channels
            va, vb = self._per_channel(a, n), self._per_channel(b, n)
            if va is not None and vb is not None:
                with torch.no_grad():
                    w = last.weight.double()
                    scale = torch.from_numpy(va).reshape(-1, *([1] * (w.dim() - 1)))
                    bias = last.bias.double() if last.bias is not None else torch.zeros(n, dtype=torch.float64)
                    new_b = torch.from_numpy(va) * bias + torch.from_numpy(vb)
                    last.weight = nn.Parameter((w * scale).to(last.weight.dtype))
                    last.bias = nn.Parameter(new_b.to(last.weight.dtype))
                return None
        n = self.shape[0] if self.shape else None
        va, vb = self._per_channel(a, n), self._per_channel(b, n)
        if va is None or vb is None or n is None:
            raise ModelFileError(
                f"{self.where}: cannot fold an elementwise Add/Sub/Mul/Div whose constant varies "
                f"inside a channel (activation shape {self.shape}) into a neighbouring layer"
            )
        return va, vb

    def materialise(self, va: np.ndarray, vb: np.ndarray) -> None:
        n = va.size
        if len(self.shape) == 1:
            m: nn.Module = nn.Linear(n, n)
            w = torch.diag(torch.from_numpy(va))
        elif len(self.shape) in (2, 3):
            m = (nn.Conv1d if len(self.shape) == 2 else nn.Conv2d)(n, n, 1, groups=n)
            w = torch.from_numpy(va).reshape(n, 1, *([1] * (len(self.shape) - 1)))
        else:
            raise ModelFileError(f"{self.where}: cannot place an elementwise affine on an activation of shape {self.shape}")
        with torch.no_grad():
            m.weight.copy_(w.float())
            m.bias.copy_(torch.from_numpy(vb).float())
        self.add(m, affine=True)

    def add(self, m: nn.Module, affine: bool = False) -> None:
        self.mods.append(m)
        self.affine_open = affine


def _attrs(node) -> dict[str, Any]:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _conv_out(n: int | None, k: int, s: int, p0: int, p1: int, dil: int) -> int | None:
    return None if n is None else (n + p0 + p1 - dil * (k - 1) - 1) // s + 1


def load_onnx_head(data: bytes | str | Path, where: str | None = None) -> nn.Sequential:
    """Rebuild a head (eval mode, float32) from an ONNX file's bytes or path; runs no code.

    Raises ModelFileError for a corrupt file or a non-chain graph, UnsupportedLayerError naming
    the operator and its node for an operator outside the list in the module docstring.
    """
    import onnx
    from onnx import numpy_helper

    if isinstance(data, (str, Path)):
        where = where or str(data)
        data = Path(data).read_bytes()
    where = where or "<onnx>"
    try:
        model = onnx.load_from_string(data)
    except Exception as e:  # noqa: BLE001 - protobuf raises DecodeError and others
        raise ModelFileError(f"{where}: not a readable ONNX file (truncated or corrupt?): {e}") from None
    g = model.graph
    if not g.node:
        raise ModelFileError(f"{where}: the ONNX graph has no nodes (truncated or corrupt?)")
    for init in g.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            raise ModelFileError(f"{where}: initializer {init.name!r} uses external data; save the ONNX file with its weights inside")
    consts: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    inputs = [i for i in g.input if i.name not in consts]
    if len(inputs) != 1:
        raise ModelFileError(f"{where}: a head has one input, the graph has {len(inputs)}: {[i.name for i in inputs]}")
    dims = inputs[0].type.tensor_type.shape.dim
    shape = [d.dim_value if d.HasField("dim_value") else None for d in dims][1:]
    chain = _Chain(where, shape)
    cur = inputs[0].name

    def const(name: str, node) -> np.ndarray:
        if name not in consts:
            raise ModelFileError(f"{where}: node '{node.name}' ({node.op_type}) needs input {name!r} to be a constant")
        return consts[name]

    for node in g.node:
        op, name, at = node.op_type, node.name or f"#{list(g.node).index(node)}", _attrs(node)
        if op == "Constant":
            consts[node.output[0]] = numpy_helper.to_array(at["value"]) if "value" in at else np.asarray(
                at.get("value_float", at.get("value_floats", at.get("value_int", at.get("value_ints")))))
            continue
        live = [i for i in node.input if i and i not in consts]
        if live != [cur]:
            raise ModelFileError(
                f"{where}: node '{name}' ({op}) reads {live or 'only constants'}; auditai reads chain-"
                f"shaped heads where each node takes the previous node's output ({cur!r})"
            )
        if op in ("Add", "Sub", "Mul", "Div"):
            other = [i for i in node.input if i != cur]
            c = consts[other[0]].astype(np.float64)
            first = node.input[0] == cur
            if op == "Add":
                chain.elementwise(np.ones(()), c)
            elif op == "Sub":
                chain.elementwise(np.ones(()), -c) if first else chain.elementwise(-np.ones(()), c)
            elif op == "Mul":
                chain.elementwise(c, np.zeros(()))
            else:
                if not first:
                    raise UnsupportedLayerError("ONNX Div (constant / x)", f"node '{name}' in {where}", "not affine")
                if (c == 0).any():
                    raise ModelFileError(f"{where}: node '{name}' divides by zero")
                chain.elementwise(1.0 / c, np.zeros(()))
            cur = node.output[0]
            continue
        if op in ("Identity", "Dropout"):
            cur = node.output[0]
            continue

        fwd = chain.flush()
        if fwd is not None and op not in ("Gemm", "MatMul", "Conv"):
            chain.materialise(*fwd)
            fwd = None

        if op in ("Gemm", "MatMul"):
            if len(shape := chain.shape) != 1:
                raise ModelFileError(f"{where}: node '{name}' ({op}) needs an N×n input, got per-sample shape {shape}")
            if op == "Gemm":
                if node.input[0] != cur or at.get("transA", 0):
                    raise ModelFileError(f"{where}: node '{name}' (Gemm) must take the activation as A, untransposed")
                w = const(node.input[1], node).astype(np.float64)
                w = w if at.get("transB", 0) else w.T
                w = w * at.get("alpha", 1.0)
                if len(node.input) > 2 and node.input[2]:
                    cvec = const(node.input[2], node).astype(np.float64).reshape(-1)
                    if cvec.size not in (1, w.shape[0]):
                        raise ModelFileError(f"{where}: node '{name}' (Gemm) has a bias C of {cvec.size} for {w.shape[0]} outputs")
                    bias = np.broadcast_to(cvec, (w.shape[0],)) * at.get("beta", 1.0)
                else:
                    bias = np.zeros(w.shape[0])
            else:
                if node.input[0] != cur:
                    raise ModelFileError(f"{where}: node '{name}' (MatMul) must multiply the activation from the left")
                w = const(node.input[1], node).astype(np.float64)
                if w.ndim != 2:
                    raise ModelFileError(f"{where}: node '{name}' (MatMul) needs a 2-D weight, got shape {w.shape}")
                w, bias = w.T, np.zeros(w.shape[1])
            if fwd is not None:
                va, vb = fwd
                if va.size != w.shape[1]:
                    raise ModelFileError(f"{where}: node '{name}': normalisation of size {va.size} before an input of {w.shape[1]}")
                bias = bias + w @ vb
                w = w * va[None, :]
            lin = nn.Linear(w.shape[1], w.shape[0])
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(w))
                lin.bias.copy_(torch.from_numpy(np.ascontiguousarray(bias)))
            chain.add(lin, affine=True)
            chain.shape = [w.shape[0]]
        elif op == "Conv":
            w = const(node.input[1], node).astype(np.float64)
            nsp = w.ndim - 2
            if nsp not in (1, 2):
                raise UnsupportedLayerError(f"ONNX Conv with {nsp} spatial dims", f"node '{name}' in {where}")
            if at.get("auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID", "NOTSET", "VALID"):
                raise ModelFileError(f"{where}: node '{name}' (Conv) uses auto_pad={at['auto_pad']!r}; export it with explicit pads")
            pads = list(at.get("pads", [0] * 2 * nsp))
            if pads[:nsp] != pads[nsp:]:
                raise ModelFileError(f"{where}: node '{name}' (Conv) has asymmetric pads {pads}, which auditai does not read")
            strides = list(at.get("strides", [1] * nsp))
            dil = list(at.get("dilations", [1] * nsp))
            groups = int(at.get("group", 1))
            bias = const(node.input[2], node).astype(np.float64) if len(node.input) > 2 and node.input[2] else np.zeros(w.shape[0])
            if fwd is not None:
                va, vb = fwd
                if groups != 1 or va.size != w.shape[1]:
                    raise ModelFileError(f"{where}: node '{name}': cannot fold a normalisation into a grouped Conv")
                if any(pads) and (vb != 0).any():
                    chain.materialise(va, vb)  # zero padding would see the shift: keep it a layer
                else:
                    bias = bias + (w * vb.reshape(1, -1, *([1] * nsp))).sum(axis=tuple(range(1, w.ndim)))
                    w = w * va.reshape(1, -1, *([1] * nsp))
            cls = nn.Conv1d if nsp == 1 else nn.Conv2d
            conv = cls(w.shape[1] * groups, w.shape[0], tuple(w.shape[2:]), stride=tuple(strides),
                       padding=tuple(pads[:nsp]), dilation=tuple(dil), groups=groups)
            with torch.no_grad():
                conv.weight.copy_(torch.from_numpy(w))
                conv.bias.copy_(torch.from_numpy(bias))
            chain.add(conv, affine=True)
            sp = chain.shape[1:] if len(chain.shape) == nsp + 1 else [None] * nsp
            chain.shape = [w.shape[0]] + [_conv_out(sp[i], w.shape[2 + i], strides[i], pads[i], pads[nsp + i], dil[i]) for i in range(nsp)]
        elif op in ("Relu", "Sigmoid", "Tanh", "LeakyRelu"):
            m = {"Relu": nn.ReLU, "Sigmoid": nn.Sigmoid, "Tanh": nn.Tanh}.get(op)
            chain.add(m() if m else nn.LeakyReLU(float(at.get("alpha", 0.01))))
        elif op in ("Flatten", "Reshape"):
            known = all(s is not None for s in chain.shape)
            total = int(np.prod(chain.shape)) if known else None
            if op == "Flatten":
                if at.get("axis", 1) != 1:
                    raise ModelFileError(f"{where}: node '{name}' (Flatten) has axis={at['axis']}; only axis=1 is read")
            else:
                target = [int(s) for s in const(node.input[1], node).reshape(-1)]
                ok = len(target) == 2 and target[0] in (-1, 0, 1) and (target[1] == -1 or target[1] == total)
                if not ok:
                    raise UnsupportedLayerError(f"ONNX Reshape to {target}", f"node '{name}' in {where}",
                                                "only a flatten to N×features is read")
            if len(chain.shape) != 1:
                chain.add(nn.Flatten())
            chain.shape = [total]
        elif op == "BatchNormalization":
            scale, b, mean, var = (const(node.input[i], node) for i in range(1, 5))
            c = scale.size
            bn = (nn.BatchNorm2d if len(chain.shape) == 3 else nn.BatchNorm1d)(c, eps=float(at.get("epsilon", 1e-5)))
            with torch.no_grad():
                bn.weight.copy_(torch.from_numpy(scale.astype(np.float32)))
                bn.bias.copy_(torch.from_numpy(b.astype(np.float32)))
                bn.running_mean.copy_(torch.from_numpy(mean.astype(np.float32)))
                bn.running_var.copy_(torch.from_numpy(var.astype(np.float32)))
            chain.add(bn)
        else:
            raise UnsupportedLayerError(f"ONNX operator {op}", f"node '{name}' in {where}",
                                        "supported: Gemm, MatMul, Conv, Relu, Sigmoid, Tanh, LeakyRelu, Flatten, "
                                        "Reshape, BatchNormalization, Add/Sub/Mul/Div by constants")
        cur = node.output[0]

    fwd = chain.flush()
    if fwd is not None:
        chain.materialise(*fwd)
    outs = [o.name for o in g.output]
    if outs != [cur]:
        raise ModelFileError(f"{where}: the graph's outputs {outs} are not the chain's last value {cur!r}")
    if not any(isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)) for m in chain.mods):
        raise ModelFileError(f"{where}: the graph has no affine layer (Gemm, MatMul or Conv)")
    return nn.Sequential(*chain.mods).float().eval()


# =========================================================================== export
def _leaves(head: nn.Module) -> list[nn.Module]:
    from auditai.model import describe_head  # refuses unsupported layers, naming them

    describe_head(head)
    out: list[nn.Module] = []
    stack = [head]
    while stack:
        m = stack.pop(0)
        if isinstance(m, nn.Sequential):
            stack = list(m) + stack
        elif not isinstance(m, (nn.Identity, nn.Dropout)):
            out.append(m)
    return out


def head_to_onnx(head: nn.Module, z0: Tensor, basis: Tensor) -> Any:
    """ONNX model of δ (1×k) ↦ head(z0 + B·δ), z0 + B·δ folded into the first Linear in float64.

    z0: d; basis B: d×k. The head must hold only supported layers (eval semantics).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    layers = _leaves(head)
    z0d = z0.detach().double().reshape(-1)
    B = basis.detach().double()
    k = B.shape[1]
    nodes, inits = [], []
    cur, idx = "delta", [0]

    def name(p: str) -> str:
        idx[0] += 1
        return f"{p}_{idx[0]}"

    def init(arr: Tensor | np.ndarray, p: str) -> str:
        n = name(p)
        a = arr.detach().cpu().numpy() if isinstance(arr, Tensor) else arr
        inits.append(numpy_helper.from_array(np.ascontiguousarray(a.astype(np.float32)), n))
        return n

    def gemm(w: Tensor, b: Tensor) -> None:
        nonlocal cur
        out = name("gemm_out")
        nodes.append(helper.make_node("Gemm", [cur, init(w, "W"), init(b, "b")], [out], name=name("Gemm"), transB=1))
        cur = out

    first = layers[0] if layers else None
    if isinstance(first, nn.Linear):
        w1 = first.weight.detach().double()
        b1 = first.bias.detach().double() if first.bias is not None else torch.zeros(w1.shape[0], dtype=torch.float64)
        gemm(w1 @ B, w1 @ z0d + b1)
        layers = layers[1:]
    else:
        gemm(B, z0d)
    for m in layers:
        out = name("out")
        if isinstance(m, nn.Linear):
            b = m.bias if m.bias is not None else torch.zeros(m.out_features)
            gemm(m.weight, b)
            continue
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            if m.padding_mode != "zeros" or isinstance(m.padding, str):
                raise ModelFileError(f"export: Conv with padding {m.padding!r} / mode {m.padding_mode!r} is not exported")
            ins = [cur, init(m.weight, "W")] + ([init(m.bias, "b")] if m.bias is not None else [])
            nodes.append(helper.make_node("Conv", ins, [out], name=name("Conv"), kernel_shape=list(m.kernel_size),
                                          strides=list(m.stride), pads=list(m.padding) * 2,
                                          dilations=list(m.dilation), group=m.groups))
        elif isinstance(m, (nn.ReLU, nn.Tanh, nn.Sigmoid)):
            nodes.append(helper.make_node({nn.ReLU: "Relu", nn.Tanh: "Tanh", nn.Sigmoid: "Sigmoid"}[type(m)], [cur], [out], name=name("act")))
        elif isinstance(m, nn.LeakyReLU):
            nodes.append(helper.make_node("LeakyRelu", [cur], [out], name=name("LeakyRelu"), alpha=float(m.negative_slope)))
        elif isinstance(m, nn.Flatten):
            if m.start_dim != 1 or m.end_dim != -1:
                raise ModelFileError("export: only Flatten(1, -1) is exported")
            nodes.append(helper.make_node("Flatten", [cur], [out], name=name("Flatten"), axis=1))
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            c = m.num_features
            w = m.weight if m.affine else torch.ones(c)
            b = m.bias if m.affine else torch.zeros(c)
            mean = m.running_mean if m.running_mean is not None else torch.zeros(c)
            var = m.running_var if m.running_var is not None else torch.ones(c)
            nodes.append(helper.make_node("BatchNormalization", [cur, init(w, "s"), init(b, "b"), init(mean, "m"), init(var, "v")],
                                          [out], name=name("BatchNorm"), epsilon=float(m.eps)))
        else:  # pragma: no cover - describe_head already refused it
            raise UnsupportedLayerError(type(m).__name__, "head")
        cur = out
    with torch.no_grad():
        m_out = head.eval()(z0.detach().reshape(1, -1).to(next(head.parameters()).dtype)).shape[1]
    graph = helper.make_graph(
        nodes, "auditai_unit_test",
        [helper.make_tensor_value_info("delta", TensorProto.FLOAT, [1, k])],
        [helper.make_tensor_value_info(cur, TensorProto.FLOAT, [1, m_out])],
        initializer=inits,
    )
    model = helper.make_model(graph, producer_name="auditai", opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def _num(x: float) -> str:
    """A VNN-LIB decimal (no exponent), exact for the float64 value."""
    return np.format_float_positional(float(x), unique=True, trim="0")


def vnnlib_property(k: int, num_outputs: int, eps: float, label: int, comment: str = "") -> str:
    """VNN-LIB text: δ ∈ [−ε, ε]^k and some output row violates the label (its satisfying points
    are counterexamples). Multi-class: some Y_j ≥ Y_label; single logit: the sign flips."""
    lines = [f"; {line}" for line in comment.splitlines()]
    lines += [f"(declare-const X_{i} Real)" for i in range(k)]
    lines += [f"(declare-const Y_{j} Real)" for j in range(num_outputs)]
    lines.append("")
    for i in range(k):
        lines.append(f"(assert (<= X_{i} {_num(eps)}))")
        lines.append(f"(assert (>= X_{i} {_num(-eps)}))")
    lines.append("")
    if num_outputs == 1:
        lines.append("(assert (<= Y_0 0))" if label == 1 else "(assert (>= Y_0 0))")
    else:
        others = [j for j in range(num_outputs) if j != label]
        lines.append("(assert (or")
        lines += [f"    (and (>= Y_{j} Y_{label}))" for j in others]
        lines.append("))")
    return "\n".join(lines) + "\n"


def export_vnnlib(
    head: nn.Module,
    z0: Tensor,
    labels: Tensor,
    set_kind: Any,
    eps: float,
    out_dir: str | Path,
    timeout: float = 300.0,
    model_hash: str | None = None,
) -> list[tuple[Path, Path]]:
    """Write one ONNX network + one VNN-LIB property per sample, and instances.csv (VNN-COMP layout).

    set_kind: an auditai.latent Dims/Direction/Basis. Only sets that are boxes in δ-space are
    exported exactly: ℓ∞ sets of any k, and k = 1 sets of any norm (an interval). An ℓ2/ℓ1 set
    with k > 1 is refused: writing its bounding box would change the property.
    """
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps >= 0):
        raise InputError(f"eps must be a finite number >= 0, got {eps!r}")
    z0 = torch.as_tensor(z0)
    if z0.dim() == 1:
        z0 = z0.unsqueeze(0)
    labels = torch.as_tensor(labels).reshape(-1).long()
    if labels.shape[0] != z0.shape[0]:
        raise InputError(f"{labels.shape[0]} labels for {z0.shape[0]} codes")
    latent = set_kind.make(z0.double(), eps)
    if not math.isinf(latent.p) and latent.k > 1:
        raise InputError(
            f"export-vnnlib writes input boxes: the ℓ{int(latent.p)} set {set_kind.describe()} with "
            f"k={latent.k} is not a box (its bounding box would be a different, larger set); use an "
            "ℓ∞ set or a single direction"
        )
    head = head.eval()
    with torch.no_grad():
        num_out = head(z0[:1].to(next(head.parameters()).dtype)).shape[1]
    lab_max = 1 if num_out == 1 else num_out - 1
    if labels.numel() and (labels.min() < 0 or labels.max() > lab_max):
        raise InputError(f"labels must lie in 0..{lab_max} for a head with {num_out} output(s)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    import onnx

    written: list[tuple[Path, Path]] = []
    rows = []
    for i in range(latent.n):
        stem = f"sample_{i:05d}"
        net = head_to_onnx(head, latent.z0[i], latent.basis)
        onnx_path, prop_path = out / f"{stem}.onnx", out / f"{stem}.vnnlib"
        onnx.save(net, str(onnx_path))
        comment = (f"auditai export: sample {i}, label {int(labels[i])}, set {set_kind.describe()}, eps {eps}\n"
                   f"input X = delta (k={latent.k}); network = head(z0 + B delta); a satisfying point is a counterexample")
        prop_path.write_text(vnnlib_property(latent.k, num_out, float(eps), int(labels[i]), comment))
        written.append((onnx_path, prop_path))
        rows.append([onnx_path.name, prop_path.name, f"{timeout:g}"])
    with open(out / "instances.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    (out / "auditai_export.json").write_text(json.dumps({
        "set": set_kind.describe(), "norm": "inf" if math.isinf(latent.p) else str(int(latent.p)),
        "eps": eps, "k": latent.k, "basis": latent.basis.tolist(), "labels": labels.tolist(),
        "model_sha256": model_hash, "instances": "instances.csv",
        "property": "unsafe region: some Y_j >= Y_label (single logit: the sign flips)",
    }, indent=1))
    return written


__all__ = ["export_vnnlib", "head_to_onnx", "load_onnx_head", "vnnlib_property"]
