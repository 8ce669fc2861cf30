"""A procedural data set with known generative factors, in the manner of dSprites.

Each image is one anti-aliased shape on a black 32×32 canvas, drawn from six factors:

=============  =========================================================================
``shape``      class index into :data:`SHAPES` (square, ellipse, triangle)
``scale``      size in [0.5, 1]; the shape's half-size in pixels is ``HALF_SIZE * scale``
``rotation``   radians in [-π/6, π/6], counter-clockwise as displayed (y axis up)
``x``, ``y``   centre position in [0, 1] across the usable part of the canvas (x to the
               right, y downwards as in image rows); the shape never leaves the canvas
``brightness`` intensity of the shape's inside, in [0.4, 1]
=============  =========================================================================

Everything is a function of a numpy seed, so the same call gives the same pixels on every
machine. Rasterisation is vectorised over the batch (a signed distance per pixel, turned into
a coverage in [0, 1] for anti-aliased edges): tens of thousands of images take about a second.
The rotation range is kept below the symmetry of the square (90°) and triangle (120°) so that
the rotation factor is identifiable from the image.
"""

from __future__ import annotations

import math

import numpy as np

from auditai.errors import InputError

SHAPES: tuple[str, ...] = ("square", "ellipse", "triangle")
SIZE = 32
HALF_SIZE = 7.0  # pixels at scale 1 (square half-side, ellipse semi-major axis, triangle circumradius/2)
SCALE_RANGE = (0.5, 1.0)
ROTATION_RANGE = (-math.pi / 6, math.pi / 6)
BRIGHTNESS_RANGE = (0.4, 1.0)
ELLIPSE_MINOR = 0.5  # minor/major axis ratio of the ellipse
# The largest extent of any shape from its centre (square corner at scale 1) plus a pixel of edge.
MARGIN = HALF_SIZE * math.sqrt(2.0) + 1.0
FACTOR_NAMES: tuple[str, ...] = ("shape", "scale", "rotation", "x", "y", "brightness")


