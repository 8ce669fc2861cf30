"""Linear relaxations of activations on an interval [l, u] (CROWN, Zhang et al. 2018).

`relax(kind, l, u, slope)` returns (lo_d, lo_b, up_d, up_b) with, for every x in [l, u],

    lo_d·x + lo_b ≤ f(x) ≤ up_d·x + up_b.

ReLU follows auto_LiRPA's CROWN exactly (same names, same numbers): upper = the chord
through (l, 0) and (u, u) with the 1e-8 guard; lower slope "adaptive": 1 if u > −l else 0.
Stable neurons get their exact linear piece. S-shaped functions (tanh, sigmoid: convex
for x < 0, concave for x > 0) use chords and tangents; where the interval crosses 0, the
tangent through an end point is found by bisection and then moved outward, which only makes
the line looser, never unsound.
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

Relaxation = Tuple[Tensor, Tensor, Tensor, Tensor]


def relu_relaxation(l: Tensor, u: Tensor, slope: float = 0.0) -> Relaxation:
    """ReLU / LeakyReLU(slope) relaxation; exact on stable neurons."""
    lb_r = l.clamp(max=0)
    ub_r = u.clamp(min=0)
    ub_r = torch.maximum(ub_r, lb_r + 1e-8)
    if slope > 0:
        up_d = (ub_r - slope * lb_r) / (ub_r - lb_r)
        up_b = -lb_r * up_d + slope * lb_r
        lo_d = torch.where(up_d > 0.5, 1.0, slope).to(l.dtype)
        lo_d = torch.where(u <= 0, torch.full_like(lo_d, slope), lo_d)
        lo_d = torch.where(l >= 0, torch.ones_like(lo_d), lo_d)
    else:
        up_d = ub_r / (ub_r - lb_r)
        up_b = -lb_r * up_d
        lo_d = (up_d > 0.5).to(l.dtype)
    return lo_d, torch.zeros_like(l), up_d, up_b


def _fn(kind: str):
    if kind == "tanh":
        return torch.tanh, lambda x: 1 - torch.tanh(x) ** 2
    return torch.sigmoid, lambda x: torch.sigmoid(x) * (1 - torch.sigmoid(x))


def _tangent_through(kind: str, anchor: Tensor, lo: Tensor, hi: Tensor, increasing: bool, iters: int = 40) -> Tensor:
    """Bisection for d in [lo, hi] where the tangent at d passes through (anchor, f(anchor)).

    g(d) = f(d) + f'(d)(anchor − d) − f(anchor) is monotone in d on the half-line; returns the
    end of the final bracket on the safe side (g ≥ 0 for the upper case, ≤ 0 for the lower).
    """
    f, df = _fn(kind)
    fa = f(anchor)
    a, b = lo.clone(), hi.clone()
    for _ in range(iters):
        mid = (a + b) / 2
        g = f(mid) + df(mid) * (anchor - mid) - fa
        go_right = g < 0 if increasing else g > 0
        a = torch.where(go_right, mid, a)
        b = torch.where(go_right, b, mid)
    return b if increasing else a


def s_shaped_relaxation(kind: str, l: Tensor, u: Tensor) -> Relaxation:
    """Relaxation of tanh or sigmoid on [l, u] (convex on x<0, concave on x>0)."""
    f, df = _fn(kind)
    with torch.no_grad():
        width = u - l
        tiny = width <= 1e-7
    fl, fu = f(l), f(u)
    chord_d = (fu - fl) / torch.where(tiny, torch.ones_like(width), width)
    chord_b = fl - chord_d * l
    mid = (l + u) / 2
    tan_d = df(mid)
    tan_b = f(mid) - tan_d * mid

    # crossing intervals: upper = tangent at d ≥ 0 through (l, f(l)), or the chord when it is
    # valid (then that tangent would touch beyond u); symmetrically for the lower line
    with torch.no_grad():
        big = torch.full_like(u, 40.0)
        zero = torch.zeros_like(u)
        d_up = _tangent_through(kind, l, zero, torch.maximum(big, u), increasing=True)
        d_lo = _tangent_through(kind, u, torch.minimum(-big, l), zero, increasing=False)
        # the chord is above f near u iff f'(u) ≥ its slope (and below f near l iff f'(l) ≥ it)
        chord_up_ok = df(u) >= chord_d
        chord_lo_ok = df(l) >= chord_d
    up_cross_d = torch.where(chord_up_ok, chord_d, df(d_up))
    up_cross_b = torch.where(chord_up_ok, chord_b, f(d_up) - df(d_up) * d_up)
    lo_cross_d = torch.where(chord_lo_ok, chord_d, df(d_lo))
    lo_cross_b = torch.where(chord_lo_ok, chord_b, f(d_lo) - df(d_lo) * d_lo)

    convex = u <= 0
    concave = l >= 0
    up_d = torch.where(convex, chord_d, torch.where(concave, tan_d, up_cross_d))
    up_b = torch.where(convex, chord_b, torch.where(concave, tan_b, up_cross_b))
    lo_d = torch.where(convex, tan_d, torch.where(concave, chord_d, lo_cross_d))
    lo_b = torch.where(convex, tan_b, torch.where(concave, chord_b, lo_cross_b))
    # degenerate intervals: constant bounds f(l) ≤ f(x) ≤ f(u) (f is increasing)
    zero_t = torch.zeros_like(l)
    lo_d = torch.where(tiny, zero_t, lo_d)
    up_d = torch.where(tiny, zero_t, up_d)
    lo_b = torch.where(tiny, fl, lo_b)
    up_b = torch.where(tiny, fu, up_b)
    return lo_d, lo_b, up_d, up_b


def relax(kind: str, l: Tensor, u: Tensor, slope: float = 0.0) -> Relaxation:
    """Dispatch on the activation kind ('relu', 'leaky_relu', 'tanh', 'sigmoid')."""
    if kind == "relu":
        return relu_relaxation(l, u)
    if kind == "leaky_relu":
        return relu_relaxation(l, u, slope)
    if kind in ("tanh", "sigmoid"):
        return s_shaped_relaxation(kind, l, u)
    raise ValueError(f"no relaxation for activation {kind!r}")


# ------------------------------------------------------------- more activations (graph IR)
def _const(lo: Tensor, up: Tensor) -> Relaxation:
    z = torch.zeros_like(lo)
    return z, lo, z.clone(), up


def hardtanh_relaxation(l: Tensor, u: Tensor, lo_v: float, hi_v: float) -> Relaxation:
    """clamp(x, lo_v, hi_v): exact where no kink lies inside [l, u]; one kink: the ReLU-style
    relaxation of the convex (lower kink) or concave (upper kink) piece; both: constants."""
    fl, fu = l.clamp(lo_v, hi_v), u.clamp(lo_v, hi_v)
    one, zero = torch.ones_like(l), torch.zeros_like(l)
    width = (u - l).clamp_min(1e-12)
    chord_d = (fu - fl) / width
    chord_b = fl - chord_d * l
    lo_d, lo_b, up_d, up_b = zero.clone(), fl.clone(), zero.clone(), fu.clone()  # both kinks: constants
    inner = (l >= lo_v) & (u <= hi_v)
    lower_kink = (l < lo_v) & (u > lo_v) & (u <= hi_v)   # convex piece: chord above, x or const below
    upper_kink = (l >= lo_v) & (l < hi_v) & (u > hi_v)   # concave piece: chord below, x or const above
    take_x_lo = (u - lo_v) > (lo_v - l)
    take_x_up = (hi_v - l) > (u - hi_v)
    lo_d = torch.where(inner, one, lo_d)
    lo_b = torch.where(inner, zero, lo_b)
    up_d = torch.where(inner, one, up_d)
    up_b = torch.where(inner, zero, up_b)
    lo_d = torch.where(lower_kink, torch.where(take_x_lo, one, zero), lo_d)
    lo_b = torch.where(lower_kink, torch.where(take_x_lo, zero, torch.full_like(l, lo_v)), lo_b)
    up_d = torch.where(lower_kink, chord_d, up_d)
    up_b = torch.where(lower_kink, chord_b, up_b)
    lo_d = torch.where(upper_kink, chord_d, lo_d)
    lo_b = torch.where(upper_kink, chord_b, lo_b)
    up_d = torch.where(upper_kink, torch.where(take_x_up, one, zero), up_d)
    up_b = torch.where(upper_kink, torch.where(take_x_up, zero, torch.full_like(l, hi_v)), up_b)
    return lo_d, lo_b, up_d, up_b


def convex_increasing_relaxation(f, df, l: Tensor, u: Tensor) -> Relaxation:
    """A convex increasing f on [l, u]: the chord above, the tangent at the midpoint below."""
    fl, fu = f(l), f(u)
    width = u - l
    tiny = width <= 1e-7
    chord_d = torch.where(tiny, torch.zeros_like(l), (fu - fl) / torch.where(tiny, torch.ones_like(l), width))
    chord_b = torch.where(tiny, fu, fl - chord_d * l)
    mid = (l + u) / 2
    tan_d = torch.where(tiny, torch.zeros_like(l), df(mid))
    tan_b = torch.where(tiny, fl, f(mid) - df(mid) * mid)
    return tan_d, tan_b, chord_d, chord_b


_MINIMA: dict = {}


def _argmin_of(name: str, f) -> float:
    """Where a smooth quasi-convex f (GELU, SiLU) takes its global minimum, by ternary search."""
    if name not in _MINIMA:
        a = torch.tensor(-4.0, dtype=torch.float64)
        b = torch.tensor(0.0, dtype=torch.float64)
        for _ in range(200):
            m1, m2 = a + (b - a) / 3, b - (b - a) / 3
            if f(m1) < f(m2):
                b = m2
            else:
                a = m1
        _MINIMA[name] = float((a + b) / 2)
    return _MINIMA[name]


def quasi_convex_relaxation(name: str, f, l: Tensor, u: Tensor) -> Relaxation:
    """Constant bounds for f decreasing then increasing (GELU, SiLU): min at the clamped
    minimiser (less a margin for where it was found), max at an end point."""
    x_star = _argmin_of(name, lambda t: f(t.double()))
    m = f(torch.clamp(torch.full_like(l, x_star), l, u))
    fl, fu = f(l), f(u)
    lo = torch.minimum(torch.minimum(fl, fu), m) - 1e-9 * (1 + m.abs())
    return _const(lo, torch.maximum(fl, fu))


def smooth_softplus(x: Tensor, beta: float) -> Tensor:
    """log(1 + exp(βx))/β without torch's switch to the identity (stable for any x)."""
    bx = beta * x
    return (bx.clamp(min=0) + torch.log1p(torch.exp(-bx.abs()))) / beta


