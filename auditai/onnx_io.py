"""ONNX in and out: read a head from the verification community's exchange format, and hand a
unit test's samples to a complete verifier (α,β-CROWN) as ONNX networks + VNN-LIB properties.

Import uses the `onnx` package only (protobuf parsing, no onnxruntime, no code from the file) and
reads any DAG of supported ops into the graph IR (`auditai.onnx_graph`); `load_onnx_head` wraps it
as a head on flat codes. This module imports neither `auditai.model` nor the bound engine at
module level: the model file loader imports the reader, never the other way round.

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
def load_onnx_head(data: bytes | str | Path, where: str | None = None, *,
                   max_elements: int | None = None) -> nn.Module:
    """A head (eval mode) from an ONNX file's bytes or path, read into the graph IR; runs no code.

    The head takes flat codes (N×d, d the product of the graph's declared per-sample input shape)
    and returns N×m scores; `auditai.onnx_graph.load_onnx_graph` keeps the declared shapes.
    Raises ModelFileError for a corrupt file or one asking for more than max_elements (default
    `auditai.onnx_limits.MAX_ELEMENTS`, 2^28) constant elements, UnsupportedLayerError listing every
    node without a bound rule (its name and op type).
    """
    from auditai.bounds.graph import GraphModule
    from auditai.onnx_graph import read_onnx_graph
    from auditai.onnx_limits import MAX_ELEMENTS
    from auditai.onnx_passes import flat_head

    limit = MAX_ELEMENTS if max_elements is None else max_elements
    gm = GraphModule(flat_head(read_onnx_graph(data, where, max_elements=limit))).eval()
    # its weights as (frozen) parameters, so code that takes a head's dtype and device from its
    # parameters (the attack, AuditModel) sees them; the graph reads them by name either way
    for name, t in list(gm.named_buffers()):
        if t.is_floating_point():
            delattr(gm, name)
            gm.register_parameter(name, nn.Parameter(t, requires_grad=False))
    return gm


# =========================================================================== export
_EXPORTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.ReLU, nn.Tanh, nn.Sigmoid, nn.LeakyReLU, nn.Flatten,
             nn.BatchNorm1d, nn.BatchNorm2d, nn.Identity, nn.Dropout, nn.Sequential)


def _leaves(head: nn.Module) -> list[nn.Module]:
    """The head's layers in order; refuses (naming it) a layer outside the exported chain layers."""
    from auditai.bounds.guard import refuse_hidden_forward

    def check(m: nn.Module, pos: str) -> None:
        refuse_hidden_forward(m, pos)
        if type(m) not in _EXPORTED:
            raise UnsupportedLayerError(f"{type(m).__module__}.{type(m).__qualname__}", pos,
                                        "exported layers: " + ", ".join(c.__name__ for c in _EXPORTED))
        if isinstance(m, nn.Sequential):
            for i, c in enumerate(m):
                check(c, f"{pos}[{i}]" if pos == "head" else f"{pos}.{i}")

    check(head, "head")
    out: list[nn.Module] = []
    stack = [head]
    while stack:
        m = stack.pop(0)
        if isinstance(m, nn.Sequential):
            stack = list(m) + stack
        elif not isinstance(m, (nn.Identity, nn.Dropout)):
            out.append(m)
    return out


def _dtype(head: nn.Module) -> torch.dtype:
    t = next((t for t in list(head.parameters()) + list(head.buffers()) if t.is_floating_point()), None)
    return t.dtype if t is not None else torch.get_default_dtype()


def head_to_onnx(head: nn.Module, z0: Tensor, basis: Tensor) -> Any:
    """ONNX model of δ (1×k) ↦ head(z0 + B·δ), z0 + B·δ folded into the first Linear in float64.

    z0: d; basis B: d×k. A chain of supported layers is written layer by layer; any other head
    (a GraphModule, or a module whose traced graph IR matches it) node by node
    (`auditai.onnx_export_graph`).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from auditai.bounds.graph import GraphModule

    if isinstance(head, GraphModule):
        from auditai.onnx_export_graph import graph_to_onnx

        return graph_to_onnx(head.graph, z0, basis)
    try:
        layers = _leaves(head)
    except UnsupportedLayerError as chain_error:  # not a chain: its graph IR (traced, checked)
        from auditai.graph_io import read_head_graph
        from auditai.onnx_export_graph import graph_to_onnx

        try:
            g = read_head_graph(head.eval(), int(z0.numel()))
        except UnsupportedLayerError:
            raise chain_error from None
        return graph_to_onnx(g, z0, basis)
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
        m_out = head.eval()(z0.detach().reshape(1, -1).to(_dtype(head))).shape[1]
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
        num_out = head(z0[:1].to(_dtype(head))).shape[1]
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
