"""Plain values of the spec-sheet record: JSON-safe conversion, the gate, versions, the
model/data blocks and atomic writes. numpy only (torch is never imported here).
"""

from __future__ import annotations

import importlib.metadata
import math
import os
import platform
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from auditai.errors import SheetError


# --------------------------------------------------------------------------- helpers
def _get(obj: Any, name: str, default: Any = None) -> Any:
    """Attribute or key `name` of a result object or its dict form."""
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _f(x: Any) -> float | None:
    """A JSON-safe float (NaN → None)."""
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else x


def _floats(xs: Any) -> list[float]:
    if hasattr(xs, "tolist"):
        xs = xs.tolist()
    return [float(x) for x in xs]


def _jsonable(x: Any) -> Any:
    """Plain JSON values from tensors, arrays, tuples and dataclass-like objects."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().tolist()
    elif isinstance(x, np.ndarray):
        x = x.tolist()
    elif isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return None if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    if hasattr(x, "to_dict"):
        return _jsonable(x.to_dict())
    if hasattr(x, "__dataclass_fields__"):
        return {k: _jsonable(getattr(x, k)) for k in x.__dataclass_fields__}
    return str(x)


def _req(d: Any, key: str, where: str) -> Any:
    if not isinstance(d, dict):
        raise SheetError(f"{where}: expected an object, got {type(d).__name__}")
    if key not in d:
        raise SheetError(f"{where}: missing key '{key}'")
    return d[key]


def _eps_close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def gate_passes(verified_error: float, max_verified_error: float | None, min_verified_accuracy: float | None) -> bool | None:
    """The gate of a unit test (None when it has no threshold), as `UnitTest.gate`: the verified
    error is at most the threshold error (ties pass; 1e-12 for rounding)."""
    thr = threshold_error(max_verified_error, min_verified_accuracy)
    if thr is None:
        return None
    return float(verified_error) <= thr + 1e-12


def threshold_error(max_verified_error: float | None, min_verified_accuracy: float | None) -> float | None:
    """The largest verified error the gate allows."""
    cands = [t for t in (max_verified_error, None if min_verified_accuracy is None else 1.0 - min_verified_accuracy) if t is not None]
    return min(cands) if cands else None


def current_versions() -> dict:
    """auditai, torch, numpy and Python versions."""
    import auditai

    try:
        v = {"auditai": str(auditai.__version__)}
    except AttributeError:  # a namespace-package view of an editable install
        v = {"auditai": importlib.metadata.version("auditai")}
    torch = sys.modules.get("torch")
    if torch is not None:
        v["torch"] = str(torch.__version__)
    else:  # do not import torch just to name its version
        try:
            v["torch"] = importlib.metadata.version("torch")
        except importlib.metadata.PackageNotFoundError:  # pragma: no cover
            v["torch"] = None
    v["numpy"] = np.__version__
    v["python"] = platform.python_version()
    return v



_PATHLIKE = re.compile(r"[^\s]*[/\\][^\s]*")


def public_name(source: Any) -> Any:
    """The name a handed-out sheet gives an input: its file name, never the folders of the
    machine that built the sheet (the content hash beside it says which file it was).
    "pkg.module:attr" and names without a folder stay as they are; None stays None."""
    if source is None:
        return None
    s = str(source)
    if "/" not in s and "\\" not in s:
        return s
    return re.split(r"[/\\]", s.rstrip("/\\"))[-1] or s


def public_text(text: Any) -> Any:
    """`text` with every path in it (a word holding / or \\) cut to its file name."""
    if text is None:
        return None
    return _PATHLIKE.sub(lambda m: public_name(m.group(0)), str(text))


def _named(block: dict) -> dict:
    """A copy of a model/data block with its source cut to the file name."""
    out = dict(block)
    if out.get("source") is not None:
        out["source"] = public_name(out["source"])
    return out


def model_info(model: Any) -> dict:
    """The model block: source, sha256, sizes, decoder present, class names."""
    if model is None:
        return {}
    if isinstance(model, dict):
        return _named(model)
    return _jsonable(
        {
            "source": public_name(_get(model, "source")),
            "sha256": _get(model, "content_hash"),
            "latent_dim": _get(model, "latent_dim"),
            "num_outputs": _get(model, "num_outputs"),
            "has_decoder": _get(model, "decoder") is not None,
            "class_names": _get(model, "class_names"),
        }
    )


def data_info(data: Any) -> dict:
    """The data block: source, sha256, number of samples."""
    if data is None:
        return {}
    if isinstance(data, dict) and "z" not in data:
        return _named(data)
    z = _get(data, "z")
    n = None if z is None else int(z.shape[0] if hasattr(z, "shape") else len(z))
    return _jsonable({"source": public_name(_get(data, "source")), "sha256": _get(data, "content_hash"), "n": n})



def new_file_mode() -> int:
    """The mode `open()` gives a new file: 0o666 less the process's umask (read by setting it
    and restoring it at once; there is no other portable way)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def write_atomic(path: str | os.PathLike, text: str) -> None:
    """Write text to path via a temporary file in the same folder and os.replace; the file's
    mode follows the umask as a plain `open()` would (mkstemp's own mode is 0o600)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=str(p.parent))
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, new_file_mode())
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
