"""The guard: bound ops must compute the module's own function before any bound is trusted.

A reader that turns a module into bound ops can miss what the module really does: a
`forward` overridden in a subclass of a supported layer, a forward hook or pre-hook, a
`forward` replaced on the instance. Bounding the ops then bounds a function the model does
not compute, and "verified" would be false (DESIGN.md, "Bound engine"). Two lines of defence:

- `refuse_hidden_forward(module, where)`: structural. A module whose call does more than its
  class's layer (hooks, an overridden or instance-level `forward`) is refused by name.
- `check_agreement(module, ops, points)`: numerical. The ops and the module are run in float64
  at the set's centre points and a few points of the set; where they differ by more than a
  relative 1e-6 the error names the first op whose output parts from the module's.
"""

from __future__ import annotations

import math
import weakref
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import Tensor, nn
from torch.nn.modules import module as _module_globals

from auditai.errors import UnsupportedLayerError

RELATIVE_TOLERANCE = 1e-6
MAX_CHECKED_SAMPLES = 4   # samples of the batch whose centre and set points are checked
POINTS_PER_SAMPLE = 3     # points of the set per checked sample, besides its centre


class ConversionMismatchError(UnsupportedLayerError):
    """The bound ops compute another function than the module: no bound of them is trusted."""

    def __init__(self, module_type: str, position: str, hint: str = "") -> None:
        super().__init__(module_type, position, hint)
        self.args = (f"cannot bound {module_type} at {position}: {hint}",)

    def __str__(self) -> str:
        return self.args[0]


def _hooks(m: nn.Module) -> List[str]:
    kinds = []
    if getattr(m, "_forward_pre_hooks", None):
        kinds.append("forward pre-hook")
    if getattr(m, "_forward_hooks", None):
        kinds.append("forward hook")
    return kinds


def global_hooks() -> List[str]:
    """Module hooks registered for every module (`nn.modules.module.register_module_forward_hook`)."""
    kinds = []
    if getattr(_module_globals, "_global_forward_pre_hooks", None):
        kinds.append("global forward pre-hook")
    if getattr(_module_globals, "_global_forward_hooks", None):
        kinds.append("global forward hook")
    return kinds


def plain(m: nn.Module, cls: type) -> bool:
    """True when `m` is a `cls` whose call computes exactly `cls.forward` (subclasses that only
    add parametrizations or attributes qualify; an overridden or instance `forward` does not)."""
    return isinstance(m, cls) and type(m).forward is cls.forward and "forward" not in vars(m)


def refuse_hidden_forward(m: nn.Module, where: str, cls: Optional[type] = None) -> None:
    """Raise UnsupportedLayerError when calling `m` does more than the layer reader sees."""
    tname = type(m).__name__
    hooks = _hooks(m)
    if hooks:
        raise UnsupportedLayerError(
            tname, where,
            f"it has a {' and a '.join(hooks)}, which changes what the layer computes; the layer "
            "reader cannot see inside hooks (remove them, or fold them into the module's forward)")
    if type(m).__call__ is not nn.Module.__call__ or type(m)._call_impl is not nn.Module._call_impl:
        raise UnsupportedLayerError(tname, where, f"{tname} overrides how a module is called")
    if "forward" in vars(m):
        raise UnsupportedLayerError(tname, where, "its forward is replaced on the instance")
    if cls is not None and isinstance(m, cls) and type(m).forward is not cls.forward:
        raise UnsupportedLayerError(
            tname, where,
            f"{tname} subclasses {cls.__name__} with its own forward, so it is not read as a "
            f"plain {cls.__name__}")


def set_points(x0: Tensor, eps: Tensor, p: float, basis: Optional[Tensor],
               generator: Optional[torch.Generator] = None) -> Tensor:
    """The centres of up to MAX_CHECKED_SAMPLES samples and POINTS_PER_SAMPLE points of each set.

    Points lie on the set's boundary (vertices for ℓ∞ and ℓ1, random directions for ℓ2), where a
    function that differs from the ops away from the centre is most likely to show.
    """
    n = min(x0.shape[0], MAX_CHECKED_SAMPLES)
    c = x0[:n]
    e = eps[:n].to(c.dtype)
    shape = (basis.shape[1],) if basis is not None else tuple(c.shape[1:])
    k = math.prod(shape)
    g = generator or torch.Generator(device="cpu").manual_seed(0)
    raw = torch.randn(n, POINTS_PER_SAMPLE, k, generator=g, dtype=torch.float64)
    if p == math.inf:
        d = raw.sign()
    elif p == 1.0:
        idx = raw.abs().argmax(-1, keepdim=True)
        d = torch.zeros_like(raw).scatter_(-1, idx, 1.0) * raw.gather(-1, idx).sign()
    else:
        d = raw / raw.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    d = d.to(device=c.device, dtype=c.dtype) * e.reshape(n, 1, 1)
    if basis is not None:
        moved = c.unsqueeze(1) + d @ basis.to(c.dtype).T
    else:
        moved = c.unsqueeze(1) + d.reshape(n, POINTS_PER_SAMPLE, *shape)
    pts = torch.cat([c.unsqueeze(1), moved], dim=1)
    return pts.reshape(-1, *c.shape[1:])


