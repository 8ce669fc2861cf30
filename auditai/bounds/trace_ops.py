"""The op table of the fx reader (`trace.py`): which torch modules and functions have a bound rule.

Leaf-module rules (`_leaf`: a module becomes one IR node with its attributes and constants),
the sets of functions and methods each IR op stands for (`_ADD`, `_RESHAPE`, `_ACT`, ...), the
tracer that keeps those modules whole, and the helpers that tell values that depend on the
input from constants. A new operator gets its entry here and its rule in `_Reader`.
"""

from __future__ import annotations

import operator
import re
from typing import Any, Dict, List, Tuple

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn


TRACE_BATCH = 3  # an odd batch, so a reshape that fixes the batch size shows


class _Unsupported(Exception):
    pass


class _Tracer(fx.Tracer):
    def __init__(self, lines: bool = False) -> None:
        super().__init__()
        # source lines cost a one-time import of torch's traceback symbolizer (seconds): they are
        # recorded only when an error needs them (trace_module retraces then)
        self.record_stack_traces = lines

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return type(m) in _LEAF_RULES or isinstance(m, tuple(_LEAF_PARAMETRIZED)) and \
            type(m).forward in {c.forward for c in _LEAF_PARAMETRIZED} or super().is_leaf_module(m, qualname)


def qualified(root: str, qual: str) -> str:
    """``head[2].conv`` for the submodule ``2.conv`` (the chain reader's way of naming positions)."""
    out = root
    for part in str(qual).split(".") if qual else []:
        out += f"[{part}]" if part.isdigit() else f".{part}"
    return out


def _where(n: fx.Node, qual: str) -> str:
    st = getattr(n, "stack_trace", None) or (n.meta.get("stack_trace") if hasattr(n, "meta") else None)
    if st:
        lines = re.findall(r'File "([^"]+)", line (\d+)', st)
        user = [f"{f}:{ln}" for f, ln in lines if "/torch/" not in f]
        if user:
            return f"{qual} ({user[-1]})"
    return qual


def _tup(v, k: int) -> List[int]:
    return [int(v)] * k if isinstance(v, int) else [int(x) for x in v]


# ------------------------------------------------------------------ leaf modules → nodes
def _conv_node(m, x_shape) -> Tuple[str, Dict[str, Any], Dict[str, Tensor]]:
    k = len(x_shape) - 1
    if m.padding_mode != "zeros":
        raise _Unsupported(f"padding_mode={m.padding_mode!r}")
    if isinstance(m.padding, str):
        if m.padding != "valid":
            raise _Unsupported(f"padding={m.padding!r}; give numbers")
        pad = [0] * k
    else:
        pad = _tup(m.padding, k)
    attrs = {"stride": _tup(m.stride, k), "padding": pad, "dilation": _tup(m.dilation, k), "groups": m.groups}
    consts = {"weight": m.weight}
    if m.bias is not None:
        consts["bias"] = m.bias
    if isinstance(m, (nn.ConvTranspose1d, nn.ConvTranspose2d)):
        attrs["output_padding"] = _tup(m.output_padding, k)
        return "conv_transpose", attrs, consts
    return "conv", attrs, consts


def _bn_node(m, x_shape):
    if m.training:
        raise _Unsupported("BatchNorm in training mode; call .eval()")
    if m.running_mean is None or m.running_var is None:
        raise _Unsupported("BatchNorm without running statistics")
    inv = torch.rsqrt(m.running_var + m.eps)
    w = m.weight if m.weight is not None else torch.ones_like(inv)
    b = m.bias if m.bias is not None else torch.zeros_like(inv)
    scale = w * inv
    shift = b - m.running_mean * scale
    view = (-1, *([1] * (len(x_shape) - 1)))
    return "scale_shift", {}, {"scale": scale.reshape(view), "shift": shift.reshape(view)}


def _pool_attrs(kernel, stride, padding, nd, dilation=1, ceil=False):
    if ceil:
        raise _Unsupported("ceil_mode=True")
    kernel = _tup(kernel, nd)
    stride = kernel if stride is None or stride == [] else _tup(stride, nd)
    return {"kernel": kernel, "stride": stride, "padding": _tup(padding, nd), "dilation": _tup(dilation, nd)}


