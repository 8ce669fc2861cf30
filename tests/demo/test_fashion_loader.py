"""The IDX loader (on tiny IDX files written here), canvas padding and measured attributes."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from auditai.demo import fashion
from auditai.errors import DataError


def write_idx(path, arr: np.ndarray, code: int = 0x08, compress: bool = True) -> None:
    data = struct.pack(">BBBB", 0, 0, code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    data += arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    (gzip.open if compress else open)(path, "wb").write(data)


@pytest.fixture
def idx_folder(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", imgs)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", imgs[:2], compress=False)  # plain files too
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels[:2], compress=False)
    return tmp_path, imgs, labels


def test_reads_gzipped_and_plain_idx(idx_folder):
    folder, imgs, labels = idx_folder
    x, y = fashion.load_fashion_mnist(folder, "train")
    assert x.shape == (5, 1, 28, 28) and x.dtype == np.float32
    assert np.allclose(x[:, 0] * 255.0, imgs) and np.array_equal(y, labels)
    xt, yt = fashion.load_fashion_mnist(folder, "test")
    assert np.array_equal(yt, labels[:2]) and np.allclose(xt[:, 0] * 255, imgs[:2])
    x3, y3 = fashion.load_fashion_mnist(folder, "train", limit=3)
    assert x3.shape[0] == 3 and np.array_equal(y3, labels[:3])


def test_read_idx_other_types(tmp_path):
    a = np.arange(12, dtype=np.int32).reshape(3, 4) - 5
    write_idx(tmp_path / "a.idx", a, code=0x0C, compress=False)
    assert np.array_equal(fashion.read_idx(tmp_path / "a.idx"), a)


def test_bad_idx_files_are_named(tmp_path, idx_folder):
    bad = tmp_path / "bad.idx"
    bad.write_bytes(b"\x01\x02\x08\x01" + b"\0" * 8)
    with pytest.raises(DataError, match="bad.idx: not an IDX file"):
        fashion.read_idx(bad)
    short = tmp_path / "short.idx"
    short.write_bytes(struct.pack(">BBBBI", 0, 0, 8, 1, 10) + b"\0" * 4)
    with pytest.raises(DataError, match=r"short.idx: IDX header says shape \(10,\)"):
        fashion.read_idx(short)
    with pytest.raises(DataError, match="no such folder"):
        fashion.load_fashion_mnist(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no file train-images-idx3-ubyte"):
        fashion.load_fashion_mnist(empty)
    folder, _imgs, _ = idx_folder
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.zeros(4, dtype=np.uint8))
    with pytest.raises(DataError, match=r"\(4,\) labels for 5 images"):
        fashion.load_fashion_mnist(folder)


def test_to_canvas_offsets_are_a_known_position_factor():
    x = np.zeros((50, 1, 28, 28), dtype=np.float32)
    x[:, 0, 10:18, 12:16] = 1.0  # a block with its centre of mass at (14, 14)
    c, off = fashion.to_canvas(x, 32, seed=3)
    assert c.shape == (50, 1, 32, 32) and off.min() >= 0 and off.max() <= 4
    assert c.sum() == pytest.approx(x.sum())
    attrs = fashion.measure_attributes(c)
    assert np.allclose(attrs["x"], 14.0 + off[:, 1]) and np.allclose(attrs["y"], 14.0 + off[:, 0])
    _centred, off0 = fashion.to_canvas(x, 32, seed=None)
    assert (off0 == 2).all()


def test_measured_attributes_on_known_shapes():
    img = np.zeros((3, 1, 20, 20))
    img[0, 0, 2:12, 5:9] = 1.0          # 10 tall, 4 wide
    img[1, 0, 0:20, 0:20] = 0.5         # all grey
    for r in range(10):                 # a bar leaning right at the top: x shifts 1 px per row up
        img[2, 0, 5 + r, 10 - r:12 - r] = 1.0
    a = fashion.measure_attributes(img)
    assert a["height"][0] == 10 and a["width"][0] == 4 and a["area"][0] == pytest.approx(40 / 400)
    assert a["x"][0] == pytest.approx(7.0) and a["y"][0] == pytest.approx(7.0)
    assert a["slant"][0] == pytest.approx(0.0)
    assert a["brightness"][1] == pytest.approx(0.5) and a["width"][1] == 20
    assert a["slant"][2] == pytest.approx(1.0, rel=0.05)
    empty = fashion.measure_attributes(np.zeros((1, 1, 8, 8)))
    assert all(np.isfinite(v).all() and v[0] == 0 for v in empty.values())


@pytest.mark.skipif(not fashion.DEFAULT_DIR.is_dir(), reason="dataset-fashion-mnist not installed")
def test_the_debian_files_when_installed():
    x, y = fashion.load_fashion_mnist(split="test", limit=100)
    assert x.shape == (100, 1, 28, 28) and 0.0 <= x.min() and x.max() <= 1.0
    assert set(np.unique(y)) <= set(range(10))
