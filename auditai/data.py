"""Data for unit tests: latent codes z0 = e(x) and labels (paper §2.2: the sets are centred on codes).

`load_data` reads `.pt` (torch.load with weights_only=True: no code runs), `.npz` (no pickle),
`.safetensors`, a folder of images in class sub-folders, or "package.module:attribute" naming a
mapping (or a function returning one) with keys `x` or `z`, and `y`. Inputs `x` are encoded in
batches by the model's encoder. Every error names the source and the problem.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from auditai.errors import DataError
from auditai.python_ref import import_attribute

if TYPE_CHECKING:
    from auditai.model import AuditModel

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
_PY_SOURCE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_.]*$")


@dataclass
class AuditData:
    """Codes and labels a unit test runs on.

    z: N×d latent codes (encoded when the source held inputs x); y: N labels (long);
    x: the inputs when the source held them; content_hash: sha256 of the source's arrays;
    source: what the user named.
    """

    z: Tensor
    y: Tensor
    x: Tensor | None
    content_hash: str
    source: str
    reconstruction_error: Tensor | None = None  # N relative errors when z came from GAN inversion

    def __len__(self) -> int:
        return int(self.z.shape[0])


def _hash(arrays: Mapping[str, Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(arrays):
        t = arrays[k].detach().cpu().contiguous()
        h.update(f"{k}:{t.dtype}:{tuple(t.shape)}\0".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def _to_tensor(v: Any, key: str, where: str) -> Tensor:
    if isinstance(v, Tensor):
        return v.detach().cpu()
    try:
        arr = np.asarray(v)
        if arr.dtype != object:
            return torch.from_numpy(np.ascontiguousarray(arr))
        why = "holds Python objects, not numbers"
    except (TypeError, ValueError) as e:
        why = str(e)
    raise DataError(f"{where}: key '{key}' is not an array of numbers ({why})")


def _read_file(path: Path, where: str) -> dict[str, Any]:
    suf = path.suffix.lower()
    if suf in (".pt", ".pth"):
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001
            raise DataError(
                f"{where}: cannot load with torch.load(weights_only=True) (a data file must hold "
                f"only tensors in a dict with keys 'x' or 'z', and 'y'; pickled objects are refused): {e}"
            ) from None
    elif suf == ".npz":
        try:
            with np.load(path, allow_pickle=False) as f:
                obj = {k: f[k] for k in f.files}
        except Exception as e:  # noqa: BLE001
            raise DataError(f"{where}: cannot read the .npz file (truncated, corrupt, or holding pickled objects): {e}") from None
    elif suf == ".safetensors":
        import safetensors.torch as st

        try:
            obj = st.load_file(str(path))
        except Exception as e:  # noqa: BLE001
            raise DataError(f"{where}: cannot read the .safetensors file: {e}") from None
    else:
        raise DataError(f"{where}: unknown data format {suf!r} (expected .pt, .npz, .safetensors, a folder of images, or package.module:attribute)")
    if not isinstance(obj, Mapping):
        raise DataError(f"{where}: expected a dict with keys 'x' or 'z', and 'y', got {type(obj).__name__}")
    return dict(obj)


def _read_images(folder: Path, where: str, class_names: list[str] | None) -> dict[str, Any]:
    from PIL import Image

    subs = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subs:
        raise DataError(f"{where}: a data folder needs one sub-folder per class holding images; found none")
    if class_names is not None:
        unknown = [s for s in subs if s not in class_names]
        if unknown:
            raise DataError(f"{where}: sub-folder(s) {unknown} are not classes of the model ({class_names})")
        order = list(class_names)
    else:
        order = subs
    xs, ys, shape0, first = [], [], None, None
    for label, cls in enumerate(order):
        d = folder / cls
        if not d.is_dir():
            continue
        for f in sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            try:
                with Image.open(f) as im:
                    im = im.convert("L") if im.mode in ("L", "1", "I;16", "I") else im.convert("RGB")
                    a = np.asarray(im, dtype=np.float32) / 255.0
            except Exception as e:  # noqa: BLE001
                raise DataError(f"{f}: cannot read the image: {e}") from None
            a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
            if shape0 is None:
                shape0, first = a.shape, f
            elif a.shape != shape0:
                raise DataError(f"{f}: image of shape {a.shape} (C×H×W), but {first} has {shape0}: all images must have one size")
            xs.append(a)
            ys.append(label)
    if not xs:
        raise DataError(f"{where}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in the class sub-folders")
    return {"x": np.stack(xs), "y": np.asarray(ys, dtype=np.int64)}


def _read_python(spec: str) -> dict[str, Any]:
    obj = import_attribute(spec, DataError)
    if callable(obj) and not isinstance(obj, Mapping):
        obj = obj()
    if not isinstance(obj, Mapping):
        raise DataError(f"{spec}: expected a mapping with keys 'x' or 'z', and 'y' (or a function returning one), got {type(obj).__name__}")
    return dict(obj)


def _finite(t: Tensor, key: str, where: str) -> None:
    if t.is_floating_point() and not torch.isfinite(t).all():
        bad = (~torch.isfinite(t.reshape(t.shape[0], -1))).any(1).nonzero().flatten()
        raise DataError(f"{where}: '{key}' contains NaN or inf in {bad.numel()} sample(s), first rows {bad[:5].tolist()}")


def load_data(source: str | Path | Mapping[str, Any], model: AuditModel | None = None, device=None,
              batch_size: int = 1024) -> AuditData:
    """Load codes and labels; encode inputs x with `model.encoder` in batches on `device`.

    Checks: keys present, labels 1-D integers of the same count as samples and inside the head's
    classes, no NaN/inf, inputs of the encoder's shape, codes of the head's size d.
    """
    if isinstance(source, Mapping):
        where, raw = "<mapping>", dict(source)
    else:
        where = str(source)
        path = Path(source)
        if path.is_dir():
            raw = _read_images(path, where, model.class_names if model is not None else None)
        elif path.exists():
            raw = _read_file(path, where)
        elif isinstance(source, str) and _PY_SOURCE.match(source):
            raw = _read_python(source)
        else:
            raise DataError(f"{where}: no such file or folder (give .pt, .npz, .safetensors, an image folder, or package.module:attribute)")

    if "y" not in raw or ("x" not in raw and "z" not in raw):
        missing = [k for k in ("x or z" if "x" not in raw and "z" not in raw else None, "y" if "y" not in raw else None) if k]
        raise DataError(f"{where}: missing key(s) {missing}; found keys {sorted(map(str, raw))} (expected 'x' (inputs) or 'z' (latent codes), and 'y' (labels))")
    arrays = {k: _to_tensor(raw[k], k, where) for k in ("x", "z", "y") if k in raw}

    y = arrays["y"]
    if y.dim() == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.dim() != 1:
        raise DataError(f"{where}: labels 'y' must be one label per sample (shape (N,)), got shape {tuple(y.shape)}")
    if y.is_floating_point():
        _finite(y.unsqueeze(1), "y", where)
        if not torch.equal(y, y.round()):
            raise DataError(f"{where}: labels 'y' must be integers (class indices), got fractional values")
    elif y.dtype == torch.bool:
        y = y.long()
    y = y.long()

    n = int(y.shape[0])
    for k in ("x", "z"):
        if k in arrays:
            t = arrays[k]
            if t.dim() == 0 or t.shape[0] != n:
                got = t.shape[0] if t.dim() else 0
                raise DataError(f"{where}: {got} samples in '{k}' but {n} labels in 'y': they must match")
            if not t.is_floating_point():
                t = t.to(torch.get_default_dtype())
            _finite(t, k, where)
            arrays[k] = t

    if model is not None and n:
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= model.num_classes:
            bad = ((y < 0) | (y >= model.num_classes)).nonzero().flatten()
            raise DataError(
                f"{where}: labels outside the head's classes 0..{model.num_classes - 1}: "
                f"{sorted(set(y[bad].tolist()))[:5]} at rows {bad[:5].tolist()}"
            )

    x = arrays.get("x")
    recon = None
    if "z" in arrays:
        z = arrays["z"]
    elif model is not None and model.encoder is not None:
        assert x is not None
        if model.input_shape is not None and tuple(x.shape[1:]) != tuple(model.input_shape):
            raise DataError(f"{where}: inputs 'x' have shape {tuple(x.shape[1:])} per sample, the encoder expects {tuple(model.input_shape)}")
        param = next(iter(model.encoder.parameters()), None)
        if param is not None and x.dtype != param.dtype:
            x = x.to(param.dtype)
        try:
            z = model.encode(x, batch_size=batch_size, device=device)
        except Exception as e:  # noqa: BLE001
            raise DataError(f"{where}: the encoder fails on inputs 'x' of shape {tuple(x.shape[1:])} per sample: {e}") from None
        _finite(z, "z (encoded)", where)
    elif model is not None and model.decoder is not None and x is not None and not (
            x.dim() == 2 and x.shape[1] == model.latent_dim):
        from auditai.inversion import encode_inputs  # GAN inversion (paper §2.3)

        try:
            z, inv = encode_inputs(model, x, device=device)
        except DataError as e:
            raise DataError(f"{where}: {e}") from None
        recon = inv.relative_error if inv is not None else None
    else:
        assert x is not None
        if x.dim() != 2:
            raise DataError(
                f"{where}: the data holds inputs 'x' of shape {tuple(x.shape[1:])} per sample but "
                + ("no model was given to encode them" if model is None
                   else "the model has no encoder (and no decoder for GAN inversion)")
                + ": give latent codes 'z', or a model with an encoder or a decoder"
            )
        z = x
    if z.dim() != 2:
        raise DataError(f"{where}: latent codes must be N×d, got shape {tuple(z.shape)}")
    if model is not None and z.shape[1] != model.latent_dim:
        raise DataError(f"{where}: codes have size {z.shape[1]} but the head takes d={model.latent_dim}")
    return AuditData(z=z, y=y, x=x, content_hash=_hash(arrays), source=where, reconstruction_error=recon)


__all__ = ["AuditData", "load_data"]
