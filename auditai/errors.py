"""One base error for auditai, with subclasses that carry the context a user needs to act.

Every error names what the user wrote (a file, a line, a key, a layer, sizes) and what was
expected. Library code raises these; the plugin and the CLI only render them.
"""

from __future__ import annotations


class AuditaiError(Exception):
    """Base class of every error auditai raises on purpose."""


class UnsupportedLayerError(AuditaiError, TypeError):
    """A head contains a module the bound engine cannot bound soundly.

    Raised instead of ever returning a silent (and possibly unsound) bound.
    """

    def __init__(self, module_type: str, position: str, hint: str = "") -> None:
        self.module_type = module_type
        self.position = position
        msg = f"unsupported layer {module_type} at {position}: the bound engine cannot bound it"
        if hint:
            msg += f" ({hint})"
        super().__init__(msg)


class ModelError(AuditaiError, ValueError):
    """An AuditModel whose parts do not fit together (names the part, the sizes, the direction)."""


class ModelFileError(ModelError):
    """A model file or model source cannot be loaded (names the file and the problem)."""


class DataError(AuditaiError, ValueError):
    """A data source cannot be loaded or does not fit the model (names the file and the problem)."""


class SuiteError(AuditaiError, ValueError):
    """A mistake in a YAML suite or unit-test definition: names the file, the line and the key."""

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        key: str | None = None,
    ) -> None:
        self.path, self.line, self.key, self.message = path, line, key, message
        where = ""
        if path is not None:
            where = str(path)
            if line is not None:
                where += f":{line}"
        if key is not None:
            where = f"{where} key '{key}'" if where else f"key '{key}'"
        super().__init__(f"{where}: {message}" if where else message)


class SheetError(AuditaiError, ValueError):
    """A spec-sheet file is malformed or of an unknown schema version."""


class ChoiceError(AuditaiError, ValueError):
    """A name that is not one of the vocabulary's (a method, engine, spec kind, set kind, norm).

    The message lists the choices and the closest one; `what`, `value`, `choices`,
    `suggestion` and `expected` let a caller (the suite, the plugin's options) re-word it with its own context.
    """

    def __init__(self, what: str, value: object, choices: tuple, suggestion: str | None = None) -> None:
        self.what, self.value, self.choices, self.suggestion = what, value, tuple(choices), suggestion
        listed = ", ".join(f"'{c}'" if isinstance(c, str) else str(c) for c in self.choices)
        hint = f"; did you mean '{suggestion}'?" if suggestion else ""
        #: "expected one of ...; did you mean ...?" (the message after the value)
        self.expected = f"expected one of {listed}{hint}"
        super().__init__(f"unknown {what} {value!r}: {self.expected}")


class SpecError(AuditaiError, ValueError):
    """A specification that does not fit the head or the labels (names the kind and the sizes)."""


class InputError(AuditaiError, ValueError):
    """An argument given to the library's functions (or an option given to the CLI) that is out
    of range or of the wrong shape: names the argument, what was expected and what was given."""


class InputTypeError(AuditaiError, TypeError):
    """An argument of the wrong kind (a module expected, a keyword that does not exist)."""
