"""The shapes generator's factors are what it says they are (measured from the pixels)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from auditai.demo import shapes


def one(shape="ellipse", scale=1.0, rotation=0.0, x=0.5, y=0.5, brightness=1.0, n=1):
    f = {
        "shape": np.full(n, shapes.SHAPES.index(shape)),
        "scale": np.full(n, scale, dtype=float),
        "rotation": np.full(n, rotation, dtype=float),
        "x": np.full(n, x, dtype=float),
        "y": np.full(n, y, dtype=float),
        "brightness": np.full(n, brightness, dtype=float),
    }
    return shapes.render(f)[:, 0]


def moments(img):
    """Centre of mass (x right, y UP) and the 2×2 second central moment matrix."""
    h, w = img.shape
    xs = np.arange(w) + 0.5
    ys = -(np.arange(h) + 0.5)  # y up
    X, Y = np.meshgrid(xs, ys)
    m = img.sum()
    cx, cy = (img * X).sum() / m, (img * Y).sum() / m
    dx, dy = X - cx, Y - cy
    cov = np.array([[(img * dx * dx).sum(), (img * dx * dy).sum()],
                    [(img * dx * dy).sum(), (img * dy * dy).sum()]]) / m
    return cx, cy, cov


def test_deterministic_and_in_range():
    a, fa = shapes.generate(300, seed=5)
    b, fb = shapes.generate(300, seed=5)
    c, _ = shapes.generate(300, seed=6)
    assert a.dtype == np.float32 and a.shape == (300, 1, 32, 32)
    assert np.array_equal(a, b) and all(np.array_equal(fa[k], fb[k]) for k in fa)
    assert not np.array_equal(a, c)
    assert a.min() >= 0.0 and a.max() <= 1.0
    # every shape stays inside the canvas: the border rows and columns are empty
    assert a[:, 0, [0, -1], :].max() == 0.0 and a[:, 0, :, [0, -1]].max() == 0.0
    assert set(np.unique(fa["shape"])) == {0, 1, 2}


@pytest.mark.parametrize("deg", [-30.0, -12.0, 17.0, 29.0])
def test_rotation_rotates_the_second_moments(deg):
    img = one("ellipse", rotation=math.radians(deg))[0]
    _, _, cov = moments(img)
    evals, evecs = np.linalg.eigh(cov)
    major = evecs[:, np.argmax(evals)]
    angle = math.degrees(math.atan2(major[1], major[0]))
    angle = (angle + 90) % 180 - 90  # an axis, not an arrow
    assert abs(angle - deg) < 1.5
    # the ellipse's axis ratio is 2:1, so the moments' eigenvalues are about 4:1
    assert 3.3 < evals.max() / evals.min() < 4.7


def test_rotating_a_square_keeps_its_moments_isotropic_and_its_area():
    a, b = one("square", rotation=0.0)[0], one("square", rotation=math.radians(25))[0]
    assert abs(a.sum() - b.sum()) / a.sum() < 0.02
    for img in (a, b):
        ev = np.linalg.eigvalsh(moments(img)[2])
        assert ev.max() / ev.min() < 1.05
    assert np.abs(a - b).sum() > 10  # yet the pixels differ


@pytest.mark.parametrize("shape,area_at_1", [
    ("square", (2 * shapes.HALF_SIZE) ** 2),
    ("ellipse", math.pi * shapes.HALF_SIZE ** 2 * shapes.ELLIPSE_MINOR),
    ("triangle", 3 * math.sqrt(3) * (0.6 * shapes.HALF_SIZE) ** 2),
])
def test_scale_sets_the_area(shape, area_at_1):
    for s in (0.5, 0.75, 1.0):
        area = one(shape, scale=s, rotation=0.1)[0].sum()
        assert area == pytest.approx(area_at_1 * s * s, rel=0.06)


def test_position_moves_the_centre_of_mass():
    for shape in shapes.SHAPES:
        for x, y in [(0.0, 0.0), (1.0, 0.3), (0.5, 1.0), (0.2, 0.7)]:
            cx, cy, _ = moments(one(shape, x=x, y=y, rotation=0.2)[0])
            assert cx == pytest.approx(shapes.centre_pixels(x), abs=0.15)
            assert -cy == pytest.approx(shapes.centre_pixels(y), abs=0.15)


def test_brightness_scales_the_intensity():
    a, b = one("triangle", brightness=1.0)[0], one("triangle", brightness=0.4)[0]
    assert np.allclose(b, 0.4 * a, atol=1e-6)
    assert a.max() == pytest.approx(1.0)


def test_bad_factors_are_refused():
    f = shapes.sample_factors(4)
    with pytest.raises(ValueError, match="missing"):
        shapes.render({k: v for k, v in f.items() if k != "x"})
    with pytest.raises(ValueError, match="'shape' must be in"):
        shapes.render({**f, "shape": np.array([0, 1, 2, 3])})
    with pytest.raises(ValueError, match="factor 'y' has shape"):
        shapes.render({**f, "y": np.zeros(3)})


def test_fast_enough():
    import time

    t0 = time.perf_counter()
    x, _ = shapes.generate(5000, seed=1)
    assert time.perf_counter() - t0 < 5.0  # about 0.3 s here; generous for a busy machine
    assert x.shape[0] == 5000
