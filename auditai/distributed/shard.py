"""The run folder of a sharded verification: plan, manifest, chunk files, merge.

A run folder DIR holds

    DIR/manifest.json             what was run: model, data and suite hashes, chunk size, versions
    DIR/chunks/<unit test>/<k>.json   one finished chunk: samples [k·c, (k+1)·c) of one unit test
    DIR/results.json              the merged VerificationResults (what `pytest --auditai-results` reads)
    DIR/sheet.json                the spec-sheet
    DIR/runs.jsonl                one line per launch: world size, restarts, chunks computed

The unit of work is a chunk (unit test, k) whose size c is fixed in the manifest and does not
depend on the number of ranks, and each chunk's attack is seeded from (unit test, k) alone, so
every result is the same whatever the number of ranks or restarts. A chunk file is written via
a temporary file and `os.replace`: a chunk file that exists is complete, and a worker killed
mid-chunk leaves at most a temporary file, removed on the next start.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auditai.errors import AuditaiError

MANIFEST_SCHEMA = "auditai.sharded-run/1"
RESULTS_SCHEMA = "auditai.sharded-results/1"
DEFAULT_CHUNK_SIZE = 256
TMP_SUFFIX = ".tmp"
#: manifest keys that must agree for a run folder to be resumed
PINNED = ("model_sha256", "data_sha256", "suite_sha256", "chunk_size", "versions", "n", "precision")


class RunFolderError(AuditaiError):
    """A run folder that cannot be used: a different run's manifest, a missing or bad chunk."""


# --------------------------------------------------------------------------- small helpers
def canonical_json(obj: Any) -> str:
    """Stable JSON text (sorted keys, no spaces) for hashing."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON via a temporary file in the same folder and `os.replace` (atomic on POSIX)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(json.dumps(obj, indent=1, ensure_ascii=False, allow_nan=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise


def read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise RunFolderError(f"{path}: cannot read the {what}: {e.strerror or e}") from None
    except json.JSONDecodeError as e:
        raise RunFolderError(f"{path}: the {what} is not JSON (line {e.lineno}: {e.msg})") from None


def chunk_seed(unit_test: str, k: int, base: int = 0) -> int:
    """The attack seed of chunk k of a unit test: from (unit test, k, base) only, never the rank."""
    h = hashlib.sha256(f"{base}:{unit_test}:{k}".encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 62) - 1)


def _safe_name(name: str) -> str:
    """A unit test's name as a folder name (names never contain '/', see auditai.suite)."""
    return re.sub(r"[^A-Za-z0-9_.=+-]", "_", name) + "-" + sha256_text(name)[:8]


# --------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class Chunk:
    """Samples [start, stop) of unit test number `test` (named `name`): chunk k."""

    test: int
    name: str
    k: int
    start: int
    stop: int


def plan(names: Sequence[str], n: int, chunk_size: int) -> list[Chunk]:
    """Every chunk of every unit test, in (unit test, k) order."""
    if chunk_size < 1:
        raise RunFolderError(f"--chunk-size must be >= 1, got {chunk_size}")
    if n < 1:
        raise RunFolderError("the data has no samples: nothing to verify")
    out = []
    for t, name in enumerate(names):
        for k in range(math.ceil(n / chunk_size)):
            out.append(Chunk(t, name, k, k * chunk_size, min(n, (k + 1) * chunk_size)))
    return out


