"""The ONNX reader's building blocks and op families (see `auditai.onnx_graph` for the reading scheme).

`_Builder` appends IR nodes (each node's shape from running it once on zeros), converts live values
between the batched and unbatched forms, and turns the ONNX op families (arithmetic with constants,
Gemm/MatMul, Conv/ConvTranspose, Pad, Concat, Slice/Split/Gather, Resize) into IR nodes; pooling
and auto_pad are in `auditai.onnx_pool`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from auditai.bounds.graph import Node, apply
from auditai.onnx_limits import MAX_ELEMENTS, MAX_GATHER, Budget


class _Unsupported(Exception):
    pass


class _Val:
    """A live value: IR node `idx`; `full` its ONNX shape for a batch of one; `batched`: full = (1, *ir)."""

    __slots__ = ("batched", "full", "idx")

    def __init__(self, idx: int, full: tuple[int, ...], batched: bool) -> None:
        self.idx, self.full, self.batched = idx, tuple(int(s) for s in full), batched

    @property
    def ir(self) -> tuple[int, ...]:
        return self.full[1:] if self.batched else self.full


def _attrs(node) -> dict[str, Any]:
    from onnx import helper

    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


class _Builder:
    """IR nodes from ONNX values: the building blocks and the op families."""

    def __init__(self, where: str, opset: int, max_elements: int = MAX_ELEMENTS) -> None:
        self.where, self.opset = where, opset
        self.budget = Budget(where, max_elements)
        self.nodes: list[Node] = []
        self.consts: dict[str, np.ndarray] = {}
        self.live: dict[str, _Val] = {}
        self.poison: set = set()
        self.erf: dict[str, tuple] = {}  # pending Erf values of the GELU pattern
        self.tgelu: dict[str, tuple] = {}  # pending values of the tanh-GELU pattern
        self.origin: dict[str, tuple[str, str]] = {}  # a pending value's node (name, op type)
        self.unsupported: list[tuple[str, str, str]] = []

    # ---------------------------------------------------------------- building blocks
    def add(self, name: str, op: str, ins: Sequence[_Val], attrs: dict | None = None,
            consts: dict[str, Any] | None = None, where: str = "") -> int:
        cs = {k: (torch.as_tensor(np.ascontiguousarray(v)).float() if isinstance(v, np.ndarray) else v)
              for k, v in (consts or {}).items()}
        n = Node(name, op, tuple(v.idx for v in ins), attrs or {}, cs, (), where or name)
        # the output shape on the meta device: nothing of the output's size is allocated before the check
        meta = Node(name, op, n.inputs, n.attrs, {k: (v.to("meta") if isinstance(v, torch.Tensor) else v)
                                                  for k, v in cs.items()}, (), n.where)
        with torch.no_grad():
            y = apply(meta, *[torch.empty(1, *v.ir, device="meta") for v in ins])
        n.shape = tuple(int(s) for s in y.shape[1:])
        self.budget.value(n.shape, f"node '{name}' ({op})")
        self.nodes.append(n)
        return len(self.nodes) - 1

    def reshape(self, v: _Val, full: Sequence[int], batched: bool | None = None, name: str = "") -> _Val:
        full = tuple(int(s) for s in full)
        if math.prod(full) != math.prod(v.full):
            raise _Unsupported(f"a reshape of {list(v.full)} to {list(full)}")
        if batched is None:
            batched = len(full) >= 1 and full[0] == 1
        ir = full[1:] if batched else full
        if ir == v.ir:
            return _Val(v.idx, full, batched)
        idx = self.add(name or f"reshape_{len(self.nodes)}", "reshape", [v], {"shape": list(ir)})
        return _Val(idx, full, batched)

    def unbatched(self, v: _Val) -> _Val:
        return v if not v.batched else self.reshape(v, v.full, False)

    def batched(self, v: _Val) -> _Val:
        if v.batched:
            return v
        if not v.full or v.full[0] != 1:
            raise _Unsupported(f"an input of shape {list(v.full)} whose first axis is not a batch of 1")
        return self.reshape(v, v.full, True)

    def axis_dim(self, v: _Val, axes: Sequence[int]) -> tuple[_Val, int]:
        """(v in a form where the ONNX axes are per-sample dims, offset to subtract)."""
        if v.batched and 0 in axes:
            v = self.unbatched(v)
        return v, (1 if v.batched else 0)

    def const(self, name: str) -> np.ndarray:
        if name not in self.consts:
            raise _Unsupported(f"input {name!r} must be a constant")
        return self.consts[name]

    def opt_const(self, node, i: int) -> np.ndarray | None:
        return self.const(node.input[i]) if len(node.input) > i and node.input[i] else None

    # ---------------------------------------------------------------- constant folding

    def _ew(self, x: _Val, nm: str, op: str, attrs: dict, w: str) -> _Val:
        return _Val(self.add(nm, op, [x], attrs, {}, w), x.full, x.batched)

    def _arith(self, node, op: str, nm: str, w: str) -> _Val:
        ins = [i for i in node.input if i]
        if op == "Sum" and len(ins) == 1:
            return self.live[ins[0]]
        if len(ins) != 2:
            raise _Unsupported(f"{op} of {len(ins)} inputs")
        a, b = ins
        if a in self.live and b in self.live:
            if op not in ("Add", "Sub", "Sum"):
                raise _Unsupported(f"{op} of two values that both depend on the input")
            va, vb = self.live[a], self.live[b]
            out = tuple(np.broadcast_shapes(va.full, vb.full))
            va, vb = self.expand(va, out, nm + "_a", w), self.expand(vb, out, nm + "_b", w)
            if va.batched != vb.batched:
                va, vb = self.unbatched(va), self.unbatched(vb)
            return _Val(self.add(nm, "sub" if op == "Sub" else "add", [va, vb], {}, {}, w), va.full, va.batched)
        x_first = a in self.live
        x = self.live[a if x_first else b]
        c = self.const(b if x_first else a).astype(np.float64)
        x = self.expand(x, tuple(np.broadcast_shapes(x.full, c.shape)), nm, w)
        if x.batched:
            c = c.reshape((1,) * (len(x.full) - c.ndim) + c.shape)[0]
        if op == "Div":
            if not x_first:
                raise _Unsupported("division by a value that depends on the input")
            if (c == 0).any():
                raise _Unsupported("division by zero")
            return _Val(self.add(nm, "mul_const", [x], {}, {"value": 1.0 / c}, w), x.full, x.batched)
        if op == "Mul":
            return _Val(self.add(nm, "mul_const", [x], {}, {"value": c}, w), x.full, x.batched)
        if op == "Sub":
            if not x_first:
                x = _Val(self.add(nm + "_neg", "neg", [x], {}, {}, w), x.full, x.batched)
            else:
                c = -c
        return _Val(self.add(nm, "add_const", [x], {}, {"value": c}, w), x.full, x.batched)

    def expand(self, x: _Val, out: tuple, nm: str, w: str) -> _Val:
        """x broadcast to the ONNX shape `out` (a product by ones: exact, and linear)."""
        if tuple(out) == x.full:
            return x
        x = self.reshape(self.unbatched(x), (1,) * (len(out) - len(x.full)) + x.full, False)
        if x.full != tuple(out):
            self.budget.value(out, f"node '{nm}' (broadcast)")
            x = _Val(self.add(nm + "_expand", "mul_const", [x], {}, {"value": np.ones(out)}, w), out, False)
        return x

    def constant_value(self, like: _Val, c: np.ndarray, nm: str, w: str) -> _Val:
        """A constant as a value of the graph: 0·(one entry of `like`) + c (exact)."""
        c = np.asarray(c, dtype=np.float64)
        if c.ndim == 0:
            raise _Unsupported("a scalar constant where a tensor is needed")
        flat = self.reshape(like, (math.prod(like.full),), False)
        one = _Val(self.add(nm + "_one", "slice", [flat], {"dim": 0, "start": 0, "length": 1, "step": 1}, {}, w),
                   (1,), False)
        one = self.reshape(one, (1,) * c.ndim, False)
        zero = _Val(self.add(nm + "_zero", "mul_const", [one], {}, {"value": np.zeros(c.shape)}, w), c.shape, False)
        return _Val(self.add(nm + "_const", "add_const", [zero], {}, {"value": c}, w), c.shape, False)

    def _linear(self, x: _Val, wt: np.ndarray, bias: np.ndarray | None, nm: str, w: str) -> _Val:
        """y = x·wtᵀ + bias over the last axis; wt (out, in)."""
        if not x.full or x.full[-1] != wt.shape[1]:
            raise _Unsupported(f"a matrix product of shape {list(x.full)} by a weight of {wt.shape[1]} inputs")
        consts = {"weight": wt}
        full = x.full[:-1] + (wt.shape[0],)
        if bias is not None:
            bias = np.asarray(bias, dtype=np.float64)
            if bias.size in (1, wt.shape[0]) and np.broadcast_shapes(full, bias.shape) == full and \
                    all(s == 1 for s in bias.shape[:-1]):
                consts["bias"] = np.broadcast_to(bias.reshape(-1), (wt.shape[0],)).copy()
                bias = None
        v = _Val(self.add(nm, "linear", [x], {}, consts, w), full, x.batched)
        if bias is None:
            return v
        if v.batched:
            bias = bias.reshape((1,) * (len(full) - bias.ndim) + bias.shape)[0]
        return _Val(self.add(nm + "_bias", "add_const", [v], {}, {"value": bias}, w), full, v.batched)

    def _gemm(self, node, at: dict, x: _Val, nm: str, w: str) -> _Val:
        if node.input[0] not in self.live:
            raise _Unsupported("a Gemm whose input is B (the constant is A)")
        if len(x.full) != 2:
            raise _Unsupported(f"a Gemm of a value of shape {list(x.full)}")
        if at.get("transA", 0):
            x = self.unbatched(x)
            x = _Val(self.add(nm + "_transA", "permute", [x], {"dims": [1, 0]}, {}, w), x.full[::-1], False)
        b = self.const(node.input[1]).astype(np.float64)
        wt = (b if at.get("transB", 0) else b.T) * float(at.get("alpha", 1.0))
        c = self.opt_const(node, 2)
        bias = None if c is None else c.astype(np.float64) * float(at.get("beta", 1.0))
        return self._linear(x, wt, bias, nm, w)

    def _conv(self, node, op: str, at: dict, x: _Val, nm: str, w: str) -> _Val:
        wt = self.const(node.input[1]).astype(np.float64)
        nd = wt.ndim - 2
        if op == "ConvTranspose" and at.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
            raise _Unsupported(f"ConvTranspose with auto_pad={at['auto_pad']}; export with explicit pads")
        if "output_shape" in at:
            raise _Unsupported("ConvTranspose with output_shape; export with pads and output_padding")
        x = self.batched(x)
        if len(x.full) != 2 + nd:
            raise _Unsupported(f"a {nd}-D {op} of a value of shape {list(x.full)}")
        strides, dil = list(at.get("strides", [1] * nd)), list(at.get("dilations", [1] * nd))
        pads = self._auto_pads(at, x.full[2:], list(wt.shape[2:]), strides, dil)
        begin, end = pads[:nd], pads[nd:]
        sym = begin == end
        if not sym and op == "Conv":
            x = self._pad_ir(x, begin, end, nm + "_pad", w)
            begin = [0] * nd
        attrs = {"stride": strides, "padding": begin if sym or op == "Conv" else [0] * nd,
                 "dilation": dil, "groups": int(at.get("group", 1))}
        consts = {"weight": wt}
        b = self.opt_const(node, 2)
        if b is not None:
            consts["bias"] = b.astype(np.float64)
        kind = "conv"
        if op == "ConvTranspose":
            kind = "conv_transpose"
            attrs["output_padding"] = list(at.get("output_padding", [0] * nd))
        idx = self.add(nm, kind, [x], attrs, consts, w)
        v = _Val(idx, (1,) + self.nodes[idx].shape, True)
        if op == "ConvTranspose" and not sym:  # asymmetric pads crop the full output: a negative pad
            v = self._pad_ir(v, [-p for p in begin], [-p for p in end], nm + "_crop", w)
        return v

    def _pad_ir(self, x: _Val, begin: Sequence[int], end: Sequence[int], nm: str, w: str,
                value: float = 0.0) -> _Val:
        """Pad the last len(begin) IR dims of x (torch F.pad order: last dim first)."""
        pads: list[int] = []
        for b, e in zip(reversed(list(begin)), reversed(list(end))):
            pads += [int(b), int(e)]
        idx = self.add(nm, "pad", [x], {"pads": pads, "value": float(value)}, {}, w)
        ir = self.nodes[idx].shape
        return _Val(idx, ((1,) + ir) if x.batched else ir, x.batched)

    def _pad(self, node, at: dict, x: _Val, nm: str, w: str) -> _Val:
        if at.get("mode", "constant") != "constant":
            raise _Unsupported(f"Pad mode {at['mode']!r}")
        pads = at.get("pads")
        if pads is None:
            pads = [int(p) for p in self.const(node.input[1]).reshape(-1)]
        value = at.get("value", 0.0)
        cv = self.opt_const(node, 2)
        if cv is not None and cv.size:
            value = float(cv.reshape(-1)[0])
        r = len(x.full)
        axes = list(range(r))
        ax = self.opt_const(node, 3)
        if ax is not None:
            axes = [int(a) % r for a in ax.reshape(-1)]
        k = len(axes)
        begin, end = [0] * r, [0] * r
        for i, a in enumerate(axes):
            begin[a], end[a] = pads[i], pads[k + i]
        used = [a for a in range(r) if begin[a] or end[a]]
        x, off = self.axis_dim(x, used)
        first = off
        return self._pad_ir(x, begin[first:], end[first:], nm, w, value)

    def _concat(self, node, at: dict, nm: str, w: str) -> _Val:
        names = [i for i in node.input if i]
        like = next(self.live[i] for i in names if i in self.live)
        vals = [self.live[i] if i in self.live else self.constant_value(like, self.const(i), f"{nm}_{k}", w)
                for k, i in enumerate(names)]
        r = len(vals[0].full)
        a = int(at["axis"]) % r
        if a == 0 or not all(v.batched for v in vals):
            vals = [self.unbatched(v) for v in vals]
        off = 1 if vals[0].batched else 0
        idx = self.add(nm, "cat", vals, {"dim": a - off}, {}, w)
        full = list(vals[0].full)
        full[a] = sum(v.full[a] for v in vals)
        return _Val(idx, full, vals[0].batched)

    def _slice(self, x: _Val, axis: int, start: int, length: int, step: int, nm: str, w: str) -> _Val:
        x, off = self.axis_dim(x, [axis])
        full = list(x.full)
        full[axis] = length
        if length == x.full[axis] and step == 1:
            return x
        if length <= 0:
            raise _Unsupported("an empty slice")
        idx = self.add(nm, "slice", [x], {"dim": axis - off, "start": start, "length": length, "step": step}, {}, w)
        return _Val(idx, full, x.batched)

    def _select(self, node, op: str, at: dict, x: _Val, nm: str, w: str) -> _Val:
        r = len(x.full)
        if op == "Gather":
            a = int(at.get("axis", 0)) % r
            ind = self.const(node.input[1]).astype(np.int64)
            if ind.size > MAX_GATHER:
                raise _Unsupported(f"a Gather of {ind.size} indices from a value (at most {MAX_GATHER})")
            pieces = [self._slice(x, a, int(i) % x.full[a], 1, 1, f"{nm}_{j}", w) for j, i in enumerate(ind.reshape(-1))]
            v = pieces[0] if len(pieces) == 1 else None
            if v is None:
                pieces = [self.unbatched(p) if not all(q.batched for q in pieces) or a == 0 else p for p in pieces]
                off = 1 if pieces[0].batched else 0
                full = list(pieces[0].full)
                full[a] = len(pieces)
                v = _Val(self.add(nm, "cat", pieces, {"dim": a - off}, {}, w), full, pieces[0].batched)
            return self.reshape(v, x.full[:a] + tuple(ind.shape) + x.full[a + 1:], name=nm + "_shape")
        if op == "Split":
            a = int(at.get("axis", 0)) % r
            sizes = at.get("split")
            if sizes is None and len(node.input) > 1 and node.input[1]:
                sizes = [int(s) for s in self.const(node.input[1]).reshape(-1)]
            if sizes is None:
                n = int(at.get("num_outputs", len(node.output)))
                each = -(-x.full[a] // n)
                sizes = [min(each, x.full[a] - i * each) for i in range(n)]
            start = 0
            for j, (o, s) in enumerate(zip(node.output, sizes)):
                if o:
                    self.live[o] = self._slice(x, a, start, int(s), 1, f"{nm}_{j}", w)
                start += int(s)
            return self.live[node.output[0]]
        if "starts" in at:
            starts, ends, axes, steps = at["starts"], at["ends"], at.get("axes"), None
        else:
            starts, ends = (self.const(node.input[i]).reshape(-1).tolist() for i in (1, 2))
            axes, steps = self.opt_const(node, 3), self.opt_const(node, 4)
            axes = None if axes is None else axes.reshape(-1).tolist()
            steps = None if steps is None else steps.reshape(-1).tolist()
        axes = list(range(len(starts))) if axes is None else [int(a) % r for a in axes]
        steps = [1] * len(starts) if steps is None else steps
        v = x
        for a, s, e, st in zip(axes, starts, ends, steps):
            if st <= 0:
                raise _Unsupported(f"a Slice with step {st}")
            s0, e0, _ = slice(int(s), int(e), int(st)).indices(x.full[a])
            v = self._slice(v, a, s0, max(0, -(-(e0 - s0) // st)), int(st), f"{nm}_{a}", w)
        return v

    def _resize(self, node, op: str, at: dict, x: _Val, nm: str, w: str) -> _Val:
        mode = at.get("mode", "nearest")
        x = self.batched(x)
        sp = x.full[2:]
        scales = at.get("scales")
        sizes = None
        if op == "Upsample" and scales is None:
            scales = self.const(node.input[1]).reshape(-1).tolist()
        elif op == "Resize":
            si = 2 if self.opset >= 11 or len(node.input) > 2 else 1
            s = self.opt_const(node, si)
            scales = s.reshape(-1).tolist() if s is not None and s.size else None
            z = self.opt_const(node, 3)
            sizes = z.reshape(-1).tolist() if z is not None and z.size else None
            if at.get("antialias", 0) or at.get("axes") is not None:
                raise _Unsupported("Resize with antialias or axes")
        if sizes is not None:
            out = [int(s) for s in sizes][2:]
            if [int(s) for s in sizes][:2] != list(x.full[:2]):
                raise _Unsupported("a Resize of the batch or channel axis")
        else:
            if scales is None or len(scales) != len(x.full) or scales[0] != 1 or scales[1] != 1:
                raise _Unsupported(f"a Resize with scales {scales}")
            out = [math.floor(n * s) for n, s in zip(sp, scales[2:])]
            # ONNX maps coordinates with the given scale, torch with out/in: they must be the same
            if any(n * s != o or (mode == "nearest" and s != round(s)) for n, s, o in zip(sp, scales[2:], out)):
                raise _Unsupported(f"a Resize by scales {scales} that are not whole numbers of pixels")
        ctm = at.get("coordinate_transformation_mode", "half_pixel" if op == "Resize" else "asymmetric")
        if mode == "nearest":
            if any(o % n for o, n in zip(out, sp)):
                raise _Unsupported(f"nearest Resize from {list(sp)} to {out} (not an integer factor)")
            nmode = at.get("nearest_mode", "round_prefer_floor" if op == "Resize" else "floor")
            ok = (ctm == "asymmetric" and nmode == "floor") or \
                (ctm in ("half_pixel", "pytorch_half_pixel") and nmode.startswith("round")) or \
                all(o == n for o, n in zip(out, sp))
            if not ok:
                raise _Unsupported(f"nearest Resize with coordinate_transformation_mode={ctm}, nearest_mode={nmode}")
            attrs = {"size": out, "mode": "nearest", "align_corners": False}
        elif mode in ("linear", "bilinear"):
            if ctm not in ("half_pixel", "pytorch_half_pixel", "align_corners") or \
                    (ctm == "pytorch_half_pixel" and any(o == 1 for o in out)):
                raise _Unsupported(f"linear Resize with coordinate_transformation_mode={ctm}")
            attrs = {"size": out, "mode": "bilinear" if len(sp) == 2 else "linear",
                     "align_corners": ctm == "align_corners"}
        else:
            raise _Unsupported(f"Resize mode {mode!r}")
        idx = self.add(nm, "upsample", [x], attrs, {}, w)
        return _Val(idx, (1,) + self.nodes[idx].shape, True)
