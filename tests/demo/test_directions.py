"""auditai.directions: planted directions are recovered; scores are honest; bad input is named."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from auditai.directions import as_model_directions, find_directions
from auditai.errors import DataError


def cosine(a, b) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def generative_codes(n=4000, d=10, seed=0):
    """Codes z = a·v + noise: the attribute a moves the codes along v (a generative direction)."""
    rng = np.random.default_rng(seed)
    v = rng.normal(size=d)
    v /= np.linalg.norm(v)
    a = rng.uniform(-2, 2, size=n)
    z = a[:, None] * v + 0.3 * rng.normal(size=(n, d))
    return z, a, v


def test_planted_continuous_direction_is_recovered():
    z, a, v = generative_codes()
    info = find_directions(z, {"a": a})["a"]
    assert info.kind == "continuous" and info.score_name == "r2"
    assert cosine(info.vector, v) > 0.95
    assert abs(float(info.vector.norm()) - 1.0) < 1e-5
    assert info.score > 0.9  # var(a)=4/3 on a unit direction vs noise 0.09: R² ≈ 0.94
    assert info.slope == pytest.approx(1.0, rel=0.1)  # one latent unit along v ≈ one unit of a
    assert info.n_train + info.n_test == len(a)


def test_orientation_follows_the_attribute():
    z, a, v = generative_codes(seed=1)
    up, down = find_directions(z, {"up": a, "down": -a}).values()
    assert cosine(up.vector, v) > 0.95 and cosine(down.vector, -v) > 0.95
    assert up.slope > 0 and down.slope > 0


def test_mean_shift_ignores_collapsed_dimensions_a_regression_would_use():
    """The issue's warning: a regression of a on z loads on a near-constant dimension."""
    rng = np.random.default_rng(2)
    n = 5000
    a = rng.uniform(-1, 1, size=n)
    z = np.zeros((n, 3))
    z[:, 0] = a + 0.5 * rng.normal(size=n)        # the decoder's real factor, noisy
    z[:, 1] = rng.normal(size=n)                  # another factor
    z[:, 2] = 1e-3 * (a - z[:, 0])                # collapsed: tiny, but predicts a's noise exactly
    info = find_directions(z, {"a": a})["a"]
    assert cosine(info.vector, [1, 0, 0]) > 0.99
    w, *_ = np.linalg.lstsq(np.c_[z, np.ones(n)], a, rcond=None)
    assert abs(cosine(w[:3], [0, 0, 1])) > 0.99   # what the regression would pick instead


def test_unrelated_attribute_scores_near_zero():
    z, _, _ = generative_codes(seed=3)
    noise = np.random.default_rng(9).normal(size=len(z))
    assert find_directions(z, {"noise": noise})["noise"].score < 0.05


def test_binary_direction_is_the_classifier_normal():
    rng = np.random.default_rng(4)
    n, d = 3000, 8
    v = rng.normal(size=d)
    v /= np.linalg.norm(v)
    z = rng.normal(size=(n, d))
    label = (z @ v + 0.2 * rng.normal(size=n)) > 0
    info = find_directions(torch.as_tensor(z), {"smile": label}, kind="binary")["smile"]
    assert info.score_name == "accuracy" and info.method == "classifier"
    assert cosine(info.vector, v) > 0.95
    assert info.score > 0.9 and info.auc > 0.95
    ms = find_directions(z, {"smile": label.astype(float)}, kind="binary", method="mean_shift")["smile"]
    assert cosine(ms.vector, v) > 0.95  # isotropic codes: the class-mean difference agrees


def test_orthogonal_to_projects_out_and_keeps_the_rest():
    rng = np.random.default_rng(5)
    n = 4000
    cls_dir = np.array([1.0, 0, 0, 0])
    a = rng.uniform(-1, 1, size=n)
    # the attribute moves the codes along (1, 1, 0, 0)/√2: half of it along the class direction
    z = a[:, None] * np.array([1.0, 1.0, 0, 0]) / np.sqrt(2) + 0.1 * rng.normal(size=(n, 4))
    info = find_directions(z, {"size": a}, orthogonal_to={"class": cls_dir})["size"]
    assert abs(float(info.vector @ torch.tensor(cls_dir, dtype=torch.float32))) < 1e-6
    assert cosine(info.vector, [0, 1, 0, 0]) > 0.99
    assert info.orthogonal_to == ("class",)
    assert "orthogonal to class" in info.describe()