_DOUBLE_CACHE: dict = {}


def as_float64(t: Tensor) -> Tensor:
    """A detached float64 copy of `t`, cached per tensor and version (the guard runs per bound call)."""
    if t.dtype == torch.float64:
        return t.detach()
    key = (t._version, t.dtype, t.device, t.data_ptr(), tuple(t.shape))
    hit = _DOUBLE_CACHE.get(id(t))
    if hit is not None and hit[0]() is t and hit[1] == key:
        return hit[2]
    d = t.detach().double()
    ident = id(t)
    try:
        ref = weakref.ref(t, lambda _r: _DOUBLE_CACHE.pop(ident, None))
    except TypeError:  # not weak-referenceable: no caching
        return d
    _DOUBLE_CACHE[ident] = (ref, key, d)
    return d


def _float64_call(module: nn.Module) -> Callable[[Tensor], Tensor]:
    """module's own call (hooks included) with its parameters and buffers in float64."""
    state: Dict[str, Tensor] = {}
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        state[name] = as_float64(t) if t.is_floating_point() else t
    return lambda x: torch.func.functional_call(module, state, (x,))


def check_agreement(module: nn.Module, ops: Sequence, points: Tensor, root_name: str = "head",
                    module_path: Optional[Callable[[str], Optional[nn.Module]]] = None) -> None:
    """Raise ConversionMismatchError unless `ops` compute `module` at `points` (float64, rel. 1e-6).

    `module_path(op_name)` maps an op's name to the submodule it was read from, so the error
    names the first op whose output differs from what that submodule produced in the module's
    own call (hooks and custom forward code included).
    """
    with torch.no_grad():
        x = points.detach().double()
        recorded: Dict[int, Tensor] = {}
        handles = []
        subs: Dict[str, nn.Module] = {}
        if module_path is not None:
            for op in ops:
                sub = module_path(op.name)
                if sub is not None and sub is not module:
                    subs[op.name] = sub
            for sub in {id(s): s for s in subs.values()}.values():
                def rec(m, _inp, out, _key=id(sub)):
                    if isinstance(out, Tensor):
                        recorded[_key] = out.detach()
                handles.append(sub.register_forward_hook(rec))
        try:
            try:
                want = _float64_call(module)(x)
            except Exception as err:  # the module cannot even run on the set's points
                raise ConversionMismatchError(
                    type(module).__name__, root_name,
                    f"the module fails on points of the set ({type(err).__name__}: {err})") from err
        finally:
            for h in handles:
                h.remove()
        if not isinstance(want, Tensor):
            raise ConversionMismatchError(type(module).__name__, root_name,
                                          f"its output is a {type(want).__name__}, not a tensor")
        y = x
        first_bad = None
        for op in ops:
            y = op.forward(y)
            sub = subs.get(op.name)
            if first_bad is None and sub is not None and id(sub) in recorded:
                if not _close(y, recorded[id(sub)]):
                    first_bad = op
        if _close(y, want):
            return
        where = first_bad.name if first_bad is not None else root_name
        what = (f"op {first_bad.name} ({type(first_bad).__name__}) already differs from that layer's "
                "output in the module's own call" if first_bad is not None else
                "every layer agrees, so the module's own forward code (or a hook) computes "
                "something beyond its layers")
        err = _rel_error(y, want)
        culprit = subs.get(first_bad.name, module) if first_bad is not None else module
        raise ConversionMismatchError(
            type(culprit).__name__, where,
            f"the layers read from it compute another function than the module: {what}; "
            f"largest relative difference {err:.3g} at the set's points (tolerance "
            f"{RELATIVE_TOLERANCE:g}); refusing to bound a function the model does not compute")


def _rel_error(a: Tensor, b: Tensor) -> float:
    if a.shape != b.shape:
        return math.inf
    scale = max(1.0, float(b.abs().max())) if b.numel() else 1.0
    return float((a.double() - b.double()).abs().max()) / scale if b.numel() else 0.0


def _close(a: Tensor, b: Tensor) -> bool:
    if a.shape != b.shape:
        return False
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        return False
    return _rel_error(a, b) <= RELATIVE_TOLERANCE


# ------------------------------------------------------------------ the verdict cache
# The agreement check runs the module in float64 at every bound call; for a head bounded again
# and again (a test suite, a training loop's evaluation) that dominated small chain heads. A
# verdict is remembered per module, keyed on everything its function can depend on: the class
# and instance `forward` of every submodule, every parameter, buffer and tensor attribute (its
# identity and in-place `_version`), every plain attribute (a LeakyReLU's slope, a flag read in
# forward), the tensors and values a user-written forward reads from module globals, closures or
# class attributes, the training flags and the input shape. A module with hooks, parametrizations or an attribute
# of another kind is never cached (the guard then runs each time, as before). Not seen: state
# read through helper functions the forward calls; such a head should keep its state in the module.

