"""Fashion-MNIST from the IDX files Debian ships, and attributes measured from the images.

Debian's package ``dataset-fashion-mnist`` puts the original IDX ``.gz`` files under
:data:`DEFAULT_DIR`; :func:`load_fashion_mnist` reads them from there or from a folder the user
names (``.gz`` or plain). Where neither exists, :func:`load_digits_fallback` returns the 8×8
digits scikit-learn ships inside its wheel, upsampled, so the demo still runs.

:func:`to_canvas` pads the 28×28 images to 32×32 at a seeded random offset (a known
position factor), and :func:`measure_attributes` measures semantic attributes from the pixels
(ink area, bounding box, centre of mass, slant from image moments), vectorised over the batch.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from auditai.errors import DataError

DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASS_NAMES: tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_DTYPES = {
    0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8"),
}
INK_THRESHOLD = 0.2  # a pixel is "ink" above this intensity (for area and the bounding box)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (optionally gzip-compressed) into an array of its stated shape.

    Format (LeCun et al.): two zero bytes, a type byte, the number of dimensions, then one
    big-endian uint32 per dimension, then the data in row-major order.
    """
    path = Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as fh:
            raw = fh.read()
    except OSError as e:
        raise DataError(f"{path}: cannot read IDX file: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path}: not an IDX file (expected the magic bytes 00 00 <type> <ndim>)")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise DataError(f"{path}: unknown IDX data type 0x{code:02x} (expected one of "
                        f"{', '.join(f'0x{c:02x}' for c in _IDX_DTYPES)})")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header ({len(raw)} bytes for {ndim} dimensions)")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[code])
    count = int(np.prod(shape)) if shape else 1
    if len(raw) - header != count * dtype.itemsize:
        raise DataError(f"{path}: IDX header says shape {shape} ({count * dtype.itemsize} bytes of "
                        f"data) but the file holds {len(raw) - header} bytes after the header")
    return np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(shape).astype(
        dtype.newbyteorder("="), copy=True)


