"""Schedules of ε, χ and β at chosen epochs (hand-computed values)."""

from __future__ import annotations

import pytest

from auditai.train import Schedule, schedules


def test_linear_schedule_values():
    s = schedules(20, warmup=5, ramp=10, kind="linear", kappa_end=0.25)
    assert s.at(0) == (0.0, 1.0, 1.0)
    assert s.at(4.99) == (0.0, 1.0, 1.0)
    assert s.at(5) == (0.0, 1.0, 1.0)
    e, k, b = s.at(10)
    assert e == pytest.approx(0.5) and k == pytest.approx(0.625) and b == pytest.approx(0.5)
    assert s.at(15) == pytest.approx((1.0, 0.25, 0.0))
    assert s.at(19.5) == pytest.approx((1.0, 0.25, 0.0))


def test_smoothed_schedule_values():
    s = Schedule(0.0, 2.0, warmup=5, ramp=10, kind="smoothed")  # mid 0.25, power 4: c = 1/13
    assert s(5) == 0.0
    assert s(6.25) == pytest.approx(2.0 / 13 / 16)  # s = 0.125: c·(1/2)^4
    assert s(7.5) == pytest.approx(2.0 / 13)  # s = mid
    assert s(11.25) == pytest.approx(2.0 * 7 / 13)  # s = 0.625: c + (1 − c)/2
    assert s(15) == pytest.approx(2.0) and s(40) == pytest.approx(2.0)
    # monotone, continuous, with a continuous slope at the joint
    h = 1e-4
    left = (s(7.5) - s(7.5 - h)) / h
    right = (s(7.5 + h) - s(7.5)) / h
    assert left == pytest.approx(right, rel=1e-2)
    vals = [s(5 + i * 0.05) for i in range(250)]
    assert all(a <= b for a, b in zip(vals, vals[1:]))


def test_default_ramp_is_half_the_rest_and_bad_values_fail():
    s = schedules(25)  # warmup 5 (the paper's), ramp 10
    assert s.eps.warmup == 5 and s.eps.ramp == 10
    with pytest.raises(ValueError, match="no epoch of certified training"):
        schedules(5, warmup=5)
    with pytest.raises(ValueError, match="kind"):
        Schedule(0, 1, kind="cosine")
    with pytest.raises(ValueError, match="kappa_end"):
        schedules(10, warmup=1, kappa_end=2)
