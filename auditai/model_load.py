"""`load_model`: a model from an auditai file, an ONNX head, "package.module:attribute" or, when
trusted, a torch.save pickle (the reading side of `auditai.model_file`)."""

from __future__ import annotations

import hashlib
import io
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from auditai.audit_model import AuditModel
from auditai.errors import ModelFileError
from auditai.model_file import MANIFEST, _read_auditai_zip, model_content_hash
from auditai.python_ref import import_attribute

_PICKLE_HELP = (
    "it is a pickle (torch.save of a module or a dict of modules), and loading a pickle can run "
    "arbitrary code from the file. Ask the designer to save it with auditai.save_model(path, "
    "AuditModel(head, encoder=...)), or, if you trust the file, pass trust_pickle=True "
    "(--auditai-trust-pickle)"
)


def _from_object(obj: Any, where: str) -> AuditModel:
    if isinstance(obj, AuditModel):
        return obj
    if isinstance(obj, nn.Module):
        return AuditModel(obj)
    if isinstance(obj, Mapping) and "head" in obj:
        keys = {"head", "encoder", "decoder", "classifier", "directions", "dims", "class_names", "metadata", "input_shape", "latent_dim"}
        extra = sorted(set(obj) - keys)
        if extra:
            raise ModelFileError(f"{where}: unknown key(s) {extra}; expected some of {sorted(keys)}")
        return AuditModel(**obj)
    found = sorted(obj) if isinstance(obj, Mapping) else type(obj).__name__
    raise ModelFileError(f"{where}: expected an AuditModel, an nn.Module or a dict with a 'head' key, got {found}")


def _load_python(spec: str) -> AuditModel:
    obj = import_attribute(spec, ModelFileError)
    if callable(obj) and not isinstance(obj, (nn.Module, AuditModel)):
        obj = obj()
    try:
        model = _from_object(obj, spec)
    except (TypeError, ValueError) as e:
        if isinstance(e, ModelFileError):
            raise
        raise ModelFileError(f"{spec}: {e}") from None
    model.source = spec
    if model.content_hash is None:
        model.content_hash = model_content_hash(model)
    return model


_PY_SOURCE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_.]*$")


def load_model(source: str | Path | AuditModel, trust_pickle: bool = False) -> AuditModel:
    """Load a model from an auditai file, an ONNX head, or "package.module:attribute".

    A plain torch.save pickle is refused unless `trust_pickle=True` (a pickle can run code).
    Sets `model.content_hash` (sha256) and `model.source`.
    """
    if isinstance(source, AuditModel):
        return source
    path = Path(source)
    where = str(source)
    if not path.exists():
        if isinstance(source, str) and _PY_SOURCE.match(source):
            return _load_python(source)
        raise ModelFileError(f"{where}: no such file (give a model file, an .onnx head, or package.module:attribute)")
    if path.is_dir():
        raise ModelFileError(f"{where}: is a directory, expected a model file")
    data = path.read_bytes()
    if not data:
        raise ModelFileError(f"{where}: the file is empty")
    if path.suffix.lower() == ".onnx":
        from auditai.onnx_io import load_onnx_head

        model = AuditModel(load_onnx_head(data, where))
        model.content_hash = hashlib.sha256(data).hexdigest()
        model.source = where
        return model
    model: AuditModel
    if data[:4] == b"PK\x03\x04":
        try:
            zf = zipfile.ZipFile(io.BytesIO(data))
            names = zf.namelist()
        except (zipfile.BadZipFile, EOFError, ValueError) as e:
            raise ModelFileError(f"{where}: the file is truncated or corrupt (not a readable zip archive: {e})") from None
        if MANIFEST in names:
            model = _read_auditai_zip(zf, where)
        elif any(n.endswith("data.pkl") for n in names):
            model = _load_pickle(path, where, trust_pickle)
        else:
            raise ModelFileError(f"{where}: a zip archive but not an auditai model file (no {MANIFEST})")
    elif data[:1] == b"\x80" or data[:2] == b"\x8a\x0a":
        model = _load_pickle(path, where, trust_pickle)
    else:
        raise ModelFileError(
            f"{where}: not a model file auditai knows (expected an auditai_model zip from "
            "auditai.save_model, an .onnx head, or a torch.save pickle with trust_pickle=True)"
        )
    model.source = where
    return model


def _load_pickle(path: Path, where: str, trust_pickle: bool) -> AuditModel:
    if not trust_pickle:
        raise ModelFileError(f"{where}: refusing to load: {_PICKLE_HELP}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001
        raise ModelFileError(f"{where}: cannot unpickle the file: {e}") from None
    try:
        model = _from_object(obj, where)
    except ModelFileError:
        raise
    except (TypeError, ValueError) as e:
        raise ModelFileError(f"{where}: {e}") from None
    model.content_hash = hashlib.sha256(path.read_bytes()).hexdigest()
    return model

