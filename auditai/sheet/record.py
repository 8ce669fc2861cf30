"""The spec-sheet record: dataclasses, versioned JSON, merging (paper Fig. 1 and §2.4).

A spec-sheet (`SheetRecord` here; `auditai.sheet.SpecSheet` adds the renderers) is what the
end-user receives with the model: for each unit test the latent set, per ε one `EpsRow` of figures (clean, verified error, falsified and unknown fractions,
median certified radius, the gate), and the deployment statistics of its tested coordinates
(`sheet/coords.py`). It is built from verification results one `SheetEntry` at a time, so a
pytest plugin can add entries as tests finish, and xdist workers can send `entry.to_dict()`
(plain JSON) to the controller, which merges them (`SpecSheet.add`, `SpecSheet.merge`).

The JSON form (schema "auditai.spec-sheet/1", docs/spec-sheet.md) is canonical: stable key
order, and `SpecSheet.from_json(sheet.to_json()) == sheet`.

This module is the record only: data, JSON and merge. Renderers, the diff and the deployment
check import it, never the reverse (`auditai.sheet.write` joins them for `SpecSheet`).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auditai.errors import SheetError
from auditai.sheet.coords import SET_KINDS, CoordinateStats  # noqa: F401  (re-exported)
from auditai.sheet.entry import MAX_COUNTEREXAMPLES_PER_EPS, SheetEntry  # noqa: F401  (re-exported)
from auditai.sheet.fields import (  # noqa: F401  (re-exported: their home before sheet/fields.py)
    _eps_close,
    _f,
    _get,
    _jsonable,
    _req,
    current_versions,
    data_info,
    gate_passes,
    model_info,
    new_file_mode,
    public_name,
    public_text,
    threshold_error,
    write_atomic,
)
from auditai.sheet.report_record import checked_section
from auditai.sheet.unit_sheet import EpsRow, UnitTestSheet  # noqa: F401  (re-exported)

SCHEMA = "auditai.spec-sheet/1"


# --------------------------------------------------------------------------- the sheet
@dataclass
class SheetRecord:
    """The model spec-sheet (paper Fig. 1, §2.4): unit tests with their figures per ε and their
    deployment ranges, plus the model's and data's hashes and the versions that produced it."""

    unit_tests: list[UnitTestSheet] = field(default_factory=list)
    model: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    versions: dict = field(default_factory=current_versions)
    device: str = "cpu"
    method: str | None = None
    engine: str = "auditai"
    suite: str | None = None
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat())
    schema: str = SCHEMA
    deployment_report: dict | None = None  # the optional "deployment" section (auditai.deploy_report)

    # -- building
    @classmethod
    def from_results(
        cls,
        entries: Iterable[Any],
        *,
        model: Any = None,
        data: Any = None,
        train_codes: Any = None,
        device: str = "cpu",
        method: str | None = None,
        engine: str = "auditai",
        suite: str | None = None,
    ) -> SheetRecord:
        """A sheet from `entries`: `SheetEntry`s, their dicts, or `(UnitTest, VerificationResult,
        set_info)` tuples. Deployment ranges come from `train_codes` (N×d); without them, from
        `data.z` (the sheet then names the data as their source)."""
        sheet = cls(device=str(device), method=method, engine=engine, suite=public_text(suite))
        sheet.model = model_info(model)
        sheet.data = data_info(data)
        codes, source = train_codes, "training codes"
        if codes is None and data is not None and _get(data, "z") is not None:
            codes, source = _get(data, "z"), f"evaluation data {sheet.data.get('source') or ''}".strip()
        for e in entries:
            sheet.add(e, model=model, train_codes=codes, train_source=source)
        if sheet.method is None:  # one method for every unit test: name it on the sheet
            methods = {ut.method for ut in sheet.unit_tests}
            sheet.method = methods.pop() if len(methods) == 1 else None
        return sheet

    def add(self, entry: Any, *, model: Any = None, train_codes: Any = None, train_source: str | None = None) -> UnitTestSheet:
        """Add one entry (a SheetEntry, its dict, or a (UnitTest, result, set_info) tuple);
        rows of an ε already present are replaced, so adding the same entry twice is harmless."""
        if isinstance(entry, dict):
            entry = SheetEntry.from_dict(entry)
        elif isinstance(entry, (tuple, list)):
            if len(entry) not in (2, 3):
                raise SheetError("an entry tuple must be (UnitTest, VerificationResult[, set_info])")
            ut, res = entry[0], entry[1]
            info = entry[2] if len(entry) == 3 else None
            entry = SheetEntry.from_result(ut, res, info, model=model)
        if not isinstance(entry, SheetEntry):
            raise SheetError(f"cannot add {type(entry).__name__} to a spec-sheet (expected a SheetEntry)")
        if entry.deployment is None and train_codes is not None:
            entry = entry.with_deployment(train_codes, train_source)
        if entry.latent_dim is None and self.latent_dim is not None:
            entry.latent_dim = self.latent_dim
        new = UnitTestSheet.from_entry(entry)
        old = self.unit_test(new.name)
        if old is None:
            self.unit_tests.append(new)
            return new
        old.merge(new)
        return old

    def merge(self, other: SheetRecord) -> SheetRecord:
        """Fold another sheet of the same model (e.g. an xdist worker's) into this one."""
        a, b = self.model.get("sha256"), other.model.get("sha256")
        if a and b and a != b:
            raise SheetError(f"cannot merge spec-sheets of different models (sha256 {a[:12]}… vs {b[:12]}…)")
        if not self.model:
            self.model = dict(other.model)
        if not self.data:
            self.data = dict(other.data)
        if self.deployment_report is None and other.deployment_report is not None:
            self.deployment_report = other.deployment_report  # the deployment section travels too
        for ut in other.unit_tests:
            mine = self.unit_test(ut.name)
            if mine is None:
                self.unit_tests.append(ut)
            else:
                mine.merge(ut)
        return self

    def unit_test(self, name: str) -> UnitTestSheet | None:
        for ut in self.unit_tests:
            if ut.name == name:
                return ut
        return None

    @property
    def latent_dim(self) -> int | None:
        if self.model.get("latent_dim"):
            return int(self.model["latent_dim"])
        for ut in self.unit_tests:
            if ut.latent_dim:
                return int(ut.latent_dim)
        return None

    @property
    def all_eps(self) -> list[float]:
        out: list[float] = []
        for ut in self.unit_tests:
            for e in ut.eps:
                if not any(_eps_close(e, o) for o in out):
                    out.append(e)
        return sorted(out)

    @property
    def passed(self) -> bool:
        return not any(ut.failed for ut in self.unit_tests)

    # -- JSON
    def to_dict(self) -> dict:
        return {
            "schema": self.schema,
            "created": self.created,
            "suite": self.suite,
            "model": self.model,
            "data": self.data,
            "versions": self.versions,
            "device": self.device,
            "method": self.method,
            "engine": self.engine,
            "unit_tests": [ut.to_dict() for ut in self.unit_tests],
            **({} if self.deployment_report is None else {"deployment": self.deployment_report}),
        }

    def to_json(self, path: str | os.PathLike | None = None, indent: int = 2) -> str:
        """The canonical record (schema "auditai.spec-sheet/1"); written atomically to `path`."""
        text = json.dumps(_jsonable(self.to_dict()), indent=indent, ensure_ascii=False, allow_nan=False) + "\n"
        if path is not None:
            write_atomic(path, text)
        return text

    @classmethod
    def from_dict(cls, d: dict, where: str = "spec-sheet") -> SheetRecord:
        schema = _req(d, "schema", where)
        if schema != SCHEMA:
            raise SheetError(f"{where}: unknown schema {schema!r} (this auditai reads {SCHEMA!r})")
        uts = _req(d, "unit_tests", where)
        if not isinstance(uts, list):
            raise SheetError(f"{where}.unit_tests: expected a list")
        return cls(
            unit_tests=[UnitTestSheet.from_dict(u, f"{where}.unit_tests[{i}]") for i, u in enumerate(uts)],
            model=dict(d.get("model") or {}),
            data=dict(d.get("data") or {}),
            versions=dict(d.get("versions") or {}),
            device=str(d.get("device", "cpu")),
            method=d.get("method"),
            engine=str(d.get("engine", "auditai")),
            suite=d.get("suite"),
            created=str(d.get("created", "")),
            schema=schema,
            deployment_report=checked_section(d.get("deployment"), where),
        )

    @classmethod
    def from_json(cls, source: str | os.PathLike) -> SheetRecord:
        """Load from a JSON string or a file path."""
        where = "spec-sheet"
        text = str(source)
        if isinstance(source, os.PathLike) or not text.lstrip().startswith("{"):
            where = str(source)
            try:
                text = Path(source).read_text(encoding="utf-8")
            except OSError as e:
                raise SheetError(f"cannot read spec-sheet {source}: {e.strerror or e}") from None
            except UnicodeDecodeError:
                raise SheetError(f"{source}: not a spec-sheet: the file is not UTF-8 text "
                                 "(expected the JSON of an auditai spec-sheet)") from None
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise SheetError(f"{where}: not JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
        return cls.from_dict(d, where)

    load = from_json



def deployment_rows(sheet: SheetRecord):
    """Rows of the deployment-range table, shared by the renderers: per unit test either
    (unit test, None) when no codes were given, or one (unit test, row) per ε and coordinate
    with row = (coordinate label, μ, σ, n codes, codes source, ε, lower, upper)."""
    for ut in sheet.unit_tests:
        dep = ut.deployment
        if dep is None:
            yield ut, None
            continue
        for r in ut.rows:
            lo, hi = ut.deployment_range(r.eps)
            for j, lb in enumerate(ut.labels):
                yield ut, (lb, dep.mean[j], dep.std[j], dep.n_codes, dep.source or "", r.eps, lo[j], hi[j])
