"""The certified-training loss (CROWN-IBP's, paper §2.3 and App. A.1) and the verified error
computed with the bound engine, over latent sets and over pixel balls."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from auditai.bounds import bound, bound_ball
from auditai.bounds.engine import parse_method
from auditai.errors import InputError, InputTypeError
from auditai.latent import Basis, Dims, Direction, SetKind  # noqa: F401  (SetKind re-exported)


def label_rows(y: Tensor, num_classes: int, dtype=torch.float32) -> Tensor:
    """C with rows e_y − e_j for j ≠ y (N×(K−1)×K): the 'label' specification's margins."""
    y = torch.as_tensor(y).long().flatten()
    if y.numel() and (y.min() < 0 or y.max() >= num_classes):
        bad = ((y < 0) | (y >= num_classes)).nonzero().flatten()[:5].tolist()
        raise InputError(f"labels out of range for a head with {num_classes} outputs "
                         f"(valid 0..{num_classes - 1}) at rows {bad}")
    if num_classes < 2:
        raise InputError(f"certified training needs a classifier with >= 2 outputs, got {num_classes}")
    eye = torch.eye(num_classes, dtype=dtype, device=y.device)
    j = torch.arange(num_classes - 1, device=y.device).expand(y.shape[0], -1)
    others = j + (j >= y.unsqueeze(1)).long()
    return eye[y].unsqueeze(1) - eye[others]


def margin_cross_entropy(lower: Tensor) -> Tensor:
    """CE of (0, −lower_1, …, −lower_{K−1}) against class 0, averaged (the CROWN-IBP loss).

    `lower` (N×(K−1)) bounds f_y − f_j from below; −lower bounds f_j − f_y from above, so this
    is the cross-entropy of the worst-case logits ẑ (paper §2.3) shifted by f_y.
    """
    logits = torch.cat([lower.new_zeros(lower.shape[0], 1), -lower], dim=1)
    return F.cross_entropy(logits, logits.new_zeros(lower.shape[0], dtype=torch.long))


def _named_sets(latents) -> list[tuple[str, SetKind]]:
    if isinstance(latents, (Dims, Direction, Basis)):
        return [(latents.describe(), latents)]
    if isinstance(latents, Mapping):
        items = list(latents.items())
    else:
        items = [(k.describe() if hasattr(k, "describe") else str(i), k) for i, k in enumerate(latents)]
    if not items:
        raise InputError("no latent set given: pass a Dims, Direction or Basis (or a list or dict of them)")
    for name, k in items:
        if not isinstance(k, (Dims, Direction, Basis)):
            raise InputTypeError(f"latent set {name!r} must be an auditai.latent Dims, Direction or Basis, "
                            f"got {type(k).__name__}")
    return [(str(n), k) for n, k in items]


def _eps_list(eps, n_sets: int, names: Sequence[str]) -> list[float]:
    if isinstance(eps, Mapping):
        missing = [n for n in names if n not in eps]
        if missing:
            raise InputError(f"eps has no value for set(s) {missing}; it names {sorted(eps)}")
        vals = [eps[n] for n in names]
    elif isinstance(eps, (int, float)) or (isinstance(eps, Tensor) and eps.dim() == 0):
        vals = [float(eps)] * n_sets
    else:
        vals = [float(e) for e in eps]
        if len(vals) != n_sets:
            raise InputError(f"eps has {len(vals)} values for {n_sets} latent sets (give one, or one per set)")
    vals = [float(v) for v in vals]
    for v in vals:
        if not (v >= 0 and math.isfinite(v)):
            raise InputError(f"eps must be finite and >= 0, got {v}")
    return vals


def _trainable(method: str) -> None:
    """Certified losses need bounds with gradients in the weights; α-CROWN's optimized slopes are
    detached (they are chosen per batch), so it verifies but does not train."""
    if method == "alpha-crown":
        raise InputError("certified training takes method ibp, crown-ibp or crown, not alpha-crown "
                         "(its optimized slopes carry no gradient to the weights); verify with alpha-crown")


