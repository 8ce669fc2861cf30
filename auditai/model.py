"""The audited model and its file, under one name: `AuditModel`, `save_model`, `load_model`.

The rooms behind it (each imports only the ones above it):

- `auditai.audit_model`: `AuditModel` (f = f_d ∘ e, paper §2.1), holding and checking the parts;
- `auditai.model_programs`: encoder/decoder as `torch.export` programs, read back running no code;
- `auditai.model_file`: the file format (a zip that runs no code when loaded), `save_model`,
  `model_content_hash`, the head's layer descriptions;
- `auditai.model_load`: `load_model` (auditai file, ONNX head, "package.module:attribute", a
  trusted pickle).

The bound engine imports none of them.
"""

from __future__ import annotations

from auditai.audit_model import AuditModel
from auditai.model_file import (
    CHAIN_FORMAT_VERSION,
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST,
    READABLE_VERSIONS,
    SUPPORTED_HEAD_MODULES,
    TENSORS,
    build_head,
    describe_head,
    model_content_hash,
    save_model,
)
from auditai.model_load import load_model

__all__ = [
    "CHAIN_FORMAT_VERSION",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MANIFEST",
    "READABLE_VERSIONS",
    "SUPPORTED_HEAD_MODULES",
    "TENSORS",
    "AuditModel",
    "build_head",
    "describe_head",
    "load_model",
    "model_content_hash",
    "save_model",
]