def sample_factors(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Draw `n` factor tuples uniformly (shape uniform over :data:`SHAPES`), deterministically."""
    if n < 0:
        raise InputError(f"n must be >= 0, got {n}")
    rng = np.random.default_rng(seed)
    return {
        "shape": rng.integers(0, len(SHAPES), size=n).astype(np.int64),
        "scale": rng.uniform(*SCALE_RANGE, size=n),
        "rotation": rng.uniform(*ROTATION_RANGE, size=n),
        "x": rng.uniform(0.0, 1.0, size=n),
        "y": rng.uniform(0.0, 1.0, size=n),
        "brightness": rng.uniform(*BRIGHTNESS_RANGE, size=n),
    }


def centre_pixels(pos: np.ndarray, size: int = SIZE) -> np.ndarray:
    """Map a position factor in [0, 1] to the pixel coordinate of the shape's centre.

    Pixel i covers [i, i+1), so the canvas spans [0, size]; the centre stays MARGIN inside.
    """
    return MARGIN + np.asarray(pos, dtype=np.float64) * (size - 2.0 * MARGIN)


def _check_factors(factors: dict[str, np.ndarray]) -> int:
    missing = [k for k in FACTOR_NAMES if k not in factors]
    if missing:
        raise InputError(f"factors is missing {missing} (expected keys {list(FACTOR_NAMES)})")
    n = len(np.asarray(factors["shape"]))
    for k in FACTOR_NAMES:
        a = np.asarray(factors[k])
        if a.shape != (n,):
            raise InputError(f"factor '{k}' has shape {a.shape}, expected ({n},) like 'shape'")
        if not np.all(np.isfinite(a)):
            raise InputError(f"factor '{k}' contains NaN or inf")
    s = np.asarray(factors["shape"])
    if n and (s.min() < 0 or s.max() >= len(SHAPES)):
        raise InputError(f"factor 'shape' must be in 0..{len(SHAPES) - 1} ({SHAPES})")
    return n


def render(factors: dict[str, np.ndarray], size: int = SIZE, chunk: int = 4096) -> np.ndarray:
    """Rasterise shapes from their factors: float32 N×1×size×size in [0, 1].

    Per pixel centre p, local coordinates u = R(-θ)(p - c) / (HALF_SIZE·scale) (y up), then a
    signed distance d (in pixels) to the shape's edge; coverage = clip(0.5 - d, 0, 1) gives
    one pixel of anti-aliasing. Vectorised over the batch, in chunks to bound memory.
    """
    n = _check_factors(factors)
    out = np.empty((n, 1, size, size), dtype=np.float32)
    coords = np.arange(size, dtype=np.float64) + 0.5
    px = coords[None, None, :]  # columns: x to the right
    py = coords[None, :, None]  # rows: y downwards
    for start in range(0, n, chunk):
        sl = slice(start, min(n, start + chunk))
        shape = np.asarray(factors["shape"][sl])[:, None, None]
        half = HALF_SIZE * np.asarray(factors["scale"][sl], dtype=np.float64)[:, None, None]
        th = np.asarray(factors["rotation"][sl], dtype=np.float64)[:, None, None]
        cx = centre_pixels(factors["x"][sl])[:, None, None]
        cy = centre_pixels(factors["y"][sl])[:, None, None]
        bright = np.asarray(factors["brightness"][sl], dtype=np.float32)[:, None, None]
        dx = px - cx
        dy = -(py - cy)  # y up, so that a positive rotation is counter-clockwise on screen
        c, s = np.cos(th), np.sin(th)
        u = (c * dx + s * dy) / half  # rotate by -θ into the shape's own frame
        v = (-s * dx + c * dy) / half
        dist = np.empty(np.broadcast_shapes(u.shape), dtype=np.float64)
        # square: |u|, |v| <= 1 (Chebyshev distance, exact inside and along the sides)
        sq = (shape == 0)[:, 0, 0]
        if sq.any():
            dist[sq] = (np.maximum(np.abs(u[sq]), np.abs(v[sq])) - 1.0) * half[sq]
        # ellipse: (u/1)^2 + (v/b)^2 <= 1, distance ≈ (k - 1)/|∇k| (first order)
        el = (shape == 1)[:, 0, 0]
        if el.any():
            ue, ve, b = u[el], v[el], ELLIPSE_MINOR
            k = np.sqrt(ue**2 + (ve / b) ** 2)
            grad = np.sqrt(ue**2 + (ve / b**2) ** 2) / np.maximum(k, 1e-9)
            dist[el] = (k - 1.0) / np.maximum(grad, 1e-9) * half[el]
        # triangle: equilateral, pointing up, centroid at the origin, circumradius 1.2·half
        tr = (shape == 2)[:, 0, 0]
        if tr.any():
            ut, vt = u[tr], v[tr]
            inr = 0.6  # inradius = circumradius / 2
            d1 = -vt - inr  # bottom edge
            d2 = (math.sqrt(3) / 2) * ut + 0.5 * vt - inr  # upper-right edge
            d3 = -(math.sqrt(3) / 2) * ut + 0.5 * vt - inr  # upper-left edge
            dist[tr] = np.maximum(np.maximum(d1, d2), d3) * half[tr]
        cov = np.clip(0.5 - dist, 0.0, 1.0).astype(np.float32)
        out[sl, 0] = cov * bright
    return out


def generate(n: int, seed: int = 0, size: int = SIZE) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """`n` images (float32 N×1×size×size in [0, 1]) and their factors, from `seed`.

    >>> x, f = generate(4, seed=1)
    >>> x.shape, sorted(f)
    ((4, 1, 32, 32), ['brightness', 'rotation', 'scale', 'shape', 'x', 'y'])
    """
    factors = sample_factors(n, seed)
    return render(factors, size=size), factors
