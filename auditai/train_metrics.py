"""The paper's Table 2 metric: how large a latent radius a pixel-space ball buys
(`latent_box_of_pixel_ball`, `relative_radius`) and the radius at a given error level."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from auditai.bounds import bound_ball
from auditai.errors import InputError


@torch.no_grad()
def latent_box_of_pixel_ball(encoder: nn.Module, x: Tensor, eps: float, p="inf",
                             method: str = "crown-ibp", batch_size: int = 256) -> tuple[Tensor, Tensor]:
    """(lower, upper), each N×d: a sound box around e(x') for every ‖x' − x‖_p ≤ ε.

    The box contains the true image of the pixel ball (it over-approximates it), so a radius
    read from it favours the pixel-space approach in `relative_radius`.
    """
    was = encoder.training
    encoder.eval()
    try:
        lows, ups = [], []
        for i in range(0, x.shape[0], batch_size):
            lo, up = bound_ball(encoder, x[i:i + batch_size], float(eps), p, None, method, bound_upper=True)
            lows.append(lo)
            ups.append(up)
    finally:
        encoder.train(was)
    return torch.cat(lows), torch.cat(ups)


def relative_radius(half_widths: Tensor, z_nominal: Tensor, dims: Sequence[int] | None = None) -> float:
    """ε/‖z_nom‖ of paper Table 2, in ℓ2, over the tested latent coordinates `dims` (default all):

        sqrt(mean_n ‖h_n[dims]‖²) / sqrt(mean_n ‖z0_n[dims]‖²)

    `half_widths` is N×d (per sample and coordinate) or a scalar. For the latent approach, the
    unit test is the ℓ∞ box of radius ε1 on `dims`, so h = ε1 for every sample and coordinate
    and the value is ε1·√k / ‖z_nom‖ (the ℓ2 length of the box's half-diagonal relative to the
    ℓ2 length of the nominal code there). For the pixel approach, h_n = (u_n − l_n)/2 of the
    latent box that the pixel ball of radius ε2 around x_n maps into (ε21 of the paper, from
    `latent_box_of_pixel_ball` on that approach's own encoder), and z0 are its own codes. Both
    are a displacement in the latent space relative to the size of the nominal codes; the
    pixel one is an over-approximation (a box containing the image), which favours pixels.
    """
    z = z_nominal if dims is None else z_nominal[:, list(dims)]
    k = z.shape[1]
    h = torch.as_tensor(half_widths, dtype=z.dtype)
    if h.dim() == 0:
        num = float(h) * math.sqrt(k)
    else:
        h = h if dims is None else h[:, list(dims)]
        num = h.pow(2).sum(1).mean().sqrt().item()
    den = z.pow(2).sum(1).mean().sqrt().item()
    if den == 0:
        raise InputError("the nominal codes are all zero on the tested coordinates: no scale to compare to")
    return num / den


def radius_at_error(eps_grid: Sequence[float], errors: Sequence[float], level: float,
                    values: Sequence[float] | None = None) -> float | None:
    """The radius ε at which the verified-error curve reaches `level` (linear interpolation).

    The curve is made monotone first (running maximum over increasing ε: each ε has its own
    trained head, so noise can break monotonicity). With `values` (one per grid point, e.g. the
    relative radius of each trained model), the value interpolated at the same point is
    returned instead of ε. Returns the last grid point's value if the curve never reaches the
    level (a lower bound: check `max(errors) < level`), None if it starts above it.
    """
    vals = [float(e) for e in eps_grid] if values is None else [float(v) for v in values]
    if len(vals) != len(eps_grid) or len(errors) != len(eps_grid):
        raise InputError(f"eps_grid, errors and values must have one entry per grid point, got "
                         f"{len(eps_grid)}, {len(errors)}, {len(vals)}")
    pts = sorted(zip((float(e) for e in eps_grid), (float(v) for v in errors), vals))
    if not pts:
        return None
    es = [p[2] for p in pts]
    vs, run = [], -math.inf
    for _, v, _ in pts:
        run = max(run, v)
        vs.append(run)
    if vs[0] > level:
        return None
    for i in range(1, len(es)):
        if vs[i] >= level:
            if vs[i] == vs[i - 1]:
                return es[i - 1]
            t = (level - vs[i - 1]) / (vs[i] - vs[i - 1])
            return es[i - 1] + t * (es[i] - es[i - 1])
    return es[-1]
