"""Read any torch module into the graph IR by tracing it with torch.fx (docs/internals.md says why fx).

`trace_module(module, input_shape)` runs `torch.fx.symbolic_trace` (so custom `forward` code with
residual adds, `torch.cat`, views, slicing and functional calls is read as written), then
interprets the fx graph once on a concrete batch, turning every tensor that depends on the input
into a `Node` and every other value into a constant. Anything without a bound rule is collected
and reported in one UnsupportedLayerError that lists each op with where it is (the Python source
line when fx recorded it). Modules with hooks are refused: fx does not trace hooks.
"""

from __future__ import annotations

import math
import operator
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn

from auditai.bounds.graph import Graph, Node
from auditai.bounds.guard import global_hooks, refuse_hidden_forward
from auditai.errors import UnsupportedLayerError
from auditai.bounds.trace_ops import (  # noqa: F401  (TRACE_BATCH, qualified: re-exported)
    TRACE_BATCH,
    _ACT,
    _ADD,
    _DIV,
    _IDENT,
    _MUL,
    _NEG,
    _RESHAPE,
    _RSUB,
    _SUB,
    _Tracer,
    _Unsupported,
    _adaptive_avg,
    _concrete,
    _consts,
    _depends,
    _entries,
    _is_entry,
    _leaf,
    _name,
    _pool_attrs,
    _tup,
    _where,
    qualified,
)