def _find(folder: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx") + ".gz"):
        p = folder / name
        if p.is_file():
            return p
    raise DataError(f"{folder}: no file {stem}.gz or {stem} (the Fashion-MNIST IDX files; on "
                    "Debian/Ubuntu `apt-get install dataset-fashion-mnist` puts them in "
                    f"{DEFAULT_DIR})")


def load_fashion_mnist(folder: str | os.PathLike | None = None, split: str = "train",
                       limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images (float32 N×1×28×28 in [0, 1]) and labels (int64 N) of one split.

    `folder` defaults to the environment variable AUDITAI_FASHION_MNIST, then :data:`DEFAULT_DIR`.
    `limit` keeps the first `limit` images (the files' own order).
    """
    if split not in FILES:
        raise DataError(f"split must be one of {sorted(FILES)}, got {split!r}")
    folder = Path(folder or os.environ.get("AUDITAI_FASHION_MNIST") or DEFAULT_DIR)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder (expected the Fashion-MNIST IDX files; "
                        "`apt-get install dataset-fashion-mnist` or name a folder)")
    img_path, lab_path = (_find(folder, s) for s in FILES[split])
    images, labels = read_idx(img_path), read_idx(lab_path)
    if images.ndim != 3:
        raise DataError(f"{img_path}: expected N×H×W images, got shape {images.shape}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise DataError(f"{lab_path}: {labels.shape} labels for {images.shape[0]} images in {img_path}")
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    x = images.astype(np.float32)[:, None] / 255.0
    return x, labels.astype(np.int64)


def load_digits_fallback(size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8×8 digits (1,797 images, shipped in its wheel), upsampled to size×size.

    Nearest-neighbour upsampling by `size // 8` (size a multiple of 8); float32 N×1×size×size
    in [0, 1], labels 0..9.
    """
    try:
        from sklearn.datasets import load_digits  # optional: only for the fallback
    except ImportError:
        raise DataError("neither the Fashion-MNIST IDX files nor scikit-learn are available: "
                        "`apt-get install dataset-fashion-mnist` or `pip install scikit-learn`") from None
    d = load_digits()
    f = size // 8
    x = (d.images.astype(np.float32) / 16.0).repeat(f, axis=1).repeat(f, axis=2)[:, None]
    return x, d.target.astype(np.int64)


def to_canvas(x: np.ndarray, size: int = 32, seed: int | None = 0) -> tuple[np.ndarray, np.ndarray]:
    """Pad N×1×h×w images into size×size canvases at a seeded random offset (None: centred).

    Returns the canvases and the offsets (N×2: rows, columns from the top-left), which are a
    known position factor. Vectorised: one fancy-indexed assignment.
    """
    n, c, h, w = x.shape
    if h > size or w > size:
        raise DataError(f"images of {h}×{w} do not fit a {size}×{size} canvas")
    if seed is None:
        off = np.tile(np.array([(size - h) // 2, (size - w) // 2]), (n, 1))
    else:
        rng = np.random.default_rng(seed)
        off = np.stack([rng.integers(0, size - h + 1, n), rng.integers(0, size - w + 1, n)], 1)
    out = np.zeros((n, c, size, size), dtype=np.float32)
    rows = off[:, 0, None, None] + np.arange(h)[None, :, None]
    cols = off[:, 1, None, None] + np.arange(w)[None, None, :]
    idx = np.arange(n)[:, None, None]
    for ch in range(c):
        out[idx, ch, rows, cols] = x[:, ch]
    return out, off


def measure_attributes(x: np.ndarray, threshold: float = INK_THRESHOLD) -> dict[str, np.ndarray]:
    """Semantic attributes measured from images N×1×H×W (or N×H×W) in [0, 1], vectorised.

    - ``area``: fraction of pixels with ink (> threshold)
    - ``width``, ``height``: bounding box of the ink, in pixels
    - ``x``, ``y``: centre of mass (intensity-weighted), in pixels (x right, y down)
    - ``slant``: μ11/μ02 from central moments, the horizontal shear per row (positive when
      the top leans right, as in MNIST deskewing)
    - ``brightness``: mean intensity over the ink pixels
    An image without ink gets zeros rather than NaN.
    """
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 4:
        if a.shape[1] != 1:
            raise DataError(f"measure_attributes needs one channel, got shape {a.shape}")
        a = a[:, 0]
    if a.ndim != 3:
        raise DataError(f"measure_attributes needs N×1×H×W or N×H×W images, got shape {a.shape}")
    _n, h, w = a.shape
    ink = a > threshold
    count = ink.sum(axis=(1, 2))
    rows_any, cols_any = ink.any(axis=2), ink.any(axis=1)
    top = rows_any.argmax(axis=1)
    bottom = h - 1 - rows_any[:, ::-1].argmax(axis=1)
    left = cols_any.argmax(axis=1)
    right = w - 1 - cols_any[:, ::-1].argmax(axis=1)
    has = count > 0
    mass = a.sum(axis=(1, 2))
    safe = np.where(mass > 0, mass, 1.0)
    ys = np.arange(h, dtype=np.float64) + 0.5
    xs = np.arange(w, dtype=np.float64) + 0.5
    cy = (a.sum(axis=2) * ys).sum(axis=1) / safe
    cx = (a.sum(axis=1) * xs).sum(axis=1) / safe
    dy = ys[None, :, None] - cy[:, None, None]
    dx = xs[None, None, :] - cx[:, None, None]
    mu11 = (a * dx * dy).sum(axis=(1, 2)) / safe
    mu02 = (a * dy * dy).sum(axis=(1, 2)) / safe
    # rows grow downwards: a shape whose top leans right has x falling as the row index grows
    slant = -mu11 / np.where(mu02 > 0, mu02, 1.0)
    return {
        "area": count / float(h * w),
        "width": np.where(has, right - left + 1, 0).astype(np.float64),
        "height": np.where(has, bottom - top + 1, 0).astype(np.float64),
        "x": np.where(mass > 0, cx, 0.0),
        "y": np.where(mass > 0, cy, 0.0),
        "slant": np.where(mass > 0, slant, 0.0),
        "brightness": np.where(has, (a * ink).sum(axis=(1, 2)) / np.maximum(count, 1), 0.0),
    }
