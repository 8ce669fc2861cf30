import pytest
import torch

from auditai.spec import make_spec


def test_label_rows_and_names():
    out = torch.tensor([[0.1, 2.0, -1.0], [3.0, 0.0, 1.0]], dtype=torch.float64)
    s = make_spec("label", out, [1, 2], class_names=["cat", "dog", "eel"])
    assert s.C.shape == (2, 2, 3) and s.d.shape == (2, 2)
    # sample 0, label 1: rows f1 − f0, f1 − f2
    assert torch.equal(s.margins(out)[0], torch.tensor([1.9, 3.0], dtype=torch.float64))
    assert s.row_name(0, 0) == "keep class 'dog' over class 'cat'"
    assert s.row_name(1, 1) == "keep class 'eel' over class 'dog'"
    # sample 1 is a clean mistake (label 2, argmax 0): a negative margin
    assert s.margins(out)[1].min() < 0


def test_prediction_uses_argmax():
    out = torch.randn(20, 5, dtype=torch.float64)
    s = make_spec("prediction", out)
    assert torch.equal(s.target, out.argmax(1))
    assert (s.margins(out) > 0).all()
    assert make_spec("prediction", out).row_name(0, 0).startswith("keep class")


def test_binary_sign_of_label_or_centre():
    out = torch.tensor([[0.5], [-2.0]], dtype=torch.float64)
    s = make_spec("binary", out, [0, 0])
    assert s.margins(out).flatten().tolist() == [-0.5, 2.0]
    s = make_spec("binary", out)
    assert (s.margins(out) > 0).all() and s.row_name(1, 0) == "keep output 0 negative"


def test_band_two_rows():
    out = torch.tensor([[1.0, 5.0]], dtype=torch.float64)
    s = make_spec("band", out, output_index=1, tau=0.5)
    assert s.margins(out).tolist() == [[0.5, 0.5]]
    moved = torch.tensor([[1.0, 5.75]], dtype=torch.float64)
    assert s.margins(moved).tolist() == [[1.25, -0.25]]
    assert "below 5.5" in s.row_name(0, 1) and "above 4.5" in s.row_name(0, 0)


@pytest.mark.parametrize(
    "kind, kwargs, labels, match",
    [
        ("nope", {}, None, "spec must be one of"),
        ("label", {}, None, "needs labels"),
        ("label", {}, [0, 3], r"out of range.*valid 0..2.*rows \[1\]"),
        ("label", {}, [0], "got 1 labels for 2 codes"),
        ("label", {}, [0.5, 1], "integers"),
        ("band", {"tau": 1.0}, None, "needs output_index"),
        ("band", {"output_index": 1, "tau": 0.0}, None, "tau > 0"),
        ("band", {"output_index": 7, "tau": 1.0}, None, "output_index 7 out of range"),
        ("binary", {}, None, "needs output_index"),
    ],
)
def test_spec_errors(kind, kwargs, labels, match):
    out = torch.zeros(2, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=match):
        make_spec(kind, out, labels, **kwargs)


def test_class_spec_on_single_output():
    with pytest.raises(ValueError, match="use spec 'binary'"):
        make_spec("label", torch.zeros(2, 1), [0, 0])
