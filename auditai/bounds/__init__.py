"""The bound engine: sound bounds of a head's outputs over a latent set (DESIGN.md, "Bound engine").

    lower, upper = bound(head, latent_set, C=None, method="crown-ibp", bound_upper=True)

`lower`/`upper` are N×m bounds of C·head(z) for every z in the set (N×out for C=None).
Methods "ibp", "crown-ibp" and "crown" mean what auto_LiRPA means by them. This package
imports only torch; `engine="auto_lirpa"` hands the same question to auto_LiRPA when it is
installed (the reference, and a way to bound graphs our ops do not cover).
"""

from __future__ import annotations

import math
from typing import Optional, Tuple, Union

import torch
from torch import Tensor, nn

from auditai.bounds.engine import METHODS, bound_input, parse_method
from auditai.bounds.ops import SUPPORTED_MODULES, forward_ops, to_ops

ENGINES = ("auditai", "auto_lirpa")

__all__ = ["bound", "bound_ball", "METHODS", "ENGINES", "SUPPORTED_MODULES", "to_ops", "forward_ops"]


def _parse_engine(engine: str) -> str:
    e = str(engine).strip().lower().replace("-", "_")
    if e in ("auditai", "ours", "default"):
        return "auditai"
    if e in ("auto_lirpa", "autolirpa"):
        return "auto_lirpa"
    raise ValueError(f"unknown engine {engine!r}: expected 'auditai' or 'auto_lirpa'")


def bound(
    head: nn.Module,
    latent_set,
    C: Optional[Tensor] = None,
    method: str = "crown-ibp",
    bound_upper: bool = True,
    engine: str = "auditai",
    memory_budget: Optional[int] = None,
) -> Tuple[Tensor, Optional[Tensor]]:
    """Bounds of C·head(z) over z ∈ {z0 + B·δ : ‖δ‖_p ≤ ε} (paper §2.2, Appendix A).

    Args:
        head: the verified part f_d (supported layers: see SUPPORTED_MODULES).
        latent_set: an `auditai.latent.LatentSet` (z0 N×d, B d×k, ε of N, p).
        C: spec matrix, m×out (shared) or N×m×out; folded into the last layer. None: identity.
        method: "ibp", "crown-ibp" or "crown".
        bound_upper: also compute the upper bound (else `upper` is None: half the work).
        engine: "auditai" (ours) or "auto_lirpa".
        memory_budget: bytes of coefficient tensors per chunk of the batch.

    Returns:
        (lower, upper), each N×m (N×out when C is None).
    """
    method = parse_method(method)
    if _parse_engine(engine) == "auto_lirpa":
        from auditai.bounds.lirpa import bound_auto_lirpa

        return bound_auto_lirpa(head, latent_set, C, method, bound_upper)
    s = latent_set
    return bound_input(head, s.z0, s.eps, s.p, s.basis, C, method, bound_upper, memory_budget)


def bound_ball(
    module: nn.Module,
    x0: Tensor,
    eps: Union[float, Tensor],
    p: Union[float, str] = math.inf,
    C: Optional[Tensor] = None,
    method: str = "crown-ibp",
    bound_upper: bool = True,
    memory_budget: Optional[int] = None,
) -> Tuple[Tensor, Optional[Tensor]]:
    """Bounds of C·module(x) over the plain ℓp ball ‖x − x0‖_p ≤ ε, x0 of any shape (N, ...).

    The pixel-space baseline of certified training (paper Table 2) bounds encoders this way.
    """
    from auditai.latent import parse_norm

    p = parse_norm(p)
    eps_t = torch.as_tensor(eps, dtype=x0.dtype, device=x0.device)
    if eps_t.dim() == 0:
        eps_t = eps_t.expand(x0.shape[0])
    if (eps_t < 0).any() or torch.isnan(eps_t).any():
        raise ValueError("eps must be >= 0 and not NaN")
    return bound_input(module, x0, eps_t.contiguous(), p, None, C, parse_method(method), bound_upper,
                       memory_budget, root_name="module")
