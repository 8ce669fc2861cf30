"""load_data: each format, encoding in batches, and every error named in issue 5."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

from auditai.data import load_data
from auditai.errors import DataError
from auditai.model import AuditModel


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    enc = nn.Sequential(nn.Flatten(), nn.Linear(12, 4))
    return AuditModel(nn.Sequential(nn.Linear(4, 3)), encoder=enc, input_shape=(3, 2, 2),
                      class_names=["cat", "dog", "eel"])


@pytest.fixture(scope="module")
def latent_model():
    return AuditModel(nn.Sequential(nn.Linear(4, 3)))


def xy(n=10):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, 2, 2, generator=g), torch.randint(0, 3, (n,), generator=g)


def test_formats_agree_and_encode(tmp_path, model):
    x, y = xy()
    torch.save({"x": x, "y": y}, tmp_path / "d.pt")
    np.savez(tmp_path / "d.npz", x=x.numpy(), y=y.numpy())
    import safetensors.torch as st

    st.save_file({"x": x, "y": y}, str(tmp_path / "d.safetensors"))
    outs = [load_data(tmp_path / f, model) for f in ("d.pt", "d.npz", "d.safetensors")]
    with torch.no_grad():
        want = model.encoder(x)
    for d in outs:
        assert torch.allclose(d.z, want) and torch.equal(d.y, y) and torch.equal(d.x, x)
        assert d.content_hash == outs[0].content_hash
    assert len(outs[0]) == 10 and outs[0].source.endswith("d.pt")


def test_encoding_in_batches_is_the_same(tmp_path, model):
    x, y = xy(25)
    a = load_data({"x": x, "y": y}, model, batch_size=4)
    b = load_data({"x": x, "y": y}, model)
    assert torch.allclose(a.z, b.z, atol=1e-6)


def test_latent_codes(tmp_path, latent_model):
    z = torch.randn(6, 4)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    d = load_data({"z": z, "y": y.float()}, latent_model)
    assert torch.equal(d.z, z) and d.y.dtype == torch.long and d.x is None


def test_pt_with_pickled_object_is_refused(tmp_path):
    torch.save({"z": torch.zeros(2, 4), "y": torch.zeros(2), "extra": object()}, tmp_path / "p.pt")
    with pytest.raises(DataError, match="weights_only"):
        load_data(tmp_path / "p.pt")


def test_missing_keys_name_the_keys_found(tmp_path, model):
    np.savez(tmp_path / "d.npz", images=np.zeros((2, 3, 2, 2)), y=np.zeros(2))
    with pytest.raises(DataError) as e:
        load_data(tmp_path / "d.npz", model)
    assert str(tmp_path / "d.npz") in str(e.value) and "x or z" in str(e.value) and "images" in str(e.value)
    with pytest.raises(DataError, match=r"missing key\(s\) \['y'\]; found keys \['z'\]"):
        load_data({"z": np.zeros((2, 4))}, model)


def test_label_count_differs(model):
    x, y = xy()
    with pytest.raises(DataError, match="10 samples in 'x' but 7 labels"):
        load_data({"x": x, "y": y[:7]}, model)


def test_labels_outside_classes(model):
    x, y = xy()
    y[3] = 5
    y[4] = -1
    with pytest.raises(DataError) as e:
        load_data({"x": x, "y": y}, model)
    assert "0..2" in str(e.value) and "rows [3, 4]" in str(e.value)
    with pytest.raises(DataError, match="integers"):
        load_data({"x": x, "y": torch.full((10,), 0.5)}, model)


@pytest.mark.parametrize("key, bad", [("x", float("nan")), ("x", float("inf")), ("z", float("-inf"))])
def test_nan_or_inf(latent_model, model, key, bad):
    x, y = xy()
    if key == "x":
        x[2, 0, 0, 0] = bad
        with pytest.raises(DataError, match=r"'x' contains NaN or inf in 1 sample\(s\), first rows \[2\]"):
            load_data({"x": x, "y": y}, model)
    else:
        z = torch.randn(10, 4)
        z[7, 1] = bad
        with pytest.raises(DataError, match=r"'z' contains NaN or inf .*\[7\]"):
            load_data({"z": z, "y": y}, latent_model)


def test_wrong_input_shape_names_expected_and_got(model):
    _, y = xy()
    with pytest.raises(DataError, match=r"shape \(3, 3, 3\) per sample, the encoder expects \(3, 2, 2\)"):
        load_data({"x": torch.randn(10, 3, 3, 3), "y": y}, model)
    # without a declared input shape the encoder's own failure is reported with the shape
    m2 = AuditModel(model.head, encoder=model.encoder)
    with pytest.raises(DataError, match=r"encoder fails on inputs 'x' of shape \(3, 3, 3\)"):
        load_data({"x": torch.randn(10, 3, 3, 3), "y": y}, m2)


def test_codes_of_wrong_size(latent_model):
    with pytest.raises(DataError, match="size 5 but the head takes d=4"):
        load_data({"z": torch.randn(3, 5), "y": torch.zeros(3)}, latent_model)


def test_inputs_without_encoder(latent_model):
    with pytest.raises(DataError, match="no encoder"):
        load_data({"x": torch.randn(3, 2, 2), "y": torch.zeros(3)}, latent_model)


def test_image_folder(tmp_path, model):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("eel", "cat"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(2):
            arr = rng.integers(0, 255, (2, 2, 3), dtype=np.uint8)
            Image.fromarray(arr).save(tmp_path / "imgs" / cls / f"{i}.png")
    d = load_data(tmp_path / "imgs", model)
    assert d.x.shape == (4, 3, 2, 2) and d.z.shape == (4, 4)
    assert d.y.tolist() == [0, 0, 2, 2]  # model.class_names order: cat=0, eel=2
    first = np.asarray(Image.open(tmp_path / "imgs" / "cat" / "0.png"), dtype=np.float32) / 255
    assert torch.allclose(d.x[0], torch.from_numpy(first.transpose(2, 0, 1)))
    with pytest.raises(DataError, match="no model was given"):  # images need an encoder
        load_data(tmp_path / "imgs")
    (tmp_path / "imgs" / "fox").mkdir()
    with pytest.raises(DataError, match=r"\['fox'\] are not classes"):
        load_data(tmp_path / "imgs", model)


def test_image_folder_sorted_order_and_size_mismatch(tmp_path, latent_model):
    from PIL import Image

    for cls, size in (("b", (2, 2)), ("a", (2, 2))):
        (tmp_path / cls).mkdir()
        Image.fromarray(np.zeros(size, dtype=np.uint8)).save(tmp_path / cls / "0.png")
    enc = nn.Sequential(nn.Flatten(), nn.Linear(4, 4))
    m = AuditModel(nn.Sequential(nn.Linear(4, 2)), encoder=enc, input_shape=(1, 2, 2))
    d = load_data(tmp_path, m)
    assert d.y.tolist() == [0, 1] and d.x.shape == (2, 1, 2, 2)
    Image.fromarray(np.zeros((3, 3), dtype=np.uint8)).save(tmp_path / "a" / "1.png")
    with pytest.raises(DataError, match=r"1.png: image of shape \(1, 3, 3\)"):
        load_data(tmp_path, m)


def test_python_source(tmp_path, monkeypatch, latent_model):
    (tmp_path / "auditai_testpkg_data.py").write_text(textwrap.dedent("""
        import torch
        DATA = {"z": torch.zeros(3, 4), "y": torch.tensor([0, 1, 2])}
        def make():
            return {"z": torch.ones(2, 4), "y": [1, 1]}
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert len(load_data("auditai_testpkg_data:DATA", latent_model)) == 3
        assert load_data("auditai_testpkg_data:make", latent_model).y.tolist() == [1, 1]
        with pytest.raises(DataError, match="no attribute"):
            load_data("auditai_testpkg_data:nope", latent_model)
    finally:
        sys.modules.pop("auditai_testpkg_data", None)


def test_corrupt_and_unknown_files(tmp_path):
    np.savez(tmp_path / "d.npz", z=np.zeros((4, 4)), y=np.zeros(4))
    data = (tmp_path / "d.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cut.npz"):
        load_data(tmp_path / "cut.npz")
    (tmp_path / "d.csv").write_text("1,2")
    with pytest.raises(DataError, match="unknown data format '.csv'"):
        load_data(tmp_path / "d.csv")
    with pytest.raises(DataError, match="no such file"):
        load_data(tmp_path / "nope.npz")
