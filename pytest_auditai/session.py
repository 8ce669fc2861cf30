"""The run's state: loaded models/data, cached verifications, rows, xdist merging, reports.

One `AuditaiSession` per pytest run lives in `config.stash[SESSION]`. A unit test is verified
once for all its ε (gated and report-only); each test item reads its ε from the cached result.
What crosses a process boundary (xdist workers → controller) is a plain JSON-able dict.
Reports are written once, by the controller, atomically (temp file + os.replace). Gates,
baselines and failure texts are the library's (`auditai.gate`, shared with `auditai verify`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from auditai import gate
from auditai.gate import eps_index, rows_for, unit_test_dict  # noqa: F401  (re-exported)
from pytest_auditai import options as opt

SESSION: pytest.StashKey["AuditaiSession"] = pytest.StashKey()
UNIT_TEST: pytest.StashKey[Any] = pytest.StashKey()  # UnitTest (or SuiteError) of a Python test item
WORKER_KEY = "auditai"


class AuditaiFailure(Exception):
    """A gate (threshold or baseline) failed: the message is what the release engineer reads."""


@dataclass
class Entry:
    """One verified unit test, as plain data (crosses xdist): its rows per ε and the result."""

    key: str
    suite: str
    unit_test: dict
    rows: list[dict]
    result: dict
    model: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    sheet: dict | None = None  # auditai.sheet SheetEntry.to_dict()

    def to_dict(self) -> dict:
        return {"key": self.key, "suite": self.suite, "unit_test": self.unit_test, "rows": self.rows,
                "result": self.result, "model": self.model, "data": self.data, "sheet": self.sheet}


def _fmt(x: Any, nd: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.{nd}g}" if isinstance(x, float) else str(x)


def failure_message(ut: Any, result: Any, eps: float) -> str:
    """What a release engineer reads when a gate fails at ε (auditai.gate's text, with the
    plugin's flag in the hint)."""
    return gate.failure_message(ut, result, eps, method_hint=f"{opt.METHOD} complete")


class AuditaiSession:
    """State of one run (in `config.stash[SESSION]`): caches, entries, reports, baseline."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.entries: dict[str, Entry] = {}
        self._results: dict[str, Any] = {}
        self._models: dict[str, Any] = {}
        self._data: dict[tuple, Any] = {}
        self._baseline: dict[tuple[str, float], float] | None = None
        self.reports_written: list[str] = []
        self.is_worker = hasattr(config, "workerinput")

    # ------------------------------------------------------------------ options
    def option(self, option: str) -> Any:
        return opt.get_option(self.config, option)

    def path_option(self, option: str) -> str | None:
        """A file option: command-line values relative to the invocation folder, ini values
        relative to the ini file's folder; `pkg.mod:attr` left as is."""
        cli = self.config.getoption(opt.ini_name(option), default=None)
        value = self.option(option)
        if not value or cli or ":" in str(value) and not Path(str(value)).exists():
            return value
        base = self.config.inipath.parent if self.config.inipath else self.config.rootpath
        p = Path(value)
        return str(p if p.is_absolute() else base / p)

    def engine(self, suite_engine: str | None = None) -> str:
        """The bound engine: --auditai-engine on the command line, else the suite's `engine:`,
        else the ini value (default 'auditai'). The flag's own default is None, so an
        explicitly given flag is told apart from the ini default."""
        cli = self.config.getoption(opt.ini_name(opt.ENGINE), default=None)
        return cli or suite_engine or self.option(opt.ENGINE) or "auditai"

    @property
    def device(self) -> str:
        """'auto' resolved: 'cuda' when available, else 'cpu'; an unavailable CUDA is an error."""
        dev = self.option(opt.DEVICE) or "auto"
        if dev == "cpu":
            return dev
        import torch

        if dev == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        if not torch.cuda.is_available():
            raise pytest.UsageError(f"{opt.DEVICE}={dev} but CUDA is not available here")
        return dev

    @property
    def precision(self) -> str | None:
        """--auditai-precision: 'float32', 'float64', or None for auto (float32 on CUDA)."""
        v = self.option(opt.PRECISION) or "auto"
        return None if v == "auto" else v

    # ------------------------------------------------------------------ loading
    def model(self, source: str | None) -> Any:
        """The AuditModel of `source` (option overrides the suite's), loaded once per run."""
        source = self.path_option(opt.MODEL) or source
        if not source:
            raise AuditaiFailure(f"no model: set `model:` in the suite, {opt.MODEL}=SOURCE, or the "
                                 f"ini value {opt.ini_name(opt.MODEL)}")
        if source not in self._models:
            from auditai.model import load_model

            trust = bool(self.option(opt.TRUST_PICKLE))
            model = load_model(source, trust_pickle=trust)
            cls_src, dec_src = self.path_option(opt.CLASSIFIER), self.path_option(opt.DECODER)
            if cls_src or dec_src:  # parts given apart (e.g. two ONNX files): the black-box target
                from auditai.blackbox import with_parts

                model = with_parts(model, classifier=cls_src, decoder=dec_src, trust_pickle=trust)
            self._models[source] = model
        return self._models[source]

    def data(self, source: str | None, model_source: str | None, option: str = opt.DATA) -> Any:
        """The AuditData of `source` (or of `option` when given) encoded by the model; codes
        cached in pytest's cache by the model's and the data's content hashes (encoding runs
        once across runs)."""
        source = self.path_option(option) or source
        if not source:
            raise AuditaiFailure(f"no data: set `data:` in the suite, {opt.DATA}=SOURCE, or the "
                                 f"ini value {opt.ini_name(opt.DATA)}")
        model = self.model(model_source)
        key = (source, id(model))
        if key not in self._data:
            self._data[key] = self._load_data(source, model)
        return self._data[key]

    def _load_data(self, source: str, model: Any) -> Any:
        from auditai.data import load_data
        from auditai.errors import DataError

        device = self.device
        # no cache with `-p no:cacheprovider`: encode every run
        if getattr(model, "encoder", None) is None or getattr(self.config, "cache", None) is None:
            return load_data(source, model, device=device)
        try:  # read without encoding: the arrays' hash keys the cache
            raw = load_data(source)
        except DataError:
            raw = None
        mh, dh = getattr(model, "content_hash", None), getattr(raw, "content_hash", None)
        if raw is None or getattr(raw, "x", None) is None or not mh or not dh:
            return load_data(source, model, device=device)
        import torch

        folder = self.config.cache.mkdir("auditai-latents")
        file = folder / f"{mh[:24]}-{dh[:24]}.pt"
        if file.exists():
            try:
                z = torch.load(file, weights_only=True, map_location="cpu")["z"]
                if z.dim() == 2 and z.shape == (raw.y.shape[0], model.latent_dim):
                    return _with_codes(raw, z)
            except Exception:  # noqa: BLE001 - a stale or corrupt cache entry: encode again
                pass
        data = load_data(source, model, device=device)
        tmp = file.with_name(f"{file.name}.{os.getpid()}.tmp")
        torch.save({"z": data.z.detach().cpu()}, tmp)
        os.replace(tmp, file)
        return data

    # ------------------------------------------------------------------ verification
    def verify(self, key: str, suite: str, ut: Any, model_source: str | None = None,
               data_source: str | None = None, engine: str | None = None,
               train_data_source: str | None = None) -> Any:
        """Verify `ut` at all its ε once per run (cached by key) and record its rows."""
        if key in self._results:
            return self._results[key]
        from auditai.blackbox import attach_images, target_module
        from auditai.verify import verify

        ut = ut.with_defaults(method=self.option(opt.METHOD), target=self.option(opt.TARGET))
        model = self.model(model_source)
        fn = target_module(model, ut.target, f"unit test '{ut.name}'")
        data = self.data(data_source, model_source)
        kind = ut.set_kind(model)
        result = verify(
            fn, data.z, data.y, kind, list(ut.all_eps), spec=ut.spec, method=ut.method,
            device=self.device, engine=self.engine(engine), precision=self.precision,
            max_time=getattr(ut, "max_time", None),
        )
        attach_images(result, model, ut.target)
        self._results[key] = result
        self.entries[key] = Entry(
            key=key, suite=suite, unit_test=unit_test_dict(ut), rows=rows_for(ut, result),
            result=result.to_dict(),
            model={"source": str(getattr(model, "source", model_source)),
                   "content_hash": getattr(model, "content_hash", None)},
            data={"source": str(getattr(data, "source", data_source)),
                  "content_hash": getattr(data, "content_hash", None),
                  "n": int(data.z.shape[0])},
            sheet=_sheet_entry(ut, result, kind, model, *self.range_codes(data, train_data_source, model_source)),
        )
        return result

    def range_codes(self, data: Any, train_source: str | None, model_source: str | None) -> tuple:
        """(codes, what they are) for the deployment ranges: the training data when a suite or
        the option names it (paper §2.4), else the evaluation data, and the sheet says which."""
        if self.path_option(opt.TRAIN_DATA) or train_source:
            train = self.data(train_source, model_source, option=opt.TRAIN_DATA)
            source = getattr(train, "source", train_source)
            return train.z, f"training data {source}"
        return data.z, f"evaluation data {getattr(data, 'source', '')}"

    def check(self, key: str, ut: Any, result: Any, eps: float, item: pytest.Item) -> None:
        """Record JUnit properties for ε and raise AuditaiFailure when the gate or baseline fails."""
        ut = ut.with_defaults(method=self.option(opt.METHOD), target=self.option(opt.TARGET))
        i = eps_index(list(result.eps), eps)
        ve = float(result.verified_error[i])
        sfx = "" if len(ut.eps) == 1 or not isinstance(item, pytest.Function) else f"[eps={eps}]"
        for name, value in (
            ("unit_test", ut.name), ("eps", float(eps)), ("clean_error", float(result.clean_error[i])),
            ("verified_error", ve), ("falsified_fraction", float(result.falsified_fraction[i])),
            ("unknown_fraction", float(result.unknown_fraction[i])), ("gate", ut.gate_text),
            ("passed", ut.gate(ve)),
        ):
            item.user_properties.append((f"auditai_{name}{sfx}", value))
        baseline = self.baseline() if ut.gate(ve) else None
        tol = opt.parse_tolerance(self.config.getini(opt.INI_BASELINE_TOLERANCE)) if baseline else 0.0
        failure = gate.check(ut, result, eps, baseline, tol, baseline_source=str(self.option(opt.BASELINE)),
                             tolerance_name=opt.INI_BASELINE_TOLERANCE, method_hint=f"{opt.METHOD} complete")
        if failure is not None:
            raise AuditaiFailure(failure)

    # ------------------------------------------------------------------ baseline
    def baseline(self) -> dict[tuple[str, float], float] | None:
        """The --auditai-baseline's verified errors (read once), or None without one."""
        path = self.path_option(opt.BASELINE)
        if not path:
            return None
        if self._baseline is None:
            self._baseline = read_baseline(Path(path))
        return self._baseline

    def baseline_error(self, name: str, eps: float) -> float | None:
        """The baseline's verified error of unit test `name` at ε (None: no baseline or no row)."""
        baseline = self.baseline()
        return None if baseline is None else gate.baseline_error(baseline, name, eps)

    # ------------------------------------------------------------------ xdist and reports
    def export(self) -> list[dict]:
        return [e.to_dict() for e in self.entries.values()]

    def merge(self, entries: list[dict]) -> None:
        """Merge a worker's entries; a unit test verified on two workers is kept once."""
        for d in entries:
            self.entries.setdefault(d["key"], Entry(**d))

    def sorted_entries(self) -> list[Entry]:
        return [self.entries[k] for k in sorted(self.entries)]

    @property
    def resolved_device(self) -> str:
        devices = sorted({str(e.result.get("device")) for e in self.entries.values()
                          if e.result.get("device")})
        return ", ".join(devices) or (self.option(opt.DEVICE) or "auto")

    @property
    def option_engine(self) -> str:
        """The engine(s) the run's unit tests used (the default engine when none ran)."""
        engines = sorted({str(e.result.get("engine")) for e in self.entries.values()
                          if e.result.get("engine")})
        return ", ".join(engines) or self.engine()

    def loaded_model(self) -> Any:
        """A model already loaded in this process (for the HTML's decoded strips), or None."""
        return next(iter(self._models.values()), None)

    def loaded_data(self) -> Any:
        """Evaluation data already loaded in this process (codes for the strips), or None."""
        return next(iter(self._data.values()), None)

    def summary_lines(self) -> list[str]:
        from tabulate import tabulate

        table = []
        for e in self.sorted_entries():
            for r in e.rows:
                gate = "" if not r["gated"] else f"{r['gate']} {'pass' if r['passed'] else 'FAIL'}"
                table.append([r["unit_test"], r["set"], f"{r['eps']:g}", _fmt(r["clean_error"]),
                              _fmt(r["verified_error"]), _fmt(r["falsified_fraction"]),
                              _fmt(r["unknown_fraction"]), _fmt(r["radius_median"]), gate])
        head = ["unit test", "set", "ε", "clean err", "verified err", "falsified", "unknown",
                "radius(med)", "gate"]
        return tabulate(table, head, tablefmt="plain").splitlines()

    def write_reports(self) -> list[str]:
        """Write every --auditai-report once (controller only), atomically."""
        paths = self.option(opt.REPORT) or []
        if self.is_worker or not paths or not self.entries:
            return []
        from pytest_auditai import report

        written = []
        for p in dict.fromkeys(paths):
            path = Path(self.path_option_value(p))
            from auditai.sheet.record import write_atomic

            write_atomic(path, report.render(self, path.suffix.lower()))
            written.append(str(p))
        self.reports_written = written
        return written

    def path_option_value(self, value: str) -> str:
        if self.config.getoption(opt.ini_name(opt.REPORT), default=None):
            return value
        base = self.config.inipath.parent if self.config.inipath else self.config.rootpath
        p = Path(value)
        return str(p if p.is_absolute() else base / p)


def _sheet_entry(ut: Any, result: Any, kind: Any, model: Any, codes: Any, source: str) -> dict:
    """The spec-sheet's entry (with deployment ranges from `codes`), as plain JSON."""
    from auditai.sheet.record import SheetEntry

    return SheetEntry.from_result(ut, result, kind, model=model, train_codes=codes,
                                  train_source=source).to_dict()


def _with_codes(raw: Any, z: Any) -> Any:
    import dataclasses

    if dataclasses.is_dataclass(raw):
        try:
            return dataclasses.replace(raw, z=z)
        except (TypeError, ValueError):
            pass
    raw.z = z
    return raw


def read_baseline(path: Path) -> dict[tuple[str, float], float]:
    """(unit test, ε) → verified error from a previous JSON spec-sheet (a usage error if not one)."""
    try:
        return gate.read_baseline(path)
    except gate.BaselineError as e:
        raise pytest.UsageError(f"{opt.BASELINE}: {e}") from None