class _Reader:
    """Walks the fx graph with concrete values; tensors that depend on the input become Nodes."""

    def __init__(self, module: nn.Module, input_shape: Tuple[int, ...], root: str) -> None:
        self.module, self.root = module, root
        self.mods = dict(module.named_modules())
        self.nodes: List[Node] = [Node("input", "input", (), shape=tuple(input_shape), where=root)]
        self.unsupported: List[str] = []

    # ---- helpers
    def add(self, name: str, op: str, inputs: Sequence[int], value: Tensor, where: str,
            attrs: Optional[dict] = None, consts: Optional[dict] = None) -> Tuple[str, int, Tensor]:
        self.nodes.append(Node(name, op, tuple(inputs), attrs or {}, consts or {}, tuple(value.shape[1:]), where))
        return ("node", len(self.nodes) - 1, value)

    def const_for(self, c: Any, shape: Tuple[int, ...]) -> Tensor:
        """A constant operand as a per-sample broadcastable tensor (no batch dependence)."""
        t = torch.as_tensor(c)
        if t.dim() > len(shape):
            if t.dim() == len(shape) + 1 and t.shape[0] == 1:
                t = t[0]
            else:
                raise _Unsupported(f"a constant of shape {tuple(t.shape)} that depends on the batch")
        return t.detach() if not t.requires_grad else t

    def reshape(self, fxn, a: int, value: Tensor, where: str):
        if value.shape[0] != TRACE_BATCH:
            raise _Unsupported(f"a reshape to {tuple(value.shape)} that changes the batch dimension")
        return self.add(fxn.name, "reshape", [a], value, where, {"shape": list(value.shape[1:])})

    # ---- one fx node
    def read(self, fxn: fx.Node, args, kwargs, values, value, where: str):
        """IR entry for a call whose arguments depend on the input."""
        t = fxn.target
        if fxn.op == "call_module":
            m = self.mods[t]
            src = values[0]
            op, attrs, consts = _leaf(m, tuple(src[2].shape[1:]))
            if op == "flatten":
                return self.reshape(fxn, src[1], value, where)
            if op == "upsample_call":
                return self._upsample(fxn, src, value, attrs["mode"], attrs["align_corners"], where)
            return self.add(fxn.name, op, [src[1]], value, where, attrs, consts)
        key = t if fxn.op == "call_function" else str(t)
        deps = [v for v in values if isinstance(v, tuple) and v and v[0] == "node"]
        x = values[0] if values and isinstance(values[0], tuple) and values[0][0] == "node" else None
        if key in _ADD | _SUB | _RSUB | _MUL | _DIV:
            return self._arith(fxn, key, values, kwargs, value, where)
        if key in _NEG:
            return self.add(fxn.name, "neg", [x[1]], value, where)
        if key in _IDENT:
            if key in ("to", "type_as", "float", "double"):
                raise _Unsupported(f"a dtype change ({_name(key)}) inside the head")
            return self.add(fxn.name, "identity", [x[1]], value, where)
        if key in _RESHAPE:
            return self.reshape(fxn, x[1], value, where)
        if key in _ACT:
            return self._activation(fxn, _ACT[key], key, x, args, kwargs, value, where)
        if key in (torch.cat, torch.concat, torch.concatenate):
            seq = values[0]
            dim = int(kwargs.get("dim", args[1] if len(args) > 1 else 0))
            dim = dim % value.dim()
            if dim == 0 or not all(isinstance(v, tuple) and v[0] == "node" for v in seq):
                raise _Unsupported("concatenation along the batch or with constants")
            return self.add(fxn.name, "cat", [v[1] for v in seq], value, where, {"dim": dim - 1})
        if key in ("permute", torch.permute, "transpose", torch.transpose, "t", "swapaxes"):
            return self._permute(fxn, key, x, args, kwargs, value, where)
        if key is operator.getitem:
            return self._getitem(fxn, x, args[1], value, where)
        if key in (F.linear,):
            w, b = args[1], (args[2] if len(args) > 2 else kwargs.get("bias"))
            return self.add(fxn.name, "linear", [x[1]], value, where, {}, _consts(weight=w, bias=b))
        if key in ("mean", torch.mean, "sum", torch.sum):
            dims = kwargs.get("dim", args[1] if len(args) > 1 else None)
            keep = bool(kwargs.get("keepdim", args[2] if len(args) > 2 else False))
            nd = x[2].dim()
            dims = list(range(1, nd)) if dims is None else [d % nd for d in _tup(dims, 1)]
            if 0 in dims:
                raise _Unsupported("a mean or sum over the batch")
            out = self.add(fxn.name, "mean", [x[1]], value if _name(key) == "mean" else value / math.prod(
                x[2].shape[d] for d in dims), where, {"dims": [d - 1 for d in dims], "keepdim": keep})
            if _name(key) == "sum":
                k = float(math.prod(x[2].shape[d] for d in dims))
                return self.add(fxn.name + "_sum", "mul_const", [out[1]], value, where, {}, {"value": torch.tensor(k)})
            return out
        if key in (F.pad,):
            mode = kwargs.get("mode", args[2] if len(args) > 2 else "constant")
            if mode != "constant":
                raise _Unsupported(f"pad mode {mode!r}")
            val = kwargs.get("value", args[3] if len(args) > 3 else 0.0)
            return self.add(fxn.name, "pad", [x[1]], value, where,
                            {"pads": list(args[1]), "value": float(val or 0.0)})
        if key in (F.interpolate, F.upsample):
            mode = kwargs.get("mode", args[3] if len(args) > 3 else "nearest")
            ac = kwargs.get("align_corners", None)
            return self._upsample(fxn, x, value, mode, ac, where)
        if key in (F.avg_pool1d, F.avg_pool2d, F.max_pool1d, F.max_pool2d, F.adaptive_avg_pool1d,
                   F.adaptive_avg_pool2d, F.conv1d, F.conv2d, F.conv_transpose1d, F.conv_transpose2d, F.batch_norm):
            return self._functional_layer(fxn, key, x, args, kwargs, value, where)
        if key in (operator.matmul, torch.matmul, "matmul", "__matmul__") and x is not None and len(deps) == 1:
            w = values[1]
            if isinstance(w, tuple) or x[2].dim() != 2 or torch.as_tensor(w).dim() != 2:
                raise _Unsupported("a matrix product other than (N, in) @ constant (in, out)")
            return self.add(fxn.name, "linear", [x[1]], value, where, {}, {"weight": torch.as_tensor(w).T})
        raise _Unsupported(f"no bound rule for {fxn.op} {_name(key)}")

    def _arith(self, fxn, key, values, kwargs, value, where):
        a, b = values[0], values[1] if len(values) > 1 else kwargs.get("other")
        if kwargs.get("alpha", 1) != 1:
            raise _Unsupported("add/sub with alpha")
        dep_a = isinstance(a, tuple) and a[0] == "node"
        dep_b = isinstance(b, tuple) and b[0] == "node"
        if key in _RSUB:
            a, b, dep_a, dep_b = b, a, dep_b, dep_a
            key = operator.sub
        shape = tuple(value.shape[1:])
        if dep_a and dep_b:
            if key in _ADD:
                return self.add(fxn.name, "add", [a[1], b[1]], value, where)
            if key in _SUB:
                return self.add(fxn.name, "sub", [a[1], b[1]], value, where)
            raise _Unsupported("a product or quotient of two tensors that both depend on the input")
        x, c = (a, b) if dep_a else (b, a)
        if tuple(x[2].shape) != tuple(value.shape):
            raise _Unsupported(f"a constant that broadcasts the input from {tuple(x[2].shape)} to {tuple(value.shape)}")
        c = self.const_for(c, shape)
        if key in _ADD:
            return self.add(fxn.name, "add_const", [x[1]], value, where, {}, {"value": c})
        if key in _SUB:
            if dep_a:
                return self.add(fxn.name, "add_const", [x[1]], value, where, {}, {"value": -c})
            neg = self.add(fxn.name + "_neg", "neg", [x[1]], value, where)
            return self.add(fxn.name, "add_const", [neg[1]], value, where, {}, {"value": c})
        if key in _MUL:
            return self.add(fxn.name, "mul_const", [x[1]], value, where, {}, {"value": c})
        if not dep_a:
            raise _Unsupported("division by a tensor that depends on the input")
        rounding = kwargs.get("rounding_mode")
        if rounding is not None:
            raise _Unsupported(f"division with rounding_mode={rounding!r}")
        return self.add(fxn.name, "mul_const", [x[1]], value, where, {}, {"value": 1.0 / c})

    def _activation(self, fxn, op, key, x, args, kwargs, value, where):
        attrs: Dict[str, Any] = {}
        if op == "leaky_relu":
            attrs["slope"] = float(kwargs.get("negative_slope", args[1] if len(args) > 1 else 0.01))
        elif op == "hardtanh":
            if key in (F.relu6,):
                lo, hi = 0.0, 6.0
            elif key in (F.hardtanh,):
                lo = kwargs.get("min_val", args[1] if len(args) > 1 else -1.0)
                hi = kwargs.get("max_val", args[2] if len(args) > 2 else 1.0)
            elif key in ("clamp_min", torch.clamp_min):
                lo, hi = kwargs.get("min", args[1] if len(args) > 1 else None), None
            else:
                lo = kwargs.get("min", args[1] if len(args) > 1 else None)
                hi = kwargs.get("max", args[2] if len(args) > 2 else None)
            if isinstance(lo, (Tensor, fx.Node)) or isinstance(hi, (Tensor, fx.Node)):
                raise _Unsupported("clamp with tensor bounds")
            attrs = {"min": -math.inf if lo is None else float(lo), "max": math.inf if hi is None else float(hi)}
        elif op == "gelu":
            attrs["approximate"] = kwargs.get("approximate", "none")
        elif op == "elu":
            attrs["alpha"] = float(kwargs.get("alpha", args[1] if len(args) > 1 else 1.0))
        elif op == "softplus":
            attrs["beta"] = float(kwargs.get("beta", args[1] if len(args) > 1 else 1.0))
            attrs["threshold"] = float(kwargs.get("threshold", args[2] if len(args) > 2 else 20.0))
        return self.add(fxn.name, op, [x[1]], value, where, attrs)

    def _permute(self, fxn, key, x, args, kwargs, value, where):
        nd = x[2].dim()
        if _name(key) == "permute":
            dims = list(args[1:]) if len(args) > 2 or isinstance(args[1], int) else list(args[1])
            dims = [int(d) % nd for d in dims]
        else:
            if _name(key) == "t":
                a, b = 0, 1
            else:
                a, b = int(args[1]) % nd, int(args[2]) % nd
            dims = list(range(nd))
            dims[a], dims[b] = dims[b], dims[a]
        if dims[0] != 0:
            raise _Unsupported("a permutation that moves the batch dimension")
        return self.add(fxn.name, "permute", [x[1]], value, where, {"dims": [d - 1 for d in dims[1:]]})

    def _getitem(self, fxn, x, index, value, where):
        if not isinstance(index, tuple):
            index = (index,)
        if any(i is Ellipsis for i in index):
            k = index.index(Ellipsis)
            fill = x[2].dim() - (len(index) - 1)
            index = index[:k] + (slice(None),) * fill + index[k + 1:]
        if not index or index[0] != slice(None):
            raise _Unsupported("indexing that selects samples of the batch")
        cur, shape = x[1], tuple(x[2].shape[1:])
        drop = []
        for d, i in enumerate(index[1:]):
            size = shape[d]
            if isinstance(i, int):
                i = i % size
                start, stop, step = i, i + 1, 1
                drop.append(d)
            elif isinstance(i, slice):
                start, stop, step = i.indices(size)
            else:
                raise _Unsupported(f"indexing with {type(i).__name__}")
            if (start, stop, step) == (0, size, 1):
                continue
            length = max(0, (stop - start + step - 1) // step)
            shape = shape[:d] + (length,) + shape[d + 1:]
            self.nodes.append(Node(f"{fxn.name}_d{d}", "slice", (cur,), {"dim": d, "start": start, "length": length,
                                                                       "step": step}, {}, shape, where))
            cur = len(self.nodes) - 1
        if drop or shape != tuple(value.shape[1:]):
            return self.reshape(fxn, cur, value, where)
        if cur == x[1]:
            return self.add(fxn.name, "identity", [cur], value, where)
        return ("node", cur, value)

    def _upsample(self, fxn, x, value, mode, align_corners, where):
        if mode not in ("nearest", "bilinear", "linear"):
            raise _Unsupported(f"upsampling mode {mode!r}")
        return self.add(fxn.name, "upsample", [x[1]], value, where,
                        {"size": list(value.shape[2:]), "mode": mode, "align_corners": bool(align_corners)})

    def _functional_layer(self, fxn, key, x, args, kwargs, value, where):
        name = _name(key)
        nd = x[2].dim() - 2
        arg = lambda i, k, d=None: kwargs.get(k, args[i] if len(args) > i else d)  # noqa: E731
        if name.startswith("conv"):
            w, b = arg(1, "weight"), arg(2, "bias")
            attrs = {"stride": _tup(arg(3, "stride", 1), nd), "padding": arg(4, "padding", 0)}
            if "transpose" in name:
                attrs.update(output_padding=_tup(arg(5, "output_padding", 0), nd), groups=int(arg(6, "groups", 1)),
                             dilation=_tup(arg(7, "dilation", 1), nd))
            else:
                attrs.update(dilation=_tup(arg(5, "dilation", 1), nd), groups=int(arg(6, "groups", 1)))
            if isinstance(attrs["padding"], str):
                if attrs["padding"] != "valid":
                    raise _Unsupported(f"padding={attrs['padding']!r}")
                attrs["padding"] = 0
            attrs["padding"] = _tup(attrs["padding"], nd)
            return self.add(fxn.name, "conv_transpose" if "transpose" in name else "conv", [x[1]], value, where,
                            attrs, _consts(weight=w, bias=b))
        if name == "batch_norm":
            mean, var, w, b = arg(1, "running_mean"), arg(2, "running_var"), arg(3, "weight"), arg(4, "bias")
            if arg(5, "training", False):
                raise _Unsupported("batch_norm in training mode")
            inv = torch.rsqrt(var + float(arg(7, "eps", 1e-5)))
            scale = inv * (w if w is not None else 1.0)
            shift = (b if b is not None else 0.0) - mean * scale
            view = (-1, *([1] * nd))
            return self.add(fxn.name, "scale_shift", [x[1]], value, where, {},
                            {"scale": scale.reshape(view), "shift": shift.reshape(view)})
        if name.startswith("adaptive"):
            op, attrs = _adaptive_avg(arg(1, "output_size"), tuple(x[2].shape[1:]))
            return self.add(fxn.name, op, [x[1]], value, where, attrs)
        k, s, p = arg(1, "kernel_size"), arg(2, "stride"), arg(3, "padding", 0)
        if name.startswith("max"):
            if arg(6, "return_indices", False):
                raise _Unsupported("max pooling with return_indices")
            return self.add(fxn.name, "maxpool", [x[1]], value, where,
                            _pool_attrs(k, s, p, nd, arg(4, "dilation", 1), arg(5, "ceil_mode", False)))
        a = _pool_attrs(k, s, p, nd, 1, arg(4, "ceil_mode", False))
        a.pop("dilation")
        a["count_include_pad"] = bool(arg(5, "count_include_pad", True))
        a["divisor"] = arg(6, "divisor_override", None) if nd == 2 else None
        return self.add(fxn.name, "avgpool", [x[1]], value, where, a)


def trace_module(module: nn.Module, input_shape: Sequence[int], root_name: str = "head",
                 dtype: Optional[torch.dtype] = None, _lines: Optional[bool] = None) -> Graph:
    """The graph IR of `module` for per-sample inputs of `input_shape` (see the module docstring)."""
    if _lines is None:
        try:
            return trace_module(module, input_shape, root_name, dtype, _lines=False)
        except UnsupportedLayerError:
            pass  # again, with source lines for the message
        _lines = True
    hooks = global_hooks()
    if hooks:
        raise UnsupportedLayerError(type(module).__name__, root_name, f"a {hooks[0]} is registered for every module")
    for qual, m in module.named_modules():
        refuse_hidden_forward(m, qualified(root_name, qual))
    try:
        fxg = _Tracer(lines=bool(_lines)).trace(module)
    except Exception as err:
        raise UnsupportedLayerError(type(module).__name__, root_name,
                                    f"torch.fx cannot trace its forward ({type(err).__name__}: {err})") from err
    ref = next((t for t in list(module.parameters()) + list(module.buffers()) if t.is_floating_point()), None)
    dt = dtype or (ref.dtype if ref is not None else torch.get_default_dtype())
    dev = ref.device if ref is not None else None
    g = torch.Generator().manual_seed(0)
    x = torch.randn(TRACE_BATCH, *input_shape, generator=g, dtype=torch.float64).to(dt).to(dev or "cpu")
    reader = _Reader(module, tuple(int(s) for s in input_shape), root_name)
    env: Dict[fx.Node, Any] = {}
    seen_input = False
    out_entry = None
    with torch.no_grad():
        for n in fxg.nodes:
            qual = qualified(root_name, n.target) if n.op == "call_module" else f"{root_name}:{n.name}"
            where = _where(n, qual)
            if n.op == "placeholder":
                if seen_input:
                    env[n] = n.args[0] if n.args else None
                    continue
                seen_input = True
                env[n] = ("node", 0, x)
                continue
            if n.op == "get_attr":
                obj = module
                for part in str(n.target).split("."):
                    obj = getattr(obj, part)
                env[n] = obj
                continue
            if n.op == "output":
                out_entry = env[n.args[0]] if isinstance(n.args[0], fx.Node) else None
                break
            args, kwargs = _concrete(n.args, env), _concrete(n.kwargs, env)
            try:
                if n.op == "call_module":
                    value = reader.mods[n.target](*args, **kwargs)
                elif n.op == "call_function":
                    value = n.target(*args, **kwargs)
                else:
                    value = getattr(args[0], n.target)(*args[1:], **kwargs)
            except Exception as err:
                raise UnsupportedLayerError(
                    type(module).__name__, where,
                    f"it fails on inputs of per-sample shape {tuple(input_shape)} "
                    f"({type(err).__name__}: {err})") from err
            entries = _entries(n.args, env)
            if not _depends(entries) and not _depends(_entries(n.kwargs, env)):
                env[n] = value
                continue
            if isinstance(value, (tuple, list)) and n.target in (torch.split, torch.chunk, "split", "chunk", torch.unbind,
                                                                 "unbind"):
                env[n] = _split_entries(reader, n, entries[0], value, where)
                continue
            if not isinstance(value, Tensor):
                env[n] = value  # a shape, a size, a dtype: fixed for every input
                continue
            if isinstance(entries[0], list) and n.target is operator.getitem:
                env[n] = entries[0][args[1]]
                continue
            try:
                values = list(entries) if not (n.target in (torch.cat, torch.concat, torch.concatenate)) else [entries[0]]
                env[n] = reader.read(n, args, kwargs, values, value, where)
            except _Unsupported as why:
                reader.unsupported.append((_owner(n, reader, root_name), where, str(why)))
                env[n] = reader.add(n.name, "identity", [0], value, where)  # keep going to list every one
    if reader.unsupported:
        tname, pos = reader.unsupported[0][0]
        listing = "; ".join(f"{w}: {why}" for _, w, why in reader.unsupported)
        raise UnsupportedLayerError(tname, pos, f"{len(reader.unsupported)} op(s) without a bound rule: {listing}")
    if not _is_entry(out_entry):
        raise UnsupportedLayerError(type(module).__name__, root_name, "its output is not one tensor that depends on the input")
    graph = Graph(reader.nodes, out_entry[1])
    return _prune(graph)


def _owner(n: fx.Node, reader: "_Reader", root: str) -> Tuple[str, str]:
    """(type name, position) of the module an fx node belongs to (the module itself for a call)."""
    if n.op == "call_module":
        return type(reader.mods[n.target]).__name__, qualified(root, n.target)
    stack = n.meta.get("nn_module_stack") or {}
    if stack:
        path, cls = list(stack.values())[-1]
        name = cls.__name__ if isinstance(cls, type) else str(cls).rsplit(".", 1)[-1].strip("'>")
        return name, qualified(root, path)
    return _name(n.target), f"{root}:{n.name}"


def _split_entries(reader: _Reader, n: fx.Node, src, value, where) -> list:
    """torch.split/chunk/unbind along a per-sample dimension: one slice node per piece."""
    dim = n.kwargs.get("dim", n.args[2] if len(n.args) > 2 else 0)
    if n.target in (torch.unbind, "unbind"):
        dim = n.kwargs.get("dim", n.args[1] if len(n.args) > 1 else 0)
    dim = int(dim) % src[2].dim()
    if dim == 0:
        raise _Unsupported("splitting the batch")
    out, start = [], 0
    for piece in value:
        length = piece.shape[dim] if piece.dim() == src[2].dim() else 1
        reader.nodes.append(Node(f"{n.name}_{len(out)}", "slice", (src[1],),
                                 {"dim": dim - 1, "start": start, "length": length, "step": 1}, {},
                                 tuple(src[2].shape[1:dim]) + (length,) + tuple(src[2].shape[dim + 1:]), where))
        entry = ("node", len(reader.nodes) - 1, piece)
        if piece.dim() != src[2].dim():
            entry = reader.add(f"{n.name}_{len(out)}_squeeze", "reshape", [entry[1]], piece, where,
                               {"shape": list(piece.shape[1:])})
        out.append(entry)
        start += length
    return out


def _prune(g: Graph) -> Graph:
    """Drop nodes the output does not depend on and identity nodes; renumber the inputs."""
    keep = [False] * len(g.nodes)
    keep[g.output] = True
    for i in range(len(g.nodes) - 1, -1, -1):
        if keep[i]:
            for j in g.nodes[i].inputs:
                keep[j] = True
    keep[0] = True
    alias: Dict[int, int] = {}
    new: List[Node] = []
    for i, n in enumerate(g.nodes):
        if not keep[i]:
            continue
        ins = tuple(alias[j] for j in n.inputs)
        if n.op == "identity" and i != 0:
            alias[i] = ins[0]
            continue
        new.append(Node(n.name, n.op, ins, n.attrs, n.consts, n.shape, n.where))
        alias[i] = len(new) - 1
    out = alias[g.output]
    if out == 0:  # the identity head
        new.append(Node("output", "identity", (0,), {}, {}, new[0].shape, "output"))
        out = len(new) - 1
    return Graph(new, out)