_TORCH_INTERNALS = frozenset(vars(nn.Module()).keys())
_PLAIN = (int, float, str, bool, type(None), torch.dtype, torch.device)
_VERDICTS: "weakref.WeakKeyDictionary[nn.Module, list]" = weakref.WeakKeyDictionary()
MAX_VERDICTS_PER_MODULE = 8


def _frozen(v):
    """A hashable copy of a plain value (scalars, and lists, tuples, dicts of them), else _OPAQUE."""
    if isinstance(v, _PLAIN):
        return v
    if isinstance(v, (list, tuple)):
        items = tuple(_frozen(x) for x in v)
        return _OPAQUE if any(x is _OPAQUE for x in items) else (type(v).__name__, items)
    if isinstance(v, dict) and all(isinstance(k, str) for k in v):
        items = tuple((k, _frozen(x)) for k, x in sorted(v.items()))
        return _OPAQUE if any(x is _OPAQUE for _, x in items) else ("dict", items)
    return _OPAQUE


_OPAQUE = object()


def _code_state(m: nn.Module, tensors: List[Tensor]) -> Optional[tuple]:
    """What a user-written forward reads besides its module: the module-level names (globals) and
    closure cells it refers to. Tensors by identity and version, plain values by value; modules,
    functions and classes are taken as fixed; anything else makes the module uncacheable (None)."""
    f = type(m).forward
    if getattr(f, "__module__", "").startswith("torch."):
        return ()
    code, glb = getattr(f, "__code__", None), getattr(f, "__globals__", {})
    if code is None:
        return None
    cells = [c.cell_contents for c in (getattr(f, "__closure__", None) or ()) if _cell_full(c)]
    klass = [(f"{k.__name__}.{n}", v) for k in type(m).__mro__ if k.__module__.split(".")[0] != "torch"
             and k is not object for n, v in vars(k).items() if not n.startswith("__")
             and not isinstance(v, (staticmethod, classmethod, property))]
    out = []
    for name, v in [(n, glb[n]) for n in code.co_names if n in glb] + [("<closure>", c) for c in cells] + klass:
        if isinstance(v, Tensor):
            out.append((name, id(v), v._version))
            tensors.append(v)
        elif isinstance(v, (nn.Module, type)) or callable(v) or type(v).__name__ == "module":
            continue
        else:
            fv = _frozen(v)
            if fv is _OPAQUE:
                return None
            out.append((name, fv))
    return tuple(out)


def _cell_full(c) -> bool:
    try:
        c.cell_contents
    except ValueError:
        return False
    return True


def module_state(module: nn.Module, in_shape) -> Optional[tuple]:
    """(key, tensors): a hashable snapshot of what `module`'s function depends on, with the tensors
    whose identities it names (compared by `is`, so a freed and reused id never matches); None
    when the module cannot be snapshotted safely (hooks, parametrizations, opaque attributes)."""
    if global_hooks():
        return None
    parts: list = [tuple(int(s) for s in in_shape)]
    tensors: List[Tensor] = []
    for m in module.modules():
        if _hooks(m) or hasattr(m, "parametrizations") or type(m)._call_impl is not nn.Module._call_impl \
                or type(m).__call__ is not nn.Module.__call__:
            return None
        entry: list = [id(m), type(m), type(m).forward, vars(m).get("forward"), m.training]
        for store in ("_parameters", "_buffers"):
            for name, t in vars(m)[store].items():
                entry.append((store, name, None if t is None else (id(t), t._version, t.dtype, tuple(t.shape))))
                if t is not None:
                    tensors.append(t)
        for name, v in vars(m).items():
            if name in _TORCH_INTERNALS or name == "forward":
                if name in ("_forward_hooks", "_forward_pre_hooks") and v:
                    return None
                continue
            if isinstance(v, nn.Module):
                continue  # a submodule set as a plain attribute is also in _modules
            if isinstance(v, Tensor):
                entry.append((name, id(v), v._version, v.dtype, tuple(v.shape)))
                tensors.append(v)
            else:
                fv = _frozen(v)
                if fv is _OPAQUE:
                    return None
                entry.append((name, fv))
        code = _code_state(m, tensors)
        if code is None:
            return None
        entry.append(code)
        parts.append(tuple(entry))
    return tuple(parts), tensors


def verdict_cached(module: nn.Module, state: Optional[tuple], kind: str) -> bool:
    """True when the guard already found `module` in exactly this state in agreement with its ops."""
    if state is None:
        return False
    key, tensors = state
    for k, refs in _VERDICTS.get(module, ()):
        if k == (kind, key) and len(refs) == len(tensors) and all(r() is t for r, t in zip(refs, tensors)):
            return True
    return False


def remember_verdict(module: nn.Module, state: Optional[tuple], kind: str) -> None:
    """Record that the guard passed for `module` in `state` (after a successful check)."""
    if state is None:
        return
    key, tensors = state
    try:
        refs = [weakref.ref(t) for t in tensors]
        entries = _VERDICTS.setdefault(module, [])
    except TypeError:  # not weak-referenceable
        return
    entries.append(((kind, key), refs))
    del entries[:-MAX_VERDICTS_PER_MODULE]
