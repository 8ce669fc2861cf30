"""The bound engine: sound bounds of a head's outputs over a latent set (DESIGN.md, "Bound engine").

    lower, upper = bound(head, latent_set, C=None, method="crown-ibp", bound_upper=True)

`lower`/`upper` are N×m bounds of C·head(z) for every z in the set (N×out for C=None).
Methods "ibp", "crown-ibp", "crown" and "alpha-crown" mean what auto_LiRPA means by "IBP",
"CROWN-IBP", "CROWN" and "CROWN-Optimized" (α-CROWN: optimized ReLU slopes, alpha.py). This package
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
from auditai.errors import InputError
from auditai.names import ENGINES, parse_engine as _parse_engine  # ENGINES: its home is auditai.names

__all__ = ["bound", "bound_ball", "bound_box", "METHODS", "ENGINES", "SUPPORTED_MODULES", "to_ops", "forward_ops"]


def bound(
    head: nn.Module,
    latent_set,
    C: Optional[Tensor] = None,
    method: str = "crown-ibp",
    bound_upper: bool = True,
    engine: str = "auditai",
    memory_budget: Optional[int] = None,
    alpha_options=None,
) -> Tuple[Tensor, Optional[Tensor]]:
    """Bounds of C·head(z) over z ∈ {z0 + B·δ : ‖δ‖_p ≤ ε} (paper §2.2, Appendix A).

    Args:
        head: the verified part f_d (supported layers: see SUPPORTED_MODULES).
        latent_set: an `auditai.latent.LatentSet` (z0 N×d, B d×k, ε of N, p).
        C: spec matrix, m×out (shared) or N×m×out; folded into the last layer. None: identity.
        method: "ibp", "crown-ibp", "crown" or "alpha-crown".
        bound_upper: also compute the upper bound (else `upper` is None: half the work).
        engine: "auditai" (ours) or "auto_lirpa".
        memory_budget: bytes of coefficient tensors per chunk of the batch.
        alpha_options: α-CROWN options (iterations, lr, lr_decay, early_stop, share_rows;
            `auditai.bounds.alpha.AlphaOptions`), for method "alpha-crown".

    Returns:
        (lower, upper), each N×m (N×out when C is None).
    """
    method = parse_method(method)
    if _parse_engine(engine) == "auto_lirpa":
        from auditai.bounds.lirpa import bound_auto_lirpa

        return bound_auto_lirpa(head, latent_set, C, method, bound_upper, alpha_options)
    s = latent_set
    return bound_input(head, s.z0, s.eps, s.p, s.basis, C, method, bound_upper, memory_budget,
                       alpha_options=alpha_options)


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
    from auditai.names import parse_norm

    p = parse_norm(p)
    eps_t = torch.as_tensor(eps, dtype=x0.dtype, device=x0.device)
    if eps_t.dim() == 0:
        eps_t = eps_t.expand(x0.shape[0])
    if (eps_t < 0).any() or torch.isnan(eps_t).any():
        raise InputError("eps must be >= 0 and not NaN")
    return bound_input(module, x0, eps_t.contiguous(), p, None, C, parse_method(method), bound_upper,
                       memory_budget, root_name="module")


def bound_box(
    module: nn.Module,
    lower: Tensor,
    upper: Tensor,
    C: Optional[Tensor] = None,
    method: str = "crown-ibp",
    bound_upper: bool = True,
    memory_budget: Optional[int] = None,
    alpha_options=None,
) -> Tuple[Tensor, Optional[Tensor]]:
    """Bounds of C·module(x) over the axis-aligned box lower ≤ x ≤ upper, given per element.

    lower, upper: (N, *shape) of any per-sample shape (images included). The box is the image
    of the unit ℓ∞ ball under x = c + r⊙δ (c the centre, r the half-widths), bounded through
    the module's graph IR (any graph the reader takes; DESIGN.md "Bound engine").
    """
    from auditai.bounds.engine import DEFAULT_MEMORY_BUDGET, _check_C
    from auditai.bounds.graph_bounds import num_elements
    from auditai.bounds.graph_engine import bound_module_graph, check_graph, read_graph
    from auditai.bounds.guard import MAX_CHECKED_SAMPLES, set_points

    lower = torch.as_tensor(lower)
    upper = torch.as_tensor(upper, dtype=lower.dtype, device=lower.device)
    if lower.shape != upper.shape or lower.dim() < 2:
        raise InputError(f"lower and upper must have the same shape (N, ...), got {tuple(lower.shape)} "
                         f"and {tuple(upper.shape)}")
    if not (torch.isfinite(lower).all() and torch.isfinite(upper).all()):
        raise InputError("lower and upper must be finite")
    if (upper < lower).any():
        bad = int((upper < lower).flatten(1).any(1).nonzero()[0])
        raise InputError(f"upper < lower somewhere in sample {bad}: an empty box")
    method = parse_method(method)
    centre, radius = (upper + lower) / 2, (upper - lower) / 2
    n = lower.shape[0]
    g = read_graph(module, tuple(lower.shape[1:]), "module")
    ones = torch.ones(n, dtype=lower.dtype, device=lower.device)
    with torch.no_grad():
        c64, r64 = centre.detach().double(), radius.detach().double()
        unit = set_points(c64, ones.double(), math.inf, None)  # centres and unit-box vertices
        owner = torch.arange(min(n, MAX_CHECKED_SAMPLES)).repeat_interleave(unit.shape[0] // min(n, MAX_CHECKED_SAMPLES))
        pts = c64[owner] + (unit - c64[owner]) * r64[owner]  # the vertices of each sample's own box
    check_graph(module, g, pts, "module")
    Cg = _check_C(C, n, num_elements(g.out_shape), lower.dtype, lower.device)
    budget = DEFAULT_MEMORY_BUDGET if memory_budget is None else int(memory_budget)
    return bound_module_graph(module, g, centre, ones, math.inf, None, radius, Cg, method, bound_upper, budget,
                              alpha_options)