def _mixed_lower(bound_fn: Callable[[str], Tensor], method: str, beta: float) -> Tensor:
    """Lower bound by `method`; for crown-ibp the β-mix with IBP (both sound, so is the mix)."""
    if method != "crown-ibp" or beta >= 1.0:
        return bound_fn(method)
    if beta <= 0.0:
        return bound_fn("ibp")
    return beta * bound_fn("crown-ibp") + (1.0 - beta) * bound_fn("ibp")


def _mix(natural: Tensor, robust: Tensor, kappa: float) -> Tensor:
    if not 0 <= kappa <= 1:
        raise InputError(f"kappa (χ, the natural-loss weight) must be in [0, 1], got {kappa}")
    return kappa * natural + (1.0 - kappa) * robust


def certified_loss(
    head: nn.Module,
    z: Tensor,
    y: Tensor,
    latent,
    eps,
    method: str = "crown-ibp",
    *,
    kappa: float = 0.0,
    beta: float = 1.0,
    reduction: str = "mean",
    return_parts: bool = False,
):
    """χ·CE(head(z), y) + (1 − χ)·L_spec over the latent set(s) around z (paper §2.3, App. A.1).

    Args:
        head: f_d (supported layers only); z: N×d codes (may carry gradients to an encoder);
        y: N labels.
        latent: a set kind (`Dims`, `Direction`, `Basis`), a list of them, or a dict name → kind
            (several unit tests trained at once).
        eps: one radius for every set, one per set, or a dict name → radius.
        method: "ibp", "crown-ibp" or "crown" (bounds of the margins f_y − f_j).
        kappa: χ, the natural-loss weight (1 = plain training).
        beta: for "crown-ibp", the lower bound is β·CROWN-IBP + (1 − β)·IBP.
        reduction: how the sets' L_spec combine: "mean" or "sum".
        return_parts: also return (natural, robust) losses, detached.

    Returns:
        The scalar loss (and the parts). At ε = 0 it equals `F.cross_entropy(head(z), y)`.
    """
    method = parse_method(method)
    _trainable(method)
    if reduction not in ("mean", "sum"):
        raise InputError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    sets = _named_sets(latent)
    eps_v = _eps_list(eps, len(sets), [n for n, _ in sets])
    z, y = _check_zy(z, y)
    out = head(z)
    C = label_rows(y, out.shape[1], out.dtype)
    natural = F.cross_entropy(out, y)
    robust_terms = []
    if kappa < 1.0:
        for (_name, kind), e in zip(sets, eps_v):
            s = kind.make(z, e)

            def fn(m: str, s=s) -> Tensor:
                return bound(head, s, C, m, bound_upper=False)[0]

            robust_terms.append(margin_cross_entropy(_mixed_lower(fn, method, beta)))
        robust = torch.stack(robust_terms).sum() if reduction == "sum" else torch.stack(robust_terms).mean()
    else:
        robust = natural.new_zeros(())
    loss = _mix(natural, robust, kappa)
    if return_parts:
        return loss, (natural.detach(), robust.detach())
    return loss


def pixel_certified_loss(
    module: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    p="inf",
    method: str = "crown-ibp",
    *,
    kappa: float = 0.0,
    beta: float = 1.0,
    return_parts: bool = False,
):
    """The same loss over the pixel ball ‖x' − x‖_p ≤ ε through the whole network (encoder + head).

    This is the pixel-space baseline of paper Table 2 (standard CROWN-IBP certified training).
    """
    method = parse_method(method)
    _trainable(method)
    y = torch.as_tensor(y).long().flatten()
    out = module(x)
    C = label_rows(y, out.shape[1], out.dtype)
    natural = F.cross_entropy(out, y)
    if kappa < 1.0:

        def fn(m: str) -> Tensor:
            return bound_ball(module, x, float(eps), p, C, m, bound_upper=False)[0]

        robust = margin_cross_entropy(_mixed_lower(fn, method, beta))
    else:
        robust = natural.new_zeros(())
    loss = _mix(natural, robust, kappa)
    return (loss, (natural.detach(), robust.detach())) if return_parts else loss


