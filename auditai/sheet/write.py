"""`SpecSheet`: the spec-sheet record with its renderers, the diff and the deployment check.

The facade over the rooms of `auditai.sheet`: the record (`record.py`: data, JSON, merge)
knows no renderer; this module imports the record and each renderer (lazily, so loading a
sheet pulls in neither matplotlib nor tabulate) and offers `write(path)` by suffix.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from auditai.errors import SheetError
from auditai.sheet.fields import write_atomic
from auditai.sheet.record import SheetRecord


class SpecSheet(SheetRecord):
    """The model spec-sheet (paper Fig. 1, §2.4): the record (`SheetRecord`) plus its
    renderings (markdown, HTML, terminal, model card), the diff and the deployment check."""

    # -- renderers (one module each)
    def to_markdown(self, path: str | os.PathLike | None = None) -> str:
        from auditai.sheet.markdown import to_markdown

        text = to_markdown(self)
        if path is not None:
            write_atomic(path, text)
        return text

    def to_html(self, path: str | os.PathLike | None = None, *, model: Any = None, codes: Any = None, n_samples: int = 4) -> str:
        from auditai.sheet.html import to_html

        text = to_html(self, model=model, codes=codes, n_samples=n_samples)
        if path is not None:
            write_atomic(path, text)
        return text

    def to_terminal(self, reports: Sequence[str] = ()) -> str:
        from auditai.sheet.terminal import to_terminal

        return to_terminal(self, reports)

    def to_model_card(self, path: str | os.PathLike | None = None, name: str | None = None) -> dict:
        from auditai.sheet.modelcard import to_model_card

        card = to_model_card(self, name=name)
        if path is not None:
            write_atomic(path, json.dumps(card, indent=2, ensure_ascii=False) + "\n")
        return card

    def write(self, path: str | os.PathLike, *, model: Any = None, codes: Any = None) -> Path:
        """Write by suffix: .json, .md, .html/.htm, or .modelcard.json (atomically)."""
        p = Path(path)
        name = p.name.lower()
        if name.endswith(".modelcard.json"):
            self.to_model_card(p)
        elif name.endswith(".json"):
            self.to_json(p)
        elif name.endswith(".md"):
            self.to_markdown(p)
        elif name.endswith((".html", ".htm")):
            self.to_html(p, model=model, codes=codes)
        else:
            raise SheetError(f"{path}: unknown report format (expected .json, .md, .html or .modelcard.json)")
        return p

    # -- deployment (auditai.deploy)
    def check(self, z: Any, eps: float | None = None, sources: Sequence[str] | None = None):
        """Per code and unit test: inside the deployment range at ε or not (paper §2.4)."""
        from auditai.deploy import check_codes

        return check_codes(self, z, eps=eps, sources=sources)

    def check_inputs(self, x: Any, model: Any, eps: float | None = None, sources: Sequence[str] | None = None):
        """Encode x with the model's encoder, then `check`."""
        from auditai.deploy import check_inputs

        return check_inputs(self, x, model, sources=sources, eps=eps)

    def diff(self, new: SheetRecord, tolerance: float = 0.01):
        from auditai.sheet.diff import diff_sheets

        return diff_sheets(self, new, tolerance=tolerance)
