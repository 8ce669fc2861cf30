"""The GELU patterns of ONNX exports, read as one IR gelu node each (torch below opset 20).

- erf: x·½·(1 + erf(x/√2)) (`approximate="none"`);
- tanh: ½·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) (`approximate="tanh"`), the cube as Pow(x, 3)
  or x·(x·x).

The values inside a pattern are kept *pending* (never turned into IR nodes) until the pattern
completes; a pending value used any other way is an error that names the part of the pattern
seen, so no partial pattern is ever bounded as something else.
"""

from __future__ import annotations

import math

import numpy as np

from auditai.onnx_ops import _Unsupported, _Val

_TANH_GELU = "½·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))"
_STEPS = {"sq": "x·x", "cube": "x³", "kcube": "0.044715·x³", "inner": "x + 0.044715·x³",
          "binner": "√(2/π)·(x + 0.044715·x³)", "tanh": "tanh(√(2/π)·(x + 0.044715·x³))",
          "1+tanh": "1 + tanh(…)", "h(1+tanh)": "½·(1 + tanh(…))"}


def _near(c: np.ndarray, want: float, rel: float = 1e-6) -> bool:
    return c.size == 1 and abs(float(c.reshape(-1)[0]) - want) <= rel * abs(want)


class _GeluPatterns:
    """Mixed into the ONNX reader (`auditai.onnx_graph._Reader`, a `_Builder`)."""

    # ---------------------------------------------------------------- GELU as x·½·(1 + erf(x/√2))
    def _erf(self, node) -> None:
        """Erf of x/√2 (a Div or Mul by a constant): kept pending until the GELU pattern completes."""
        v = self.live.get(node.input[0])
        n = self.nodes[v.idx] if v is not None else None
        if n is None or n.op != "mul_const" or n.consts["value"].numel() != 1 or \
                abs(float(n.consts["value"]) * math.sqrt(2.0) - 1.0) > 1e-6:
            raise _Unsupported("Erf outside the GELU pattern x·½·(1 + erf(x/√2))")
        self.erf[node.output[0]] = ("erf", _Val(n.inputs[0], v.full, v.batched))

    def _gelu(self, node, op: str) -> None:
        (name,) = [i for i in node.input if i in self.erf]
        kind, x = self.erf[name]
        other = [i for i in node.input if i and i != name]
        if kind == "erf" and op == "Add" and len(other) == 1 and other[0] in self.consts and \
                self.consts[other[0]].size == 1 and float(self.consts[other[0]]) == 1.0:
            self.erf[node.output[0]] = ("1+erf", x)
            return
        if kind == "1+erf" and op == "Mul" and len(other) == 1 and other[0] in self.live:
            v = self.live[other[0]]
            nv = self.nodes[v.idx]
            if v.idx == x.idx:
                half = 2.0  # x·(1 + erf) = 2·gelu(x)
            elif nv.op == "mul_const" and nv.inputs == (x.idx,) and nv.consts["value"].numel() == 1 and \
                    float(nv.consts["value"]) == 0.5:
                half = 1.0
            else:
                raise _Unsupported("Erf outside the GELU pattern x·½·(1 + erf(x/√2))")
            g = _Val(self.add(node.name or node.output[0], "gelu", [x], {"approximate": "none"}), x.full, x.batched)
            if half != 1.0:
                g = _Val(self.add((node.name or node.output[0]) + "_x2", "mul_const", [g], {}, {"value": np.array(half)}),
                         x.full, x.batched)
            self.live[node.output[0]] = g
            return
        raise _Unsupported("Erf outside the GELU pattern x·½·(1 + erf(x/√2))")

    # ---------------------------------------------------------------- GELU, tanh approximation
    def pending_trail(self, name: str) -> str:
        """What a pending value of a GELU pattern is, for an error message."""
        if name in self.erf:
            return "the GELU pattern x·½·(1 + erf(x/√2)) seen only as far as " + self.erf[name][0]
        return f"the tanh-GELU pattern {_TANH_GELU} seen only as far as {_STEPS[self.tgelu[name][0]]}"

    def _scalar(self, node, name: str, x: _Val) -> np.ndarray | None:
        """The other input of node as a scalar constant that does not broadcast x up, else None."""
        other = [i for i in node.input if i and i != name]
        if len(other) != 1 or other[0] not in self.consts:
            return None
        c = self.consts[other[0]]
        return c if c.size == 1 and c.ndim <= len(x.full) else None

    def _is_x(self, node, name: str, x: _Val) -> bool:
        """Whether the other input of a two-input node is the live value x."""
        other = [i for i in node.input if i and i != name]
        return len(other) == 1 and other[0] in self.live and self.live[other[0]].idx == x.idx

    def _tanh_gelu_start(self, node, op: str) -> bool:
        """Pow(x, 3) or x·x of a live x: the start of the tanh-GELU pattern (pending)."""
        ins = [i for i in node.input if i]
        if op == "Pow" and len(ins) == 2 and ins[0] in self.live and ins[1] in self.consts:
            if not _near(self.consts[ins[1]], 3.0, 0.0):
                raise _Unsupported(f"Pow of a value by {self.consts[ins[1]].reshape(-1)[:4].tolist()} "
                                   f"(only x³ inside the tanh-GELU pattern {_TANH_GELU})")
            self.tgelu[node.output[0]] = ("cube", self.live[ins[0]])
            self.origin[node.output[0]] = (node.name or node.output[0], op)
            return True
        if op == "Mul" and len(ins) == 2 and all(i in self.live for i in ins) and \
                self.live[ins[0]].idx == self.live[ins[1]].idx:
            self.tgelu[node.output[0]] = ("sq", self.live[ins[0]])
            self.origin[node.output[0]] = (node.name or node.output[0], op)
            return True
        return False

    def _tanh_gelu(self, node, op: str) -> None:
        names = [i for i in node.input if i in self.tgelu]
        name = names[0]
        kind, x = self.tgelu[name]
        nxt = None
        if len(names) == 1:
            c = self._scalar(node, name, x)
            if kind == "sq" and op == "Mul" and self._is_x(node, name, x):
                nxt = "cube"
            elif kind == "cube" and op == "Mul" and c is not None and _near(c, 0.044715):
                nxt = "kcube"
            elif kind == "kcube" and op == "Add" and self._is_x(node, name, x):
                nxt = "inner"
            elif kind == "inner" and op == "Mul" and c is not None and _near(c, math.sqrt(2 / math.pi)):
                nxt = "binner"
            elif kind == "binner" and op == "Tanh":
                nxt = "tanh"
            elif kind == "tanh" and op == "Add" and c is not None and _near(c, 1.0):
                nxt = "1+tanh"
            elif kind == "1+tanh" and op == "Mul" and c is not None and _near(c, 0.5):
                nxt = "h(1+tanh)"
            elif kind in ("1+tanh", "h(1+tanh)") and op == "Mul" and self._gelu_tanh_end(node, name, kind, x):
                return
        if nxt is None:
            raise _Unsupported(f"{self.pending_trail(name)}, then {op}: not that pattern (a product of "
                               "values, Pow and the like have no bound rule outside it)")
        self.tgelu[node.output[0]] = (nxt, x)
        self.origin[node.output[0]] = (node.name or node.output[0], op)


    def _gelu_tanh_end(self, node, name: str, kind: str, x: _Val) -> bool:
        """x·(1 + tanh(…)) = 2·gelu, x·½·(1 + tanh(…)) and (½x)·(1 + tanh(…)) = gelu (tanh form)."""
        other = [i for i in node.input if i and i != name]
        v = self.live.get(other[0]) if len(other) == 1 else None
        if v is None:
            return False
        nv = self.nodes[v.idx]
        if v.idx == x.idx:
            factor = 2.0 if kind == "1+tanh" else 1.0
        elif kind == "1+tanh" and nv.op == "mul_const" and nv.inputs == (x.idx,) and \
                _near(nv.consts["value"].numpy(), 0.5):
            factor = 1.0
        else:
            return False
        nm = node.name or node.output[0]
        g = _Val(self.add(nm, "gelu", [x], {"approximate": "tanh"}), x.full, x.batched)
        if factor != 1.0:
            g = _Val(self.add(nm + "_x2", "mul_const", [g], {}, {"value": np.array(factor)}), x.full, x.batched)
        self.live[node.output[0]] = g
        return True


__all__: list[str] = []