def softplus_relaxation(l: Tensor, u: Tensor, beta: float, threshold: float) -> Relaxation:
    """torch's softplus: s(x) = log(1 + exp(βx))/β where βx ≤ threshold, x above it.

    s is convex and increasing, but torch's switch to x drops the value by up to
    log(1 + exp(−threshold))/β, so the function is neither convex nor monotone across the switch.
    Below the switch: s's chord and midpoint tangent; above it: exact (x). Across it: s's chord
    above (s ≥ x there), and below, s's tangent lowered until it passes under (t, t), t the switch
    point (the tangent minus x decreases, so then it lies under x on the whole identity part).
    """
    s = lambda x: smooth_softplus(x, beta)  # noqa: E731
    ds = lambda x: torch.sigmoid(beta * x)  # noqa: E731
    lo_d, lo_b, up_d, up_b = convex_increasing_relaxation(s, ds, l, u)
    right = l * beta > threshold
    cross = (l * beta <= threshold) & (u * beta > threshold)
    t = torch.full_like(l, threshold / beta)
    m = (l + u) / 2
    tan_d = ds(m)
    tan_b = s(m) - tan_d * m
    excess = (tan_d * t + tan_b - t).clamp(min=0)
    one, zero = torch.ones_like(l), torch.zeros_like(l)
    lo_d = torch.where(cross, tan_d, torch.where(right, one, lo_d))
    lo_b = torch.where(cross, tan_b - excess, torch.where(right, zero, lo_b))
    up_d = torch.where(right, one, up_d)
    up_b = torch.where(right, zero, up_b)
    return lo_d, lo_b, up_d, up_b


