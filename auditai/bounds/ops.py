"""A head as a flat list of bound ops: affine maps and elementwise activations.

`to_ops(module, input_shape)` walks a torch module and returns the ops the engine knows how to
bound (DESIGN.md, "Bound engine"); anything else raises `UnsupportedLayerError` naming the
module and its position, so a bound is never silently unsound. Affine ops expose three maps:
`forward` (x ↦ Wx + b), `forward_abs` (r ↦ |W| r, for IBP radii) and `backward`
(A ↦ A·W, for CROWN's backward pass), each batched over samples and spec rows.

Shapes: per-sample shapes exclude the batch. Backward coefficients A have shape
(N, m, *shape) or, before they depend on the sample, (m, *shape).
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from auditai.bounds.guard import as_float64, global_hooks, refuse_hidden_forward
from auditai.errors import UnsupportedLayerError

SUPPORTED_MODULES: Tuple[type, ...] = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.ReLU,
    nn.LeakyReLU,
    nn.Tanh,
    nn.Sigmoid,
    nn.Flatten,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.Identity,
    nn.Dropout,
    nn.Sequential,
)

_ABS_CACHE: dict = {}


def _abs_weight(w: Tensor) -> Tensor:
    """|W|, cached per parameter tensor and version when no gradient is needed (inference)."""
    if w.requires_grad and torch.is_grad_enabled():
        return w.abs()
    key = (w._version, w.dtype, w.device, w.data_ptr(), tuple(w.shape))
    hit = _ABS_CACHE.get(id(w))
    if hit is not None and hit[0]() is w and hit[1] == key:
        return hit[2]
    a = w.detach().abs()
    ident = id(w)
    _ABS_CACHE[ident] = (weakref.ref(w, lambda _r: _ABS_CACHE.pop(ident, None)), key, a)
    return a


def dual_norm(w: Tensor, p: float, nd: int = 1) -> Tensor:
    """‖w‖_q over the last `nd` dims, 1/p + 1/q = 1: max of w·δ over the unit ℓp ball (Hölder)."""
    w = w.flatten(-nd) if nd > 1 else w
    if p == math.inf:
        return w.abs().sum(-1)
    if p == 2.0:
        return torch.linalg.vector_norm(w, dim=-1)
    return w.abs().amax(-1)


def apply_rows(A: Tensor, b: Tensor, nd: int) -> Tensor:
    """Σ over the last `nd` dims of A·b: A (N,m,*s) or (m,*s); b (*s) or (N,*s) → (N,m) or (m,)."""
    Af = A.flatten(-nd) if nd > 1 else A
    bf = b.flatten(-nd) if nd > 1 else b
    if bf.dim() == 1:
        return Af @ bf
    # per-sample b: (N, D)
    if Af.dim() == 2:
        return bf @ Af.T
    return torch.einsum("nmd,nd->nm", Af, bf)


# ------------------------------------------------------------------------ affine ops
@dataclass(eq=False)
class Dense:
    """x ↦ W x + b with W (out×in); b is (out,) or per sample (N×out), e.g. after folding z0."""

    weight: Tensor
    bias: Optional[Tensor]
    name: str = "linear"

    in_shape: Tuple[int, ...] = ()
    out_shape: Tuple[int, ...] = ()

    def __post_init__(self) -> None:
        self.in_shape = (self.weight.shape[1],)
        self.out_shape = (self.weight.shape[0],)

    def forward(self, x: Tensor) -> Tensor:
        if self.bias is None:
            return x @ self.weight.T
        if self.bias.dim() == 1 and x.dim() == 2:
            return torch.addmm(self.bias, x, self.weight.T)
        return x @ self.weight.T + self.bias

    def forward_abs(self, r: Tensor) -> Tensor:
        return r @ _abs_weight(self.weight).T

    def backward(self, A: Tensor) -> Tensor:
        return A @ self.weight

    def bias_term(self, A: Tensor) -> Optional[Tensor]:
        return None if self.bias is None else apply_rows(A, self.bias, 1)


@dataclass(eq=False)
class Conv:
    """Conv1d/Conv2d with zero padding, as an affine op on (C, L) or (C, H, W) per sample."""

    weight: Tensor
    bias: Optional[Tensor]
    stride: tuple
    padding: tuple
    dilation: tuple
    groups: int
    in_shape: Tuple[int, ...]
    out_shape: Tuple[int, ...]
    name: str = "conv"

    @property
    def spatial(self) -> int:
        return len(self.in_shape) - 1

    def _conv(self, x: Tensor, w: Tensor, b: Optional[Tensor]) -> Tensor:
        f = F.conv1d if self.spatial == 1 else F.conv2d
        return f(x, w, b, self.stride, self.padding, self.dilation, self.groups)

    def forward(self, x: Tensor) -> Tensor:
        return self._conv(x, self.weight, self.bias)

    def forward_abs(self, r: Tensor) -> Tensor:
        return self._conv(r, _abs_weight(self.weight), None)

    def backward(self, A: Tensor) -> Tensor:
        lead = A.shape[: A.dim() - len(self.out_shape)]
        a = A.reshape(-1, *self.out_shape)
        f = F.conv_transpose1d if self.spatial == 1 else F.conv_transpose2d
        # output_padding recovers input sizes that the stride rounded away
        out = []
        for i in range(self.spatial):
            full = (a.shape[2 + i] - 1) * self.stride[i] - 2 * self.padding[i] + self.dilation[i] * (
                self.weight.shape[2 + i] - 1
            ) + 1
            out.append(self.in_shape[1 + i] - full)
        x = f(a, self.weight, None, self.stride, self.padding, tuple(out), self.groups, self.dilation)
        return x.reshape(*lead, *self.in_shape)

    def bias_term(self, A: Tensor) -> Optional[Tensor]:
        if self.bias is None:
            return None
        s = A.sum(dim=tuple(range(A.dim() - self.spatial, A.dim())))  # (..., C_out)
        return s @ self.bias


@dataclass(eq=False)
class ScaleShift:
    """x ↦ x·s + t per channel (BatchNorm in eval mode), channel = first per-sample dim."""

    scale: Tensor
    shift: Tensor
    in_shape: Tuple[int, ...]
    name: str = "batchnorm"

    @property
    def out_shape(self) -> Tuple[int, ...]:
        return self.in_shape

    def _b(self, v: Tensor) -> Tensor:
        return v.reshape(-1, *([1] * (len(self.in_shape) - 1)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self._b(self.scale) + self._b(self.shift)

    def forward_abs(self, r: Tensor) -> Tensor:
        return r * self._b(self.scale.abs())

    def backward(self, A: Tensor) -> Tensor:
        return A * self._b(self.scale)

    def bias_term(self, A: Tensor) -> Tensor:
        nd = len(self.in_shape)
        s = A.sum(dim=tuple(range(A.dim() - nd + 1, A.dim()))) if nd > 1 else A
        return s @ self.shift


@dataclass(eq=False)
class Shift:
    """x ↦ x + x0 with a per-sample x0 (the centre of a ball in input space)."""

    x0: Tensor
    name: str = "input"

    @property
    def in_shape(self) -> Tuple[int, ...]:
        return tuple(self.x0.shape[1:])

    out_shape = in_shape

    def forward(self, x: Tensor) -> Tensor:
        return x + self.x0

    def forward_abs(self, r: Tensor) -> Tensor:
        return r

    def backward(self, A: Tensor) -> Tensor:
        return A

    def bias_term(self, A: Tensor) -> Tensor:
        return apply_rows(A, self.x0, len(self.in_shape))


@dataclass(eq=False)
class Reshape:
    """Flatten or reshape of the per-sample tensor (no arithmetic)."""

    in_shape: Tuple[int, ...]
    out_shape: Tuple[int, ...]
    name: str = "flatten"

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(*x.shape[: x.dim() - len(self.in_shape)], *self.out_shape)

    forward_abs = forward

    def backward(self, A: Tensor) -> Tensor:
        return A.reshape(*A.shape[: A.dim() - len(self.out_shape)], *self.in_shape)

    def bias_term(self, A: Tensor) -> None:
        return None


@dataclass(eq=False)
class Activation:
    """An elementwise activation: 'relu', 'leaky_relu' (with `slope`), 'tanh' or 'sigmoid'."""

    kind: str
    shape: Tuple[int, ...]
    slope: float = 0.0
    name: str = "activation"

    @property
    def in_shape(self) -> Tuple[int, ...]:
        return self.shape

    @property
    def out_shape(self) -> Tuple[int, ...]:
        return self.shape

    @property
    def piecewise_linear(self) -> bool:
        return self.kind in ("relu", "leaky_relu")

    def forward_(self, x: Tensor) -> Tensor:
        """In place, for tensors nothing else refers to."""
        if self.kind == "relu":
            return x.relu_()
        if self.kind == "leaky_relu":
            return F.leaky_relu_(x, self.slope)
        return x.tanh_() if self.kind == "tanh" else x.sigmoid_()

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "relu":
            return torch.relu(x)
        if self.kind == "leaky_relu":
            return F.leaky_relu(x, self.slope)
        if self.kind == "tanh":
            return torch.tanh(x)
        return torch.sigmoid(x)


Affine = Union[Dense, Conv, ScaleShift, Reshape, Shift]
Op = Union[Dense, Conv, ScaleShift, Reshape, Shift, Activation]


def is_affine(op: Op) -> bool:
    return not isinstance(op, Activation)


# ------------------------------------------------------------------------ conversion
def _walk(module: nn.Module, prefix: str, root_name: str = "head"):
    """(position, module) of every layer, in call order, through plain Sequential containers.

    A container whose call does more than call its children in order (a hook, a Sequential
    subclass with its own forward, as a residual block often is) is refused here rather than
    read as a chain: reading it as one would bound another function (the guard).
    """
    where = f"{root_name}{prefix}" if prefix else root_name
    if isinstance(module, nn.Sequential):
        refuse_hidden_forward(module, where, nn.Sequential)
        for name, child in module.named_children():
            yield from _walk(child, f"{prefix}[{name}]", root_name)
    else:
        yield prefix or "(root)", module


_LAYER_CLASSES: Tuple[type, ...] = (
    nn.Linear, nn.Conv1d, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d, nn.Flatten, nn.ReLU,
    nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.Identity, nn.Dropout,
)


def _layer_class(m: nn.Module, where: str) -> Optional[type]:
    """The supported class `m` computes (a parametrized Linear is a Linear), or None.

    Raises UnsupportedLayerError when `m` is a supported class whose call does something else
    (hooks, an overridden or instance-level forward).
    """
    for cls in _LAYER_CLASSES:
        if isinstance(m, cls):
            refuse_hidden_forward(m, where, cls)
            return cls
    refuse_hidden_forward(m, where)
    return None


def op_sources(module: nn.Module, root_name: str = "head") -> dict:
    """Map an op's name (its position, e.g. ``head[2]``) to the submodule it is read from."""
    out = {}
    for pos, m in _walk(module, "", root_name):
        out[f"{root_name}{pos}" if pos != "(root)" else root_name] = m
    return out


