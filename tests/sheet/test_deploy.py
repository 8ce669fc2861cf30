"""Deployment ranges (paper §2.4) on hand-made codes, and SpecSheet.check verdicts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from .conftest import build_sheet, make_result

from auditai.deploy import CoordinateStats, deployment_range, set_coordinates
from auditai.errors import SheetError
from auditai.latent import Basis, Dims, Direction
from auditai.sheet import SpecSheet
from auditai.suite import UnitTest


def test_direction_range_by_hand():
    # codes whose coordinate along v̂ = (3, 4)/5 is t = 0, 1, 2, 3, plus an orthogonal part
    vhat = np.array([0.6, 0.8, 0.0])
    t = np.array([0.0, 1.0, 2.0, 3.0])
    z = t[:, None] * vhat + np.array([[0, 0, 5.0], [0, 0, -1.0], [0.8, -0.6, 2.0], [0, 0, 0]])
    P, s, labels = set_coordinates("direction", [3.0, 4.0, 0.0], name="pose")
    assert labels == ["t along 'pose'"]
    stats = CoordinateStats.from_codes(z, P)
    # mean 1.5, population std sqrt(1.25); the range is [μ − ε − σ, μ + ε + σ]
    lo, hi = stats.range(0.5, s)
    sd = math.sqrt(1.25)
    assert lo[0] == pytest.approx(1.5 - 0.5 - sd) and hi[0] == pytest.approx(1.5 + 0.5 + sd)
    # the paper's formula computed literally on {t − ε} and {t + ε}
    lo2, hi2 = deployment_range(z, P, 0.5)
    assert lo2 == pytest.approx(lo) and hi2 == pytest.approx(hi)


def test_dims_range_with_radii_and_basis_coordinates():
    z = np.array([[1.0, 10.0, -2.0], [3.0, 10.0, 2.0]])
    P, s, labels = set_coordinates("dims", [0, 2], d=3, radii=[1.0, 2.0])
    assert labels == ["z[0]", "z[2]"]
    lo, hi = CoordinateStats.from_codes(z, P).range(1.0, s)
    # z[0]: μ 2, σ 1, half-width 1·ε → [0, 4];  z[2]: μ 0, σ 2, half-width 2·ε → [−4, 4]
    assert lo.tolist() == pytest.approx([0.0, -4.0]) and hi.tolist() == pytest.approx([4.0, 4.0])
    # a basis: least-squares coordinates, so z0 + B·δ moves t by δ exactly
    B = np.array([[1.0, 1.0], [0.0, 1.0], [0.0, 0.0]])
    P, s, _ = set_coordinates("basis", B.tolist())
    z0 = np.array([0.3, -0.2, 0.0])
    delta = np.array([0.5, -0.25])
    assert (P @ (z0 + B @ delta) - P @ z0) == pytest.approx(delta)
    with pytest.raises(SheetError, match="dependent columns"):
        set_coordinates("basis", [[1.0, 2.0], [1.0, 2.0], [0.0, 0.0]])


def test_check_verdicts_inside_and_outside(sheet, codes):
    pose = sheet.unit_test("pose")
    mu = float(np.mean(codes @ pose.projection.T))
    # default ε of 'pose': its largest gated ε whose gate passed = 0.5
    _, hi = pose.deployment_range(0.5)
    vhat = np.array([0.6, 0.8, 0.0, 0.0])
    inside = np.zeros(4) + vhat * (mu - float(np.dot(np.zeros(4), vhat)))
    inside[2:] = np.mean(codes[:, 2:], axis=0)
    outside = inside + vhat * (hi[0] - mu + 0.01)
    rep = sheet.check(np.stack([inside, outside]))
    by = {(c.input, c.unit_test): c for c in rep.checks}
    assert by[0, "pose"].inside and not by[1, "pose"].inside
    assert by[0, "pose"].eps == 0.5 and by[0, "pose"].verified_error == 0.05
    assert by[1, "expression"].inside and by[1, "expression"].eps == 1.0
    assert not rep.all_inside
    assert rep.inside_matrix(["pose", "expression"]).tolist() == [[True, True], [False, True]]
    # at ε = 2 the range is wider and holds the second code; its verified error is the one at 2
    rep2 = sheet.check(np.stack([inside, outside]), eps=2.0)
    assert rep2.all_inside
    assert {c.verified_error for c in rep2.checks if c.unit_test == "pose"} == {0.5}
    # ε between measured values: the error at the next larger ε (an upper bound), named
    c = sheet.check(inside, eps=0.75).checks[0]
    assert (c.verified_error, c.verified_error_eps) == (0.27, 1.0)
    c = sheet.check(inside, eps=3.0).checks[0]
    assert c.verified_error is None
    with pytest.raises(SheetError, match="d=3"):
        sheet.check(np.zeros((2, 3)))
    with pytest.raises(SheetError, match="NaN"):
        sheet.check(np.full((1, 4), np.nan))


def test_check_inputs_encodes_with_the_model(sheet, codes, toy_model):
    rep = sheet.check_inputs(torch.tensor(codes[:3]), toy_model)
    assert rep.n_inputs == 3 and len(rep.checks) == 6


def test_sheet_without_codes_has_no_range(codes):
    ut = UnitTest(name="pose", set={"direction": "pose"}, eps=(1.0,), max_verified_error=0.2)
    s = SpecSheet.from_results([(ut, make_result([1.0], [0.1]), Direction(torch.ones(4), "pose"))])
    assert s.unit_test("pose").deployment is None
    with pytest.raises(SheetError, match="no deployment range"):
        s.check(codes)
    # with the evaluation data instead of training codes, the sheet names its source
    data = type("D", (), {"z": torch.tensor(codes), "content_hash": "cd" * 32, "source": "test.npz"})()
    s = SpecSheet.from_results([(ut, make_result([1.0], [0.1]), Direction(torch.ones(4), "pose"))], data=data)
    assert "test.npz" in s.unit_test("pose").deployment.source
    assert s.data == {"source": "test.npz", "sha256": "cd" * 32, "n": 40}


def test_basis_unit_test_round_trips(codes):
    ut = UnitTest(name="sub", set={"basis": "sub"}, eps=(1.0,), max_verified_error=0.5)
    B = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.0, 0.0]])
    s = SpecSheet.from_results([(ut, make_result([1.0], [0.1]), Basis(B, "inf", "sub"))], train_codes=codes)
    assert SpecSheet.from_json(s.to_json()) == s
    assert s.unit_test("sub").labels == ["t0 of 'sub'", "t1 of 'sub'"]
    assert s.check(codes).n_inputs == 40


def test_build_twice_same_ranges(codes):
    a, b = build_sheet(codes), build_sheet(codes)
    assert a.unit_test("expression").deployment == b.unit_test("expression").deployment
    assert Dims([2, 3], "2").describe() == a.unit_test("expression").set_description