def softplus_interval(l: Tensor, u: Tensor, beta: float, threshold: float) -> Tuple[Tensor, Tensor]:
    """Exact range of torch's softplus on [l, u] (its switch to x makes it non-monotone)."""
    f = lambda x: torch.nn.functional.softplus(x, beta, threshold)  # noqa: E731
    cross = (l * beta <= threshold) & (u * beta > threshold)
    t = torch.full_like(l, threshold / beta)
    lo = torch.where(cross, torch.minimum(f(l), t), f(l))
    hi = torch.where(cross, torch.maximum(smooth_softplus(t, beta), f(u)), f(u))
    return lo, hi


def leaky_relu_relaxation(l: Tensor, u: Tensor, slope: float) -> Relaxation:
    """LeakyReLU of any slope: auto_LiRPA's lines for 0 ≤ slope ≤ 1, else slope·x + (1 − slope)·relu(x)
    with the ReLU's lines swapped where 1 − slope < 0 (slope > 1 makes the function concave)."""
    if 0.0 <= slope <= 1.0:
        return relu_relaxation(l, u, slope)
    k = 1.0 - slope
    r_lo_d, r_lo_b, r_up_d, r_up_b = relu_relaxation(l, u)
    if k > 0:
        return slope + k * r_lo_d, k * r_lo_b, slope + k * r_up_d, k * r_up_b
    return slope + k * r_up_d, k * r_up_b, slope + k * r_lo_d, k * r_lo_b


def kinked_interval(f, l: Tensor, u: Tensor) -> Tuple[Tensor, Tensor]:
    """Range of an f monotone on each side of 0 (LeakyReLU, ELU of any sign) on [l, u]."""
    a, b, c = f(l), f(u), f(torch.minimum(torch.maximum(torch.zeros_like(l), l), u))
    return torch.minimum(torch.minimum(a, b), c), torch.maximum(torch.maximum(a, b), c)