def to_ops(
    module: nn.Module,
    input_shape: Sequence[int],
    dtype: Optional[torch.dtype] = None,
    device: Optional[torch.device] = None,
    root_name: str = "head",
) -> list:
    """Flatten `module` into bound ops for per-sample inputs of `input_shape`.

    Raises UnsupportedLayerError naming the module type and its position (e.g. ``head[2]``)
    for anything outside SUPPORTED_MODULES, BatchNorm/Dropout in training mode, non-zero
    padding modes and the like. Tensors keep their autograd graph (training needs it).
    """
    shape = tuple(int(s) for s in input_shape)
    ops: list = []
    hooks = global_hooks()
    if hooks:
        raise UnsupportedLayerError(
            type(module).__name__, root_name,
            f"a {' and a '.join(hooks)} is registered for every module, which changes what each "
            "layer computes; remove it before bounding")

    def cast(t: Optional[Tensor]) -> Optional[Tensor]:
        if t is None:
            return None
        if dtype == torch.float64 and not torch.is_grad_enabled() and (device is None or t.device == device):
            return as_float64(t)  # the guard's float64 copy, cached per weight version
        return t.to(dtype=dtype or t.dtype, device=device or t.device)

    for pos, m in _walk(module, "", root_name):
        where = f"{root_name}{pos}" if pos != "(root)" else root_name
        tname = type(m).__name__
        cls = _layer_class(m, where)
        if cls is nn.Identity:
            continue
        if cls is nn.Dropout:
            if m.training and m.p > 0:
                raise UnsupportedLayerError(tname, where, "Dropout in training mode; call .eval()")
            continue
        if cls is nn.Linear:
            if shape[-1] != m.in_features or len(shape) != 1:
                raise UnsupportedLayerError(
                    tname, where, f"expects input ({m.in_features},), gets {shape}; add a Flatten"
                )
            ops.append(Dense(cast(m.weight), cast(m.bias), name=where))
            shape = (m.out_features,)
        elif cls in (nn.Conv1d, nn.Conv2d):
            sp = 1 if cls is nn.Conv1d else 2
            if m.padding_mode != "zeros":
                raise UnsupportedLayerError(tname, where, f"padding_mode={m.padding_mode!r}")
            if isinstance(m.padding, str):
                raise UnsupportedLayerError(tname, where, f"padding={m.padding!r}; give numbers")
            if len(shape) != sp + 1 or shape[0] != m.in_channels:
                raise UnsupportedLayerError(
                    tname, where, f"expects ({m.in_channels}, {'L' if sp == 1 else 'H, W'}), gets {shape}"
                )
            with torch.no_grad():
                probe = m(torch.zeros(1, *shape, dtype=m.weight.dtype, device=m.weight.device))
            out_shape = tuple(probe.shape[1:])
            ops.append(
                Conv(cast(m.weight), cast(m.bias), tuple(m.stride), tuple(m.padding), tuple(m.dilation),
                     m.groups, shape, out_shape, name=where)
            )
            shape = out_shape
        elif cls in (nn.BatchNorm1d, nn.BatchNorm2d):
            if m.training:
                raise UnsupportedLayerError(tname, where, "BatchNorm in training mode; call .eval()")
            if m.running_mean is None or m.running_var is None:
                raise UnsupportedLayerError(tname, where, "BatchNorm without running statistics")
            if shape[0] != m.num_features:
                raise UnsupportedLayerError(tname, where, f"expects {m.num_features} channels, gets {shape}")
            inv = torch.rsqrt(cast(m.running_var) + m.eps)
            w = cast(m.weight) if m.weight is not None else torch.ones_like(inv)
            b = cast(m.bias) if m.bias is not None else torch.zeros_like(inv)
            scale = w * inv
            ops.append(ScaleShift(scale, b - cast(m.running_mean) * scale, shape, name=where))
        elif cls is nn.Flatten:
            s, e = m.start_dim, m.end_dim
            full = (1, *shape)
            e = e % len(full)
            if s % len(full) != 1:
                raise UnsupportedLayerError(tname, where, "only Flatten(start_dim=1) is supported")
            new = (math.prod(full[1 : e + 1]), *full[e + 1 :])
            if new != shape:
                ops.append(Reshape(shape, new, name=where))
            shape = new
        elif cls is nn.ReLU:
            ops.append(Activation("relu", shape, name=where))
        elif cls is nn.LeakyReLU:
            if m.negative_slope < 0 or m.negative_slope > 1:
                raise UnsupportedLayerError(tname, where, "negative_slope must lie in [0, 1]")
            ops.append(Activation("leaky_relu", shape, slope=float(m.negative_slope), name=where))
        elif cls is nn.Tanh:
            ops.append(Activation("tanh", shape, name=where))
        elif cls is nn.Sigmoid:
            ops.append(Activation("sigmoid", shape, name=where))
        else:
            raise UnsupportedLayerError(
                tname, where,
                "supported: Linear, Conv1d, Conv2d, ReLU, LeakyReLU, Tanh, Sigmoid, Flatten, "
                "BatchNorm1d/2d (eval), Identity, Dropout (eval), nested Sequential; "
                "engine='auto_lirpa' bounds other graphs",
            )
    return ops