def test_held_out_score_is_computed_on_codes_not_used_for_fitting():
    z, a, _ = generative_codes(n=200, d=50, seed=6)
    z = np.random.default_rng(7).normal(size=z.shape)  # codes carry nothing about a
    info = find_directions(z, {"a": a}, test_fraction=0.5)["a"]
    # in-sample the fitted direction explains some of a by chance (d=50, n=100); held out it must not
    t = z @ info.vector.numpy().astype(float)
    assert info.score < 0.1
    assert np.corrcoef(t, a)[0, 1] ** 2 < 0.5


def test_model_directions_form():
    z, a, _ = generative_codes(n=500, seed=8)
    out = as_model_directions(find_directions(z, {"a": a}))
    vec, desc = out["a"]
    assert vec.shape == (10,) and "R²" in desc


@pytest.mark.parametrize("kwargs,match", [
    ({"attributes": {"a": np.zeros(7)}}, r"attribute 'a' has shape \(7,\), expected \(100,\)"),
    ({"attributes": {"a": np.ones(100)}}, "'a' is constant"),
    ({"attributes": {"a": np.r_[np.nan, np.ones(99)]}}, "'a' contains NaN"),
    ({"attributes": {"a": np.arange(100.0) % 3}, "kind": "binary"}, "only 0/1"),
    ({"attributes": {"a": np.arange(100.0)}, "kind": "ordinal"}, "kind must be"),
    ({"attributes": {"a": np.arange(100.0)}, "test_fraction": 1.0}, "test_fraction"),
    ({"attributes": {"a": np.arange(100.0)}, "orthogonal_to": np.ones(3)}, "vector of d=4"),
    ({"attributes": {}}, "attributes is empty"),
])
def test_bad_input_is_named(kwargs, match):
    z = np.random.default_rng(0).normal(size=(100, 4))
    with pytest.raises(DataError, match=match):
        find_directions(z, **kwargs)


def test_attribute_in_the_span_of_orthogonal_to_is_an_error():
    z = np.random.default_rng(0).normal(size=(100, 2))
    with pytest.raises(DataError, match="zero direction"):
        find_directions(z, {"a": z[:, 0]}, orthogonal_to=[[1.0, 0.0], [0.0, 1.0]])


def test_groups_give_the_within_class_direction():
    """Size differs between classes along one axis but moves the codes along another within a class."""
    rng = np.random.default_rng(11)
    n = 6000
    cls = rng.integers(0, 2, size=n)
    within = rng.normal(size=n)
    size = 3.0 * cls + within                       # class 1 is larger on average
    z = np.zeros((n, 3))
    z[:, 0] = 4.0 * cls + 0.1 * rng.normal(size=n)  # the class axis
    z[:, 1] = within + 0.1 * rng.normal(size=n)     # size within a class
    z[:, 2] = rng.normal(size=n)
    plain = find_directions(z, {"size": size})["size"]
    grouped = find_directions(z, {"size": size}, groups=cls)["size"]
    assert cosine(plain.vector, [1, 0, 0]) > 0.8    # the pooled mean shift steps towards class 1
    assert cosine(grouped.vector, [0, 1, 0]) > 0.99
    assert grouped.within_groups and "within each class" in grouped.describe()
    assert grouped.score > 0.95
    with pytest.raises(DataError, match=r"groups has shape \(5,\)"):
        find_directions(z, {"size": size}, groups=cls[:5])


def test_axis_method_scores_a_given_coordinate():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(400, 5))
    a = 3.0 * z[:, 2] + 0.1 * rng.normal(size=400)
    info = find_directions(z, {"a": -a}, method="axis", axes={"a": 2})["a"]
    # the coordinate itself, oriented so the attribute grows (here: the negative axis)
    assert torch.allclose(info.vector, torch.tensor([0, 0, -1.0, 0, 0]))
    assert info.score > 0.99 and info.method == "axis"
    assert "latent coordinate" in info.describe()
    with pytest.raises(DataError, match="needs axes"):
        find_directions(z, {"a": a}, method="axis")
    with pytest.raises(DataError, match="outside the latent dimensions"):
        find_directions(z, {"a": a}, method="axis", axes={"a": 7})
