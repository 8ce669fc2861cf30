"""auditai: semantic unit tests for trained models, verified by bound propagation (AuditAI).

Public names are imported lazily so that `import auditai` stays cheap for the pytest plugin.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "LatentSet": "auditai.latent",
    "Dims": "auditai.latent",
    "Direction": "auditai.latent",
    "Basis": "auditai.latent",
    "bound": "auditai.bounds",
    "verify": "auditai.verify",
    "VerificationResult": "auditai.verify",
    "AuditModel": "auditai.model",
    "save_model": "auditai.model",
    "load_model": "auditai.model",
    "load_data": "auditai.data",
    "load_onnx_graph": "auditai.onnx_graph",
    "load_onnx_head": "auditai.onnx_io",
    "invert": "auditai.inversion",
    "Inversion": "auditai.inversion",
    "SpecSheet": "auditai.sheet",
    "unit_test": "auditai.suite",
    "AuditaiError": "auditai.errors",
    "UnsupportedLayerError": "auditai.errors",
    "SuiteError": "auditai.errors",
    "ModelFileError": "auditai.errors",
    "DataError": "auditai.errors",
    "ModelError": "auditai.errors",
    "SheetError": "auditai.errors",
    "SpecError": "auditai.errors",
    "InputError": "auditai.errors",
    "InputTypeError": "auditai.errors",
    "ChoiceError": "auditai.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'auditai' has no attribute {name!r}")
