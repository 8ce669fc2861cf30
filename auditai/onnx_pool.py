"""ONNX pooling (MaxPool, AveragePool) with any pads, ceil_mode and auto_pad, and auto_pad's pads.

Each pool becomes explicit padding + a floor-mode IR pool, so the bound engine sees only the pools
it has rules for: MaxPool pads beyond the IR pool's own symmetric (−inf) padding replicate the edge
slice (every window that touches the padding also holds that edge element, so the max is
unchanged; windows entirely in the padding are refused), AveragePool pads with zeros and rescales
each output by kernel size / ONNX's count of that window (count_include_pad or not, windows of
ceil_mode clipped to the padded input). Output sizes follow onnxruntime (and torch): in ceil_mode
the last window must start inside the input or its leading pad.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from auditai.onnx_ops import _Unsupported, _Val


class _PoolOps:
    """Mixed into the ONNX reader (`auditai.onnx_graph._Reader`, a `_Builder`)."""

    def _auto_pads(self, at: dict, sp: Sequence[int], k: Sequence[int], s: Sequence[int],
                   d: Sequence[int]) -> list[int]:
        """ONNX pads (begins, then ends) from `pads` or `auto_pad` (SAME_*: output ceil(L/stride))."""
        nd = len(k)
        mode = at.get("auto_pad", "NOTSET")
        if mode == "NOTSET":
            return [int(p) for p in at.get("pads", [0] * 2 * nd)]
        if mode == "VALID":
            return [0] * 2 * nd
        if mode not in ("SAME_UPPER", "SAME_LOWER"):
            raise _Unsupported(f"auto_pad={mode!r}")
        if any(int(v) != 1 for v in d):  # onnxruntime refuses it too: no agreed meaning
            raise _Unsupported(f"auto_pad={mode} with dilations {list(d)}")
        begin, end = [], []
        for n, kk, ss, dd in zip(sp, k, s, d):
            total = (-(-n // ss) - 1) * ss + dd * (kk - 1) + 1 - n
            if total < 0:  # onnxruntime refuses it too
                raise _Unsupported(f"auto_pad={mode} of a size {n} by kernel {kk}, stride {ss}: a negative pad")
            lo = total // 2 if mode == "SAME_UPPER" else total - total // 2
            begin.append(lo)
            end.append(total - lo)
        return begin + end

    def _replicate_pad(self, x: _Val, axis: int, b: int, e: int, nm: str, w: str) -> _Val:
        """x with its first/last slice along ONNX `axis` repeated b/e times (exact, linear)."""
        if not b and not e:
            return x
        n = x.full[axis]
        first = self._slice(x, axis, 0, 1, 1, nm + "_first", w)
        last = self._slice(x, axis, n - 1, 1, 1, nm + "_last", w)
        parts = [first] * b + [x] + [last] * e
        full = list(x.full)
        full[axis] = n + b + e
        idx = self.add(nm, "cat", parts, {"dim": axis - 1}, {}, w)
        return _Val(idx, full, True)

    def _pool(self, node, op: str, at: dict, x: _Val, nm: str, w: str) -> _Val:
        """MaxPool/AveragePool, any pads, ceil_mode and auto_pad: explicit padding + a floor-mode pool.

        MaxPool pads beyond the IR pool's own symmetric padding (−inf) replicate the edge slice (the
        window holds that element anyway: the max is unchanged); AveragePool pads with zeros and
        rescales each output by kernel size / the ONNX count (count_include_pad or not)."""
        if len([o for o in node.output if o]) > 1:
            raise _Unsupported("MaxPool with its indices output")
        k = [int(v) for v in at["kernel_shape"]]
        nd = len(k)
        if nd not in (1, 2):
            raise _Unsupported(f"pooling over {nd} spatial dims")
        x = self.batched(x)
        if len(x.full) != 2 + nd:
            raise _Unsupported(f"a {nd}-D pool of a value of shape {list(x.full)}")
        sp = x.full[2:]
        s = [int(v) for v in at.get("strides", [1] * nd)]
        d = [int(v) for v in at.get("dilations", [1] * nd)]
        pads = self._auto_pads(at, sp, k, s, d)
        begin, end = pads[:nd], pads[nd:]
        ceil = bool(at.get("ceil_mode", 0)) and at.get("auto_pad", "NOTSET") in ("NOTSET", "VALID")
        out, extra = [], []
        for n, kk, ss, dd, b, e in zip(sp, k, s, d, begin, end):
            span = n + b + e - dd * (kk - 1) - 1
            if span < 0:
                raise _Unsupported(f"a pooling window of {kk} larger than the padded input of {n + b + e}")
            o = (-(-span // ss) if ceil else span // ss) + 1
            if ceil and (o - 1) * ss >= n + b:  # the last window must start inside the input or left pad
                o -= 1
            out.append(o)
            extra.append(max(0, (o - 1) * ss + dd * (kk - 1) + 1 - (n + b + e)))
        simple = begin == end and not any(extra)
        if op == "MaxPool" and at.get("storage_order", 0):
            raise _Unsupported("MaxPool with storage_order=1")
        if op == "AveragePool" and any(v != 1 for v in d):
            raise _Unsupported("AveragePool with dilations")
        attrs: dict[str, Any] = {"kernel": k, "stride": s}
        if op == "MaxPool":
            if simple:
                attrs.update(padding=begin, dilation=d)
            else:
                if any(v != 1 for v in d):
                    raise _Unsupported(f"MaxPool with dilations {d} and pads {pads}, ceil_mode={int(ceil)}")
                for n, kk, ss, b, o in zip(sp, k, s, begin, out):
                    if any(i * ss + kk - 1 < b or i * ss > b + n - 1 for i in range(o)):
                        raise _Unsupported(f"MaxPool with a window entirely in the padding (pads {pads})")
                sym = [min(b, e + x_, kk // 2) for b, e, x_, kk in zip(begin, end, extra, k)]
                for a in range(nd):
                    x = self._replicate_pad(x, 2 + a, begin[a] - sym[a], end[a] + extra[a] - sym[a],
                                            f"{nm}_edge{a}", w)
                attrs.update(padding=sym, dilation=d)
            idx = self.add(nm, "maxpool", [x], attrs, {}, w)
        elif simple:
            attrs.update(padding=begin, count_include_pad=bool(at.get("count_include_pad", 0)) or not any(begin),
                         divisor=None)
            idx = self.add(nm, "avgpool", [x], attrs, {}, w)
        else:
            x = self._pad_ir(x, begin, [e + x_ for e, x_ in zip(end, extra)], nm + "_pad", w)
            attrs.update(padding=[0] * nd, count_include_pad=True, divisor=None)
            idx = self.add(nm, "avgpool", [x], attrs, {}, w)
            include = bool(at.get("count_include_pad", 0))
            counts = []
            for n, kk, ss, b, e, o in zip(sp, k, s, begin, end, out):
                lo, hi = (0, n + b + e) if include else (b, b + n)
                counts.append(np.array([max(0, min(i * ss + kk, hi) - max(i * ss, lo)) for i in range(o)], float))
            count = counts[0] if nd == 1 else np.outer(counts[0], counts[1])
            if (count == 0).any():
                raise _Unsupported(f"AveragePool with a window entirely in the padding (pads {pads})")
            scale = math.prod(k) / count
            if (scale != 1).any():
                v = _Val(idx, (1,) + self.nodes[idx].shape, True)
                idx = self.add(nm + "_count", "mul_const", [v], {}, {"value": scale[None]}, w)
        v = _Val(idx, (1,) + self.nodes[idx].shape, True)
        if list(v.full[2:]) != out:
            raise _Unsupported(f"{op} whose output {list(v.full[2:])} is not ONNX's {out}")
        return v


__all__: list[str] = []
