"""The demo's shifted test splits and the pixel-space coverage of the Table 4 baseline (§4.2)."""

from __future__ import annotations

import numpy as np
import pytest

from auditai.demo import shapes
from auditai.demo.shift import fashion_shifted, pixel_coverage, rotate, shapes_shifted
from auditai.errors import DataError


def test_shapes_shift_is_deterministic_and_shifted():
    x, y, desc = shapes_shifted(64, seed=3)
    x2, y2, _ = shapes_shifted(64, seed=3)
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    assert x.shape == (64, 1, 32, 32) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 0.8 + 1e-6
    assert set(np.unique(y)) <= {0, 1, 2} and "Beta" in desc
    # not the training distribution: some shapes are dimmer than any training shape can be
    assert x.reshape(64, -1).max(1).min() < shapes.BRIGHTNESS_RANGE[0]


def test_rotate_quarter_turn_is_counter_clockwise():
    x = np.zeros((1, 1, 4, 4), np.float32)
    x[0, 0, 0, 1] = 1.0
    assert np.allclose(rotate(x, [90.0])[0, 0], np.rot90(x[0, 0], 1), atol=1e-6)
    assert np.allclose(rotate(x, [0.0]), x, atol=1e-6)


def test_fashion_shift_falls_back_to_given_images(tmp_path):
    rng = np.random.default_rng(0)
    x24 = rng.uniform(0, 1, size=(10, 1, 24, 24)).astype(np.float32)
    y = np.arange(10) % 3
    x, y2, desc = fashion_shifted(10, 1, str(tmp_path / "no-such-dir"), (x24, y), log=lambda _m: None)
    assert x.shape == (10, 1, 32, 32) and np.array_equal(y2, y) and "held-out" in desc
    assert 0 <= x.min() and x.max() <= 0.9 + 1e-6
    with pytest.raises(DataError):
        fashion_shifted(10, 1, str(tmp_path / "no-such-dir"), None)


def test_pixel_coverage_by_hand():
    train = np.array([[0.0, 1.0], [2.0, 1.0]]).reshape(2, 1, 1, 2)  # per pixel μ (1, 1), σ (1, 0)
    x = np.array([[2.4, 1.4], [2.6, 1.0], [1.0, 1.6]]).reshape(3, 1, 1, 2)
    # ε = 0.5: pixel 0 in [−0.5, 2.5], pixel 1 in [0.5, 1.5]
    assert pixel_coverage(train, x, 0.5).tolist() == [True, False, False]
