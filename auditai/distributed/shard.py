"""The run folder of a sharded verification: plan, manifest, chunk files, merge.

A run folder DIR holds

    DIR/manifest.json             what was run: model, data and suite hashes, chunk size, versions
    DIR/chunks/<unit test>/<k>.safetensors   one finished chunk: samples [k·c, (k+1)·c) of one
                                  unit test, as arrays plus a JSON header (see `chunkfile`)
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

import torch

from auditai.distributed.chunkfile import CHUNK_SUFFIX, ChunkData, ChunkFileError, read_chunk_file
from auditai.errors import AuditaiError, InputError

MANIFEST_SCHEMA = "auditai.sharded-run/2"
#: run folders of older auditai versions (per-sample JSON chunk files): refused with a message
OLD_MANIFEST_SCHEMAS = ("auditai.sharded-run/1",)
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


def write_json_atomic(path: Path, obj: Any, indent: int | None = 1, raw: dict[str, str] | None = None) -> None:
    """Write JSON via a temporary file in the same folder and `os.replace` (atomic on POSIX).
    `indent=None` writes compact JSON with the C encoder (large files: results.json); `raw` maps
    placeholder strings in `obj` to JSON texts put in their place (see `ArrayText`)."""
    sep = None if indent is not None else (",", ":")
    text = json.dumps(obj, indent=indent, separators=sep, ensure_ascii=False, allow_nan=False)
    for token, value in (raw or {}).items():
        quoted = json.dumps(token)
        if text.count(quoted) != 1:
            raise AssertionError(f"placeholder {token} found {text.count(quoted)} times")
        text = text.replace(quoted, value)
    write_bytes_atomic(path, (text + "\n").encode("utf-8"))


class ArrayText:
    """Per-sample arrays rendered as JSON text without a Python object per sample, for
    `write_json_atomic(..., raw=)`: `put(text)` returns a unique placeholder string."""

    def __init__(self) -> None:
        self.raw: dict[str, str] = {}
        self._tag = os.urandom(8).hex()

    def put(self, text: str) -> str:
        token = f"@auditai-array-{self._tag}-{len(self.raw)}@"
        self.raw[token] = text
        return token


def verdicts_json(v: torch.Tensor) -> str:
    """The JSON text of `v.tolist()` for an (n, E) verdict matrix of −1/0/+1: each row's
    pattern is looked up in a table of the 3^E rows (plain `json.dumps` when E > 8)."""
    E = v.shape[1]
    v = v.to(torch.int64)
    if E > 8 or not bool(((v >= -1) & (v <= 1)).all()):
        return json.dumps(v.tolist(), separators=(",", ":"))
    code = ((v + 1) * (3 ** torch.arange(E, dtype=torch.int64))).sum(1)
    table = ["[" + ",".join(str((c // 3 ** j) % 3 - 1) for j in range(E)) + "]" for c in range(3 ** E)]
    return "[" + ",".join(map(table.__getitem__, code.tolist())) + "]"


def floats_json(x: torch.Tensor) -> str:
    """The JSON text of `x.tolist()` for a 1-D float tensor (repr of each float, as `json`
    writes them); non-finite values are refused as `json.dumps(allow_nan=False)` refuses them."""
    if not bool(torch.isfinite(x).all()):
        raise InputError("Out of range float values are not JSON compliant")
    return "[" + ",".join(map(float.__repr__, x.to(torch.float64).tolist())) + "]"


def write_bytes_atomic(path: Path, data: bytes, before_replace=None) -> None:
    """Write `data` via a temporary file in the same folder, fsync and `os.replace`;
    `before_replace(tmp)` is a test hook."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if before_replace is not None:
            before_replace(tmp)
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
        return self.chunks_dir / _safe_name(c.name) / f"{c.k:06d}{CHUNK_SUFFIX}"

    # -- manifest
    def read_manifest(self) -> dict | None:
        if not self.manifest_path.exists():
            return None
        m = read_json(self.manifest_path, "manifest")
        if isinstance(m, dict) and m.get("schema") in OLD_MANIFEST_SCHEMAS:
            raise RunFolderError(f"{self.manifest_path}: a run folder of an older auditai (schema "
                                 f"{m['schema']!r}, per-sample JSON chunk files; this version writes "
                                 f"{MANIFEST_SCHEMA!r}): rerun it with a new --out folder")
        if not isinstance(m, dict) or m.get("schema") != MANIFEST_SCHEMA:
            raise RunFolderError(f"{self.manifest_path}: not an auditai run manifest "
                                 f"(expected schema {MANIFEST_SCHEMA!r})")
        return m

    def check_or_write_manifest(self, manifest: dict) -> None:
        """Write the manifest of a new run, or refuse a folder whose manifest differs."""
        old = self.read_manifest()
        if old is None:
            if self.chunks_dir.exists() and any(p.is_file() for p in self.chunks_dir.rglob("*")):
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

    def write_chunk(self, c: Chunk, data: bytes, before_replace=None) -> None:
        """Write a chunk file's bytes (`chunkfile.encode_chunk`) atomically; `before_replace(tmp)`
        is a test hook."""
        write_bytes_atomic(self.chunk_path(c), data, before_replace)

    def read_chunk(self, c: Chunk) -> ChunkData:
        """The decoded chunk file of `c`, checked to hold chunk c (unit test, k, samples)."""
        path = self.chunk_path(c)
        try:
            rec = read_chunk_file(path)
        except FileNotFoundError:
            raise RunFolderError(f"{self.root}: chunk {c.k} of unit test '{c.name}' "
                                 f"(samples {c.start}..{c.stop - 1}) is missing: rerun the same "
                                 "command to compute it") from None
        except OSError as e:
            raise RunFolderError(f"{path}: cannot read the chunk file: {e.strerror or e}") from None
        except ChunkFileError as e:
            raise RunFolderError(f"{path}: {e}") from None
        h = rec.header
        if (h.get("unit_test"), h.get("k"), h.get("start"), h.get("stop")) != (c.name, c.k, c.start, c.stop):
            raise RunFolderError(f"{path}: holds chunk {h.get('k')} of '{h.get('unit_test')}' (samples "
                                 f"[{h.get('start')}, {h.get('stop')})), expected chunk {c.k} of '{c.name}' "
                                 f"([{c.start}, {c.stop}))")
        return rec

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
CEX_FIELDS = ("sample", "eps_index", "eps", "delta", "z", "row", "row_name", "margin", "outputs")


@dataclass
class MergedTest:
    """One unit test's chunks concatenated: the scalar fields of its `VerificationResult`, the
    (n, E) verdicts, the radii (or None) and every counterexample as arrays (global sample index)."""

    fields: dict
    verdicts: torch.Tensor
    radius: torch.Tensor | None
    cex: dict[str, torch.Tensor]
    row_names: list[str]

    def top_per_eps(self, k: int) -> list[int]:
        """Indices (in chunk order) of the k most violated counterexamples of each ε: the first
        k of a stable sort by margin, as `worst_per_eps` and the sheet's renderers pick them."""
        if not self.cex:
            return []
        keep: list[torch.Tensor] = []
        for e in range(len(self.fields["eps"])):
            idx = (self.cex["eps_index"] == e).nonzero().flatten()
            order = torch.sort(self.cex["margin"][idx], stable=True).indices
            keep.append(idx[order[:k]])
        return sorted(torch.cat(keep).tolist())

    def counterexample_dicts(self, index: Sequence[int]) -> list[dict]:
        """The counterexamples at `index` as `dataclasses.asdict(Counterexample)` dicts."""
        if not index:
            return []
        ix = torch.tensor(list(index), dtype=torch.int64)
        cols = {f: self.cex[f][ix].tolist() for f in CEX_FIELDS if f != "row_name"}
        names = [self.row_names[j] for j in self.cex["row_name"][ix].tolist()]
        # the decoded image (black-box targets) is not kept in chunk files: rendered from z when needed
        return [{**{f: (names[i] if f == "row_name" else cols[f][i]) for f in CEX_FIELDS}, "image": None}
                for i in range(len(ix))]


def merge_results(records: Sequence[ChunkData], n: int, name: str) -> MergedTest:
    """One unit test's decoded chunks (in k order) → all n samples. Checks with tensor ops that
    every sample appears exactly once; fractions are recomputed from the concatenated verdicts
    (clean mistakes from each chunk's exact count)."""
    if not records:
        raise RunFolderError(f"unit test '{name}': no chunks to merge")
    first = records[0].result
    E = len(first["eps"])
    count = torch.zeros(n, dtype=torch.int32)
    verdicts = torch.zeros(n, E, dtype=torch.int8)
    has_radius = all("certified_radius" in r.tensors for r in records)
    radius = torch.full((n,), float("nan"), dtype=torch.float64) if has_radius else None
    cex_parts: dict[str, list[torch.Tensor]] = {}
    row_names: dict[str, int] = {}
    clean, time_s = 0, 0.0
    notes: list[str] = []  # why cells stayed unknown (complete's budgets), per chunk
    for rec in records:
        h, t, r = rec.header, rec.tensors, rec.result
        s, e = int(h["start"]), int(h["stop"])
        where = f"unit test '{name}': chunk {h.get('k')}"
        if not 0 <= s < e <= n:
            raise RunFolderError(f"{where} covers samples [{s}, {e}) outside the data's 0..{n - 1}")
        v = t.get("verdicts")
        if v is None or tuple(v.shape) != (e - s, E) or int(r["n"]) != e - s:
            raise RunFolderError(f"{where} has verdicts of shape {None if v is None else tuple(v.shape)} "
                                 f"for {e - s} samples × {E} ε")
        count[s:e] += 1
        verdicts[s:e] = v
        if radius is not None:
            if tuple(t["certified_radius"].shape) != (e - s,):
                raise RunFolderError(f"{where} has {t['certified_radius'].numel()} radii for {e - s} samples")
            radius[s:e] = t["certified_radius"]
        m = rec.n_cex
        if m:
            local, names = t["cex_sample"], t.get("cex_row_name")
            if (any(t.get(f"cex_{f}") is None or t[f"cex_{f}"].shape[0] != m for f in CEX_FIELDS)
                    or bool(((local < 0) | (local >= e - s)).any())
                    or bool(((t["cex_eps_index"] < 0) | (t["cex_eps_index"] >= E)).any())
                    or bool(((names < 0) | (names >= len(h["row_names"]))).any())):
                raise RunFolderError(f"{where} has counterexample arrays of other lengths than {m} or "
                                     "entries outside its samples, ε list or row names")
            remap = torch.tensor([row_names.setdefault(x, len(row_names)) for x in h["row_names"]] or [0],
                                 dtype=torch.int64)
            parts = {"sample": local + s, "row_name": remap[t["cex_row_name"]]}
            for f in CEX_FIELDS:
                cex_parts.setdefault(f, []).append(parts.get(f, t.get(f"cex_{f}")))
        clean += round(float(r["clean_error"][0]) * (e - s)) if r["clean_error"] else 0
        time_s += float(r.get("time_s", 0.0))
        notes += [f"samples [{s}, {e}): {x}" for x in r.get("notes") or []]
    bad = (count != 1).nonzero().flatten()
    if bad.numel():
        i = int(bad[0])
        raise RunFolderError(f"unit test '{name}': sample {i} appears {int(count[i])} times in the chunks "
                             f"({bad.numel()} samples not exactly once); the run folder is inconsistent")
    counts = [(verdicts == x).sum(0).tolist() for x in (1, -1, 0)]
    verified, falsified, unknown = ([c / n for c in col] for col in counts)
    fields = {k: first[k] for k in ("eps", "method", "spec", "set_description", "norm", "max_radius",
                                    "device", "engine")}
    fields.update(n=n, clean_error=[clean / n] * E, verified_error=[1.0 - v for v in verified],
                  falsified_fraction=falsified, unknown_fraction=unknown, time_s=time_s,
                  precision=first.get("precision", "float64"), notes=notes)
    cex = {f: torch.cat(p) for f, p in cex_parts.items()}
    return MergedTest(fields, verdicts, radius, cex, list(row_names))