class RunFolder:
    """Paths and file operations of one run folder (see the module docstring)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    @property
    def results_path(self) -> Path:
        return self.root / "results.json"

    @property
    def sheet_path(self) -> Path:
        return self.root / "sheet.json"

    @property
    def chunks_dir(self) -> Path:
        return self.root / "chunks"

    def chunk_path(self, c: Chunk) -> Path:
        return self.chunks_dir / _safe_name(c.name) / f"{c.k:06d}.json"

    # -- manifest
    def read_manifest(self) -> dict | None:
        if not self.manifest_path.exists():
            return None
        m = read_json(self.manifest_path, "manifest")
        if not isinstance(m, dict) or m.get("schema") != MANIFEST_SCHEMA:
            raise RunFolderError(f"{self.manifest_path}: not an auditai run manifest "
                                 f"(expected schema {MANIFEST_SCHEMA!r})")
        return m

    def check_or_write_manifest(self, manifest: dict) -> None:
        """Write the manifest of a new run, or refuse a folder whose manifest differs."""
        old = self.read_manifest()
        if old is None:
            if self.chunks_dir.exists() and any(self.chunks_dir.rglob("*.json")):
                raise RunFolderError(f"{self.root}: has chunk files but no manifest.json; "
                                     "use an empty --out folder")
            write_json_atomic(self.manifest_path, manifest)
            return
        diffs = manifest_differences(old, manifest)
        if diffs:
            raise RunFolderError(
                f"{self.manifest_path} belongs to a different run ({'; '.join(diffs)}): "
                "resume only with the same model, data, suite, chunk size and versions, "
                "or give a new --out folder"
            )

    # -- chunks
    def remove_stale_temporaries(self) -> int:
        """Delete temporary files left by killed workers (call while no rank writes)."""
        n = 0
        if self.root.exists():
            for p in self.root.rglob(f".*{TMP_SUFFIX}"):
                try:
                    p.unlink()
                    n += 1
                except OSError:
                    pass
        return n

    def pending(self, chunks: Iterable[Chunk]) -> list[Chunk]:
        return [c for c in chunks if not self.chunk_path(c).exists()]

    def write_chunk(self, c: Chunk, record: dict, before_replace=None) -> None:
        """Write a chunk's record atomically; `before_replace(tmp)` is a test hook."""
        path = self.chunk_path(c)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        if before_replace is not None:
            before_replace(tmp)
        os.replace(tmp, path)

    def read_chunk(self, c: Chunk) -> dict:
        path = self.chunk_path(c)
        if not path.exists():
            raise RunFolderError(f"{self.root}: chunk {c.k} of unit test '{c.name}' "
                                 f"(samples {c.start}..{c.stop - 1}) is missing: rerun the same "
                                 "command to compute it")
        return read_json(path, "chunk file")

    def append_log(self, record: dict) -> None:
        """Add one line to DIR/runs.jsonl (rewritten atomically)."""
        path = self.root / "runs.jsonl"
        old = path.read_text(encoding="utf-8") if path.exists() else ""
        tmp = path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")
        tmp.write_text(old + json.dumps(record, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, path)


def manifest_differences(old: dict, new: dict) -> list[str]:
    """What differs between two manifests in the pinned keys, as readable phrases."""
    out = []
    for key in PINNED:
        a, b = old.get(key), new.get(key)
        if a != b:
            if isinstance(a, str) and isinstance(b, str) and len(a) == 64:
                a, b = a[:12] + "…", b[:12] + "…"
            out.append(f"{key}: this run {b!r}, the folder {a!r}")
    return out


# --------------------------------------------------------------------------- merging results
def merge_results(records: Sequence[dict], n: int, name: str) -> dict:
    """One unit test's chunk records (in k order) → the `VerificationResult.to_dict()` of all n
    samples. Checks that every sample appears exactly once; fractions are recomputed from the
    concatenated verdicts (clean mistakes from each chunk's exact count)."""
    count = [0] * n
    verdicts: list = []
    radius: list | None = []
    cex: list = []
    clean = 0
    time_s = 0.0
    for rec in records:
        s, e, r = int(rec["start"]), int(rec["stop"]), rec["result"]
        if not 0 <= s < e <= n:
            raise RunFolderError(f"unit test '{name}': chunk {rec.get('k')} covers samples "
                                 f"[{s}, {e}) outside the data's 0..{n - 1}")
        if int(r["n"]) != e - s or len(r["verdicts"]) != e - s:
            raise RunFolderError(f"unit test '{name}': chunk {rec.get('k')} has {len(r['verdicts'])} "
                                 f"verdict rows for {e - s} samples")
        for i in range(s, e):
            count[i] += 1
        verdicts.extend(r["verdicts"])
        if radius is not None and r.get("certified_radius") is not None:
            radius.extend(r["certified_radius"])
        else:
            radius = None
        for c in r.get("counterexamples", []):
            cex.append({**c, "sample": int(c["sample"]) + s})
        clean += round(float(r["clean_error"][0]) * (e - s)) if r["clean_error"] else 0
        time_s += float(r.get("time_s", 0.0))
    bad = [i for i, c in enumerate(count) if c != 1]
    if bad:
        i = bad[0]
        raise RunFolderError(f"unit test '{name}': sample {i} appears {count[i]} times in the chunks "
                             f"({len(bad)} samples not exactly once); the run folder is inconsistent")
    first = records[0]["result"]
    E = len(first["eps"])
    cols = list(zip(*verdicts)) if verdicts else [()] * E
    frac = lambda v: [sum(1 for x in col if x == v) / n for col in cols]
    verified = frac(1)
    out = {k: first[k] for k in ("eps", "method", "spec", "set_description", "norm", "max_radius",
                                 "device", "engine")}
    out.update(n=n, clean_error=[clean / n] * E, verified_error=[1.0 - v for v in verified],
               falsified_fraction=frac(-1), unknown_fraction=frac(0), verdicts=verdicts,
               certified_radius=radius, counterexamples=cex, time_s=time_s,
               precision=first.get("precision", "float64"))
    return out
