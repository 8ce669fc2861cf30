"""Specifications: a unit test's property as linear constraints C·f_d(z) + d > 0 (DESIGN.md).

The property holds at z when every row of `C·f_d(z) + d` is strictly positive (paper §2.2: the
output constraint of a unit test; the margins are bounded *directly* by folding C into the head's
last layer). Kinds:

- ``label``: the argmax stays the true label y: rows ``f_y − f_j`` for j ≠ y (m = out − 1).
- ``prediction``: the argmax stays the prediction at z0 (labels unused).
- ``binary``: one logit keeps its sign: that of the label (labels 0/1) or, without labels, of z0.
- ``band``: one output stays within ±τ of its value at z0: rows ``f_i − (f_i(z0) − τ)`` and
  ``(f_i(z0) + τ) − f_i``.

Ties count as violations: a point whose margin is ≤ 0 violates the spec (the property is strict).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import Tensor

from auditai.errors import ChoiceError, SpecError
from auditai.names import SPEC_KINDS, parse_spec_kind  # noqa: F401  (SPEC_KINDS: its home is names.py)


@dataclass(frozen=True, eq=False)
class Spec:
    """Spec rows for a batch: property ``C[n]·f(z) + d[n] > 0`` row-wise.

    Attributes:
        kind: one of SPEC_KINDS.
        C: N×m×out matrix.
        d: N×m offsets.
        target: N, the class (label/prediction), the sign (+1/−1, binary) or the output index (band).
    """

    kind: str
    C: Tensor
    d: Tensor
    target: Tensor
    output_index: int | None = None
    tau: float | None = None
    class_names: Sequence[str] | None = field(default=None)

    @property
    def n(self) -> int:
        return self.C.shape[0]

    @property
    def m(self) -> int:
        return self.C.shape[1]

    def margins(self, outputs: Tensor, index: Tensor | None = None) -> Tensor:
        """C·f + d for outputs (…×N×out, or P×out with `index` giving each row's sample)."""
        C = self.C.to(outputs) if index is None else self.C[index].to(outputs)
        d = self.d.to(outputs) if index is None else self.d[index].to(outputs)
        return torch.einsum("...o,...mo->...m", outputs, C) + d

    def _cls(self, j: int) -> str:
        if self.class_names is not None and 0 <= j < len(self.class_names):
            return f"'{self.class_names[j]}'"
        return str(j)

    def row_name(self, sample: int, row: int) -> str:
        """A readable name of spec row `row` of sample `sample` ("keep class 1 over class 0")."""
        t = int(self.target[sample])
        if self.kind in ("label", "prediction"):
            j = row if row < t else row + 1
            return f"keep class {self._cls(t)} over class {self._cls(j)}"
        if self.kind == "binary":
            return f"keep output {self.output_index} {'positive' if t > 0 else 'negative'}"
        v0 = float(self.tau) - float(self.d[sample, 0])  # d[:, 0] = τ − f_i(z0)
        if row == 0:
            return f"keep output {self.output_index} above {v0 - self.tau:.6g} (value at z0 {v0:.6g} − τ)"
        return f"keep output {self.output_index} below {v0 + self.tau:.6g} (value at z0 {v0:.6g} + τ)"

def _labels(labels, n: int, out: int, kind: str, device) -> Tensor:
    y = torch.as_tensor(labels, device=device)
    if y.is_floating_point():
        if not torch.all(y == y.round()):
            raise SpecError(f"spec '{kind}': labels must be integers, got non-integer values")
        y = y.long()
    y = y.long().flatten()
    if y.shape[0] != n:
        raise SpecError(f"spec '{kind}': got {y.shape[0]} labels for {n} codes (expected one per row of z0)")
    if n and (y.min() < 0 or y.max() >= out):
        bad = ((y < 0) | (y >= out)).nonzero().flatten()[:5].tolist()
        raise SpecError(
            f"spec '{kind}': label(s) out of range for a head with {out} outputs "
            f"(valid 0..{out - 1}) at rows {bad}: values {y[bad].tolist()}"
        )
    return y


def _class_rows(target: Tensor, out: int, dtype) -> tuple[Tensor, Tensor]:
    """C with rows e_y − e_j, j ≠ y, in the order of j (N×(out−1)×out)."""
    n = target.shape[0]
    eye = torch.eye(out, dtype=dtype, device=target.device)
    j = torch.arange(out - 1, device=target.device).unsqueeze(0).expand(n, -1)
    others = j + (j >= target.unsqueeze(1)).long()  # skip y
    C = eye[target].unsqueeze(1) - eye[others]
    return C, torch.zeros(n, out - 1, dtype=dtype, device=target.device)


def make_spec(
    kind: str,
    outputs0: Tensor,
    labels=None,
    *,
    output_index: int | None = None,
    tau: float | None = None,
    class_names: Sequence[str] | None = None,
) -> Spec:
    """Build the spec rows of `kind` for outputs ``outputs0 = f_d(z0)`` (N×out) and labels (N).

    Raises SpecError (a ValueError) naming the problem: unknown kind, labels missing or out of range, a
    single-output head for a class spec, a band without an output index on a multi-output head, …
    """
    try:
        kind = parse_spec_kind(kind)
    except ChoiceError as e:
        hint = f"; did you mean '{e.suggestion}'?" if e.suggestion else ""
        raise SpecError(f"spec must be one of {', '.join(SPEC_KINDS)}; got {kind!r}{hint}") from None
    if outputs0.dim() != 2:
        raise SpecError(f"the head's outputs must be N×out, got shape {tuple(outputs0.shape)}")
    n, out = outputs0.shape
    dtype, dev = outputs0.dtype, outputs0.device
    if kind in ("label", "prediction"):
        if out < 2:
            raise SpecError(
                f"spec '{kind}' needs a classifier with ≥ 2 outputs; this head has {out} "
                "(use spec 'binary' for a single logit or 'band' for a regression output)"
            )
        if kind == "label":
            if labels is None:
                raise SpecError("spec 'label' needs labels (one class index per code); use 'prediction' without labels")
            target = _labels(labels, n, out, kind, dev)
        else:
            target = outputs0.argmax(dim=1)
        C, d = _class_rows(target, out, dtype)
        return Spec(kind, C, d, target, class_names=class_names)

    idx = output_index
    if idx is None:
        if out != 1:
            raise SpecError(
                f"spec '{kind}' on a head with {out} outputs needs output_index (which output to check)"
            )
        idx = 0
    if not isinstance(idx, int) or isinstance(idx, bool) or not -out <= idx < out:
        raise SpecError(f"output_index {idx!r} out of range for a head with {out} outputs (valid 0..{out - 1})")
    idx %= out
    e = torch.zeros(out, dtype=dtype, device=dev)
    e[idx] = 1.0
    if kind == "binary":
        if labels is not None:
            y = _labels(labels, n, 2, kind, dev)
            sign = (2 * y - 1).to(dtype)
        else:
            sign = torch.where(outputs0[:, idx] >= 0, 1.0, -1.0).to(dtype)
        C = (sign.view(n, 1, 1) * e.view(1, 1, out)).contiguous()
        return Spec(kind, C, torch.zeros(n, 1, dtype=dtype, device=dev), sign.long(), output_index=idx,
                    class_names=class_names)
    # band
    if tau is None or not isinstance(tau, (int, float)) or isinstance(tau, bool) or not tau > 0 or tau != tau:
        raise SpecError(f"spec 'band' needs tau > 0 (the allowed change of output {idx}), got {tau!r}")
    tau = float(tau)
    if tau == float("inf"):
        raise SpecError("spec 'band' needs a finite tau")
    v0 = outputs0[:, idx]
    C = torch.stack([e, -e]).unsqueeze(0).expand(n, 2, out).contiguous()
    d = torch.stack([tau - v0, v0 + tau], dim=1)
    return Spec(kind, C, d, torch.full((n,), idx, device=dev), output_index=idx, tau=tau,
                class_names=class_names)
