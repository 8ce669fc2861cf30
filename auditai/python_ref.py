"""`package.module:attribute` references: the object a user names in Python (a model, a data
set, a part of a model), imported on their request. One resolver for the model loader, the
data loader and the black-box parts, so the three say the same thing when a name is wrong."""

from __future__ import annotations

import importlib
from typing import Any


def import_attribute(spec: str, error: type[Exception]) -> Any:
    """The object `spec` ("package.module:attr.sub") names; `error(message)` when the module
    cannot be imported or has no such attribute. Imports run the module's code: the user named it."""
    mod_name, _, attr = spec.partition(":")
    try:
        obj: Any = importlib.import_module(mod_name)
    except ImportError as e:
        raise error(f"{spec}: cannot import module {mod_name!r}: {e}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise error(f"{spec}: module {mod_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj
