"""Limits for ONNX files from untrusted sources: sizes are checked before anything is allocated.

A file can declare a tensor far larger than itself: a ``ConstantOfShape``/``Expand``/``Tile``
with a huge shape input, an initializer whose ``dims`` say 2^40, a ``Pad`` by 2^30. The reader
counts the elements of every constant it holds (initializers, ``Constant`` nodes, folded
results) against one budget, ``MAX_ELEMENTS`` (2^28 elements in all: 1 GiB of float32) unless
the caller passes ``max_elements``, and every value of the graph against the same number; the
size of a folded node's outputs is computed from its inputs' shapes and values *before* it is
evaluated (`fold_elements`), and a node whose output size has no rule here is not folded.
Tensors whose data lie in external files (``data_location = EXTERNAL``) are refused outright:
the reader never opens a path named by the file.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from auditai.errors import InputError, ModelFileError

MAX_ELEMENTS = 2**28
MAX_GATHER = 4096  # constant indices of one Gather from a value (each becomes an IR node)

# outputs no larger than the broadcast of the inputs (elementwise ops)
_BROADCAST = frozenset(
    """
    Add Sub Mul Div Pow Mod Max Min Sum Mean Where Equal Less Greater LessOrEqual
    GreaterOrEqual And Or Xor Not Neg Abs Sqrt Exp Log Relu Sigmoid Tanh Erf Floor Ceil Round
    Sign Reciprocal Clip Sin Cos Tan Asin Acos Atan Sinh Cosh Asinh Acosh Atanh IsNaN IsInf
    BitShift PRelu LeakyRelu Elu Selu Celu HardSigmoid HardSwish Softplus Softsign Gelu Mish
    Shrink ThresholdedRelu BitwiseAnd BitwiseOr BitwiseXor BitwiseNot
    """.split()  # noqa: SIM905
)
# each output no larger than the first input (reshapes, selections, per-axis ops)
_FIRST = frozenset(
    """
    Reshape Flatten Squeeze Unsqueeze Transpose Slice Identity Cast CastLike Dropout TopK
    DequantizeLinear QuantizeLinear Softmax LogSoftmax Hardmax CumSum Trilu DepthToSpace
    SpaceToDepth ReverseSequence EyeLike Compress ScatterElements ScatterND
    """.split()  # noqa: SIM905
)

def elements(shape: Sequence[int]) -> int:
    """The element count of a shape (Python integers: no overflow); a negative size is refused."""
    shape = [int(s) for s in shape]
    if any(s < 0 for s in shape):
        raise ModelFileError(f"a negative size in shape {list(shape)}")
    return math.prod(shape)


def _broadcast(*shapes: Sequence[int]) -> list[int]:
    r = max((len(s) for s in shapes), default=0)
    out = [1] * r
    for s in shapes:
        for i, d in enumerate(s):
            k = r - len(s) + i
            d = int(d)
            if d != 1:
                if out[k] not in (1, d):
                    raise ModelFileError(f"shapes {[list(x) for x in shapes]} do not broadcast")
                out[k] = d
    return out


def _ints(a: np.ndarray | None) -> list[int]:
    return [] if a is None else [int(v) for v in np.asarray(a).reshape(-1)]


def fold_elements(op: str, at: dict, ins: Sequence[np.ndarray | None], n_out: int) -> int | None:
    """An upper bound on the elements of a node's outputs from its constant inputs (None: no rule).

    `ins` are the node's inputs in order (None for an omitted optional one); nothing is evaluated.
    """
    shapes = [np.shape(a) for a in ins if a is not None]
    total = sum(elements(s) for s in shapes)
    if op in _BROADCAST:
        return n_out * elements(_broadcast(*shapes))
    if op.startswith("Reduce") or op in ("ArgMax", "ArgMin"):
        s, r = list(np.shape(ins[0])), np.ndim(ins[0])
        if op in ("ArgMax", "ArgMin"):
            axes = [int(at.get("axis", 0))]
        else:
            axes = at.get("axes") or (_ints(ins[1]) if len(ins) > 1 and ins[1] is not None else [])
        if not axes and at.get("noop_with_empty_axes", 0):
            return elements(s)
        axes = {int(a) % max(1, r) for a in axes} if axes else set(range(r))
        return elements(1 if i in axes else v for i, v in enumerate(s))
    x = ins[0] if ins else None
    if op in _FIRST:
        return n_out * elements(np.shape(x))
    if op in ("Split", "Concat"):  # the outputs together: the input; the output: the inputs together
        return elements(np.shape(x)) if op == "Split" else total
    if op in ("Shape", "Size"):
        return max(1, np.ndim(x)) if op == "Shape" else 1
    if op == "GatherElements":
        return elements(np.shape(ins[1]))
    if op == "ConstantOfShape":
        return elements(_ints(x))
    if op == "Expand":
        return elements(_broadcast(np.shape(x), _ints(ins[1])))
    if op == "Tile":
        reps = _ints(ins[1])
        if len(reps) != np.ndim(x):
            raise ModelFileError(f"Tile of rank {np.ndim(x)} by {len(reps)} repeats")
        return elements(s * r for s, r in zip(np.shape(x), reps))
    if op == "Range":
        start, limit, delta = (float(np.asarray(a).reshape(-1)[0]) for a in ins[:3])
        if delta == 0 or not all(map(math.isfinite, (start, limit, delta))):
            raise ModelFileError(f"Range({start}, {limit}, {delta})")
        return max(0, math.ceil((limit - start) / delta))
    if op == "Pad":
        pads = (
            _ints(ins[1])
            if len(ins) > 1 and ins[1] is not None
            else [int(p) for p in at.get("pads", [])]
        )
        r = np.ndim(x)
        axes = _ints(ins[3]) if len(ins) > 3 and ins[3] is not None else list(range(r))
        size = list(np.shape(x))
        k = len(axes)
        for i, a in enumerate(axes):
            size[a % r] += pads[i] + pads[k + i]
        return elements(size)
    if op == "MatMul":
        a, b = (list(np.shape(t)) for t in ins[:2])
        a = [1] + a if len(a) == 1 else a
        b = b + [1] if len(b) == 1 else b
        return elements(_broadcast(a[:-2], b[:-2]) + [a[-2], b[-1]])
    if op == "Gemm":
        a, b = np.shape(ins[0]), np.shape(ins[1])
        return (a[1] if at.get("transA", 0) else a[0]) * (b[0] if at.get("transB", 0) else b[1])
    if op == "Gather":
        ax = int(at.get("axis", 0)) % max(1, np.ndim(x))
        s = np.shape(x)
        return elements(list(s[:ax]) + list(np.shape(ins[1])) + list(s[ax + 1 :]))
    if op == "OneHot":
        return elements(np.shape(x)) * abs(int(np.asarray(ins[1]).reshape(-1)[0]))
    if op == "NonZero":
        return max(1, np.ndim(x)) * elements(np.shape(x))
    if op in ("Resize", "Upsample"):
        sizes = ins[3] if op == "Resize" and len(ins) > 3 else None
        if sizes is not None and np.size(sizes):
            return elements(_ints(sizes))
        scales = ins[2] if op == "Resize" and len(ins) > 2 else (ins[1] if len(ins) > 1 else None)
        scales = at.get("scales", scales)
        if scales is None or not np.size(scales):
            return None
        return elements(
            math.floor(s * float(c)) for s, c in zip(np.shape(x), np.asarray(scales).reshape(-1))
        )
    return None


def attribute_elements(at: dict) -> int:
    """Elements of the tensors a node carries in its attributes (a Constant's value, say)."""
    from onnx import SparseTensorProto, TensorProto

    n = 0
    for v in at.values():
        for t in v if isinstance(v, list) else [v]:
            if isinstance(t, (TensorProto, SparseTensorProto)):
                n += elements(t.dims)
            elif isinstance(v, list) and not isinstance(t, (bytes, str)):
                n += 1
    return n


def refuse_external(model, where: str) -> None:
    """ModelFileError for any tensor of the model (initializers, attributes, subgraphs) with external data."""
    from onnx import AttributeProto, TensorProto

    def tensors(graph):
        yield from (("initializer", t) for t in graph.initializer)
        for s in graph.sparse_initializer:
            yield from (("sparse initializer", t) for t in (s.values, s.indices))
        for node in graph.node:
            label = (
                f"node '{node.name or (node.output[0] if node.output else '?')}' ({node.op_type})"
            )
            for a in node.attribute:
                if a.type == AttributeProto.TENSOR:
                    yield label, a.t
                elif a.type == AttributeProto.TENSORS:
                    yield from ((label, t) for t in a.tensors)
                elif a.type == AttributeProto.SPARSE_TENSOR:
                    yield from (
                        (label, t) for t in (a.sparse_tensor.values, a.sparse_tensor.indices)
                    )
                elif a.type == AttributeProto.GRAPH:
                    yield from tensors(a.g)
                elif a.type == AttributeProto.GRAPHS:
                    for g in a.graphs:
                        yield from tensors(g)

    for label, t in tensors(model.graph):
        if t.data_location == TensorProto.EXTERNAL or len(t.external_data):
            raise ModelFileError(
                f"{where}: {label} tensor {t.name!r} uses external data (a path named by the "
                "file, which is not read); save the ONNX file with its weights inside"
            )


class Budget:
    """The element budget of one read: constants together, and each value alone."""

    def __init__(self, where: str, max_elements: int = MAX_ELEMENTS) -> None:
        if int(max_elements) < 1:
            raise InputError(f"max_elements must be >= 1, got {max_elements!r}")
        self.where, self.limit, self.used = where, int(max_elements), 0

    def charge(self, n: int, what: str, count: bool = True) -> None:
        """Count n more constant elements for `what`, or ModelFileError (nothing allocated yet);
        count=False only checks (a predicted size, counted once the real one is known)."""
        if self.used + n > self.limit:
            raise ModelFileError(
                f"{self.where}: {what} needs a constant of {n} elements, over the limit of "
                f"{self.limit} constant elements in all ({self.used} used); "
                "pass max_elements= to allow more"
            )
        if count:
            self.used += n

    def value(self, shape: Sequence[int], what: str) -> None:
        """ModelFileError if a value of this shape exceeds the limit."""
        n = elements(shape)
        if n > self.limit:
            raise ModelFileError(
                f"{self.where}: {what} makes a value of shape {list(shape)} ({n} elements), "
                f"over the limit of {self.limit} elements; pass max_elements= to allow more"
            )


__all__ = [
    "MAX_ELEMENTS",
    "Budget",
    "attribute_elements",
    "elements",
    "fold_elements",
    "refuse_external",
]