def _adaptive_avg(out_size, x_shape):
    nd = len(x_shape) - 1
    osz = _tup(out_size, nd) if out_size is not None else list(x_shape[1:])
    osz = [x_shape[1 + i] if o is None else o for i, o in enumerate(osz)]
    if all(o == 1 for o in osz):
        return "mean", {"dims": list(range(1, nd + 1)), "keepdim": True}
    if any(x_shape[1 + i] % o for i, o in enumerate(osz)):
        raise _Unsupported(f"adaptive average pooling from {list(x_shape[1:])} to {osz} (not a divisor)")
    k = [x_shape[1 + i] // o for i, o in enumerate(osz)]
    return "avgpool", {"kernel": k, "stride": k, "padding": [0] * nd, "count_include_pad": True}


def _leaf(m: nn.Module, x_shape) -> Tuple[str, Dict[str, Any], Dict[str, Tensor]]:
    t = type(m)
    if isinstance(m, nn.Linear):
        c = {"weight": m.weight}
        if m.bias is not None:
            c["bias"] = m.bias
        return "linear", {}, c
    if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.ConvTranspose1d, nn.ConvTranspose2d)):
        return _conv_node(m, x_shape)
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return _bn_node(m, x_shape)
    if t is nn.ReLU:
        return "relu", {}, {}
    if t is nn.LeakyReLU:
        return "leaky_relu", {"slope": float(m.negative_slope)}, {}
    if t in (nn.Hardtanh, nn.ReLU6):
        return "hardtanh", {"min": float(m.min_val), "max": float(m.max_val)}, {}
    if t in (nn.Tanh, nn.Sigmoid, nn.SiLU):
        return {nn.Tanh: "tanh", nn.Sigmoid: "sigmoid", nn.SiLU: "silu"}[t], {}, {}
    if t is nn.GELU:
        return "gelu", {"approximate": m.approximate}, {}
    if t is nn.ELU:
        return "elu", {"alpha": float(m.alpha)}, {}
    if t is nn.Softplus:
        return "softplus", {"beta": float(m.beta), "threshold": float(m.threshold)}, {}
    if t in (nn.Identity,):
        return "identity", {}, {}
    if t in (nn.Dropout, nn.Dropout1d, nn.Dropout2d):
        if m.training and m.p > 0:
            raise _Unsupported("Dropout in training mode; call .eval()")
        return "identity", {}, {}
    if t in (nn.Flatten, nn.Unflatten):
        return "flatten", {}, {}
    if t in (nn.AvgPool1d, nn.AvgPool2d):
        nd = 1 if t is nn.AvgPool1d else 2
        a = _pool_attrs(m.kernel_size, m.stride, m.padding, nd, 1, m.ceil_mode)
        a.pop("dilation")
        a["count_include_pad"] = bool(m.count_include_pad)
        a["divisor"] = getattr(m, "divisor_override", None)
        return "avgpool", a, {}
    if t in (nn.MaxPool1d, nn.MaxPool2d):
        nd = 1 if t is nn.MaxPool1d else 2
        if m.return_indices:
            raise _Unsupported("MaxPool with return_indices")
        return "maxpool", _pool_attrs(m.kernel_size, m.stride, m.padding, nd, m.dilation, m.ceil_mode), {}
    if t in (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d):
        op, a = _adaptive_avg(m.output_size, x_shape)
        return op, a, {}
    if t is nn.Upsample:
        return "upsample_call", {"size": m.size, "scale_factor": m.scale_factor, "mode": m.mode,
                                 "align_corners": m.align_corners}, {}
    raise _Unsupported(f"no bound rule for module {t.__name__}")


_LEAF_RULES = {nn.ReLU, nn.LeakyReLU, nn.Hardtanh, nn.ReLU6, nn.Tanh, nn.Sigmoid, nn.SiLU, nn.GELU, nn.ELU,
               nn.Softplus, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Flatten, nn.Unflatten, nn.AvgPool1d,
               nn.AvgPool2d, nn.MaxPool1d, nn.MaxPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.Upsample,
               nn.Linear, nn.Conv1d, nn.Conv2d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.BatchNorm1d,
               nn.BatchNorm2d}
_LEAF_PARAMETRIZED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.ConvTranspose1d, nn.ConvTranspose2d)


# ------------------------------------------------------------------ the interpreter
_ADD = {operator.add, operator.iadd, torch.add, "add", "__add__", "__radd__", "add_", "__iadd__"}
_SUB = {operator.sub, operator.isub, torch.sub, torch.subtract, "sub", "__sub__", "subtract", "sub_", "__isub__"}
_RSUB = {"__rsub__", torch.rsub}
_MUL = {operator.mul, operator.imul, torch.mul, torch.multiply, "mul", "__mul__", "__rmul__", "mul_", "__imul__"}
_DIV = {operator.truediv, operator.itruediv, torch.div, torch.true_divide, "div", "__truediv__", "truediv", "div_"}
_NEG = {operator.neg, torch.neg, "neg", "__neg__"}
_RESHAPE = {torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze, "flatten", "view", "reshape",
            "squeeze", "unsqueeze", "view_as", "reshape_as"}
_IDENT = {"contiguous", "clone", F.dropout, "detach_", "float", "double", "to", "type_as"}
_ACT = {F.relu: "relu", torch.relu: "relu", "relu": "relu", torch.tanh: "tanh", F.tanh: "tanh", "tanh": "tanh",
        torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid", "sigmoid": "sigmoid", F.silu: "silu", F.gelu: "gelu",
        F.elu: "elu", F.softplus: "softplus", F.leaky_relu: "leaky_relu", F.hardtanh: "hardtanh", F.relu6: "hardtanh",
        torch.clamp: "hardtanh", torch.clip: "hardtanh", "clamp": "hardtanh", "clip": "hardtanh", "clamp_min": "hardtanh",
        torch.clamp_min: "hardtanh", "relu_": "relu", F.relu_: "relu"}


def _name(t) -> str:
    return t if isinstance(t, str) else getattr(t, "__name__", repr(t))


def _consts(**kw) -> Dict[str, Tensor]:
    out = {}
    for k, v in kw.items():
        if v is None:
            continue
        if isinstance(v, tuple):
            raise _Unsupported(f"a {k} that depends on the input")
        out[k] = v
    return out


def _concrete(a, env):
    """fx arguments with every fx.Node replaced by its concrete value."""
    return fx.node.map_arg(a, lambda n: env[n][2] if _is_entry(env[n]) else env[n])


def _entries(a, env):
    """fx arguments with every fx.Node replaced by its env entry (("node", i, value) or a constant)."""
    return fx.node.map_arg(a, lambda n: env[n])


def _is_entry(v) -> bool:
    return isinstance(v, tuple) and len(v) == 3 and v[0] == "node"


def _depends(a) -> bool:
    """Whether any argument (nested in lists, tuples, dicts) is a tensor that depends on the input."""
    if _is_entry(a):
        return True
    if isinstance(a, (list, tuple)):
        return any(_depends(v) for v in a)
    if isinstance(a, dict):
        return any(_depends(v) for v in a.values())
    return False