def forward_ops(ops: Sequence[Op], x: Tensor) -> Tensor:
    """Run the ops forward (the head's own function, used to check the conversion)."""
    for op in ops:
        x = op.forward(x)
    return x


def merge_dense(a: Dense, b: Dense) -> Dense:
    """b∘a as one Dense op (exact): W = W_b W_a, bias = W_b b_a + b_b (b_a may be per sample)."""
    W = b.weight @ a.weight
    if a.bias is None:
        bias = b.bias
    else:
        bias = a.bias @ b.weight.T
        if b.bias is not None:
            bias = bias + b.bias
    return Dense(W, bias, name=b.name)


def fold_spec(op: Dense, C: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
    """C folded into the last Dense op: (C·W, C·b), C of (m, out) or (N, m, out).

    Bounding C·W directly is what makes margins tight (DESIGN.md, "Specification").
    """
    W = C @ op.weight
    if op.bias is None:
        return W, None
    if op.bias.dim() == 1:
        return W, C @ op.bias
    return W, apply_rows(C, op.bias, 1) if C.dim() == 3 else op.bias @ C.T


def fold_scale_shift(ops: list) -> list:
    """Fold eval-mode BatchNorm over a vector into the neighbouring Linear (exact, fewer passes)."""
    out: list = []
    for op in ops:
        prev = out[-1] if out else None
        if isinstance(op, ScaleShift) and len(op.in_shape) == 1 and isinstance(prev, Dense):
            W = prev.weight * op.scale.unsqueeze(1)
            b = op.shift if prev.bias is None else prev.bias * op.scale + op.shift
            out[-1] = Dense(W, b, name=prev.name)
        elif isinstance(op, Dense) and isinstance(prev, ScaleShift) and len(prev.in_shape) == 1:
            W = op.weight * prev.scale.unsqueeze(0)
            b = op.weight @ prev.shift
            b = b if op.bias is None else b + op.bias
            out[-1] = Dense(W, b, name=op.name)
        else:
            out.append(op)
    return out