def _check_zy(z, y) -> tuple[Tensor, Tensor]:
    if not isinstance(z, Tensor):
        z = torch.as_tensor(z, dtype=torch.get_default_dtype())
    y = torch.as_tensor(y, device=z.device)
    if y.is_floating_point():
        if not torch.equal(y, y.round()):
            raise InputError("labels y must be integer class indices")
    y = y.long().flatten()
    if z.dim() != 2 or y.shape[0] != z.shape[0]:
        raise InputError(f"need codes z of N×d and labels y of N, got shapes {tuple(z.shape)} and {tuple(y.shape)}")
    return z, y


# ----------------------------------------------------------------------------- verified error
@torch.no_grad()
def _verified_mask(lower_fn: Callable[[slice], Tensor], out_fn: Callable[[slice], Tensor], y: Tensor,
                   n: int, batch_size: int) -> Tensor:
    ok = torch.zeros(n, dtype=torch.bool)
    for i in range(0, n, batch_size):
        sl = slice(i, min(n, i + batch_size))
        correct = out_fn(sl).argmax(1).cpu() == y[sl].cpu()
        ok[sl] = (lower_fn(sl) > 0).all(dim=1).cpu() & correct
    return ok


def verified_error(head: nn.Module, z: Tensor, y: Tensor, latent: SetKind, eps,
                   method: str = "crown-ibp", batch_size: int = 4096) -> float | list[float]:
    """Fraction of samples NOT proven robust: some margin's lower bound ≤ 0 over the set, or
    misclassified at z0 (the spec-sheet's verified error for spec 'label', computed with the
    bound engine directly; `auditai.verify.verify` gives the same number for the same method).

    `eps` a float → a float; a sequence of radii → a list, one per radius.
    """
    z, y = _check_zy(z, y)
    method = parse_method(method)
    scalar = isinstance(eps, (int, float))
    eps_l = [float(eps)] if scalar else [float(e) for e in eps]
    was = head.training
    head.eval()
    try:
        with torch.no_grad():
            k = head(z[:1]).shape[1] if len(z) else 2
        C = label_rows(y, k, z.dtype)
        res = []
        for e in eps_l:
            mask = _verified_mask(
                lambda sl, e=e: bound(head, latent.make(z[sl], e), C[sl], method, bound_upper=False)[0],
                lambda sl: head(z[sl]), y, len(y), batch_size)
            res.append(1.0 - mask.double().mean().item() if len(y) else float("nan"))
    finally:
        head.train(was)
    return res[0] if scalar else res


def pixel_verified_error(module: nn.Module, x: Tensor, y: Tensor, eps, p="inf",
                         method: str = "crown-ibp", batch_size: int = 256) -> float | list[float]:
    """Verified error of `module` (encoder + head) over pixel balls ‖x' − x‖_p ≤ ε (see `verified_error`)."""
    y = torch.as_tensor(y).long().flatten()
    method = parse_method(method)
    scalar = isinstance(eps, (int, float))
    eps_l = [float(eps)] if scalar else [float(e) for e in eps]
    was = module.training
    module.eval()
    try:
        with torch.no_grad():
            k = module(x[:1]).shape[1]
        C = label_rows(y, k, x.dtype)
        res = []
        for e in eps_l:
            mask = _verified_mask(
                lambda sl, e=e: bound_ball(module, x[sl], e, p, C[sl], method, bound_upper=False)[0],
                lambda sl: module(x[sl]), y, len(y), batch_size)
            res.append(1.0 - mask.double().mean().item() if len(y) else float("nan"))
    finally:
        module.train(was)
    return res[0] if scalar else res
