"""`auditai verify SUITE --out DIR` (sharded, resumable) and `auditai merge DIR`.

    torchrun --nproc-per-node N -m auditai verify SUITE.yaml --out DIR   # N ranks
    python -m auditai verify SUITE.yaml --out DIR                        # one process

Every rank loads the model and the data, rank 0 writes (or checks) DIR/manifest.json and
removes temporaries of killed workers, and broadcasts the pending chunks; rank r takes every
W-th of them, verifies each (samples [k·c, (k+1)·c), attack seeded from the chunk) and writes
it atomically. After a barrier rank 0 merges: every (unit test, sample) exactly once, then
DIR/results.json, DIR/sheet.json and the --report files, and the usual table.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from auditai.distributed import group as grp
from auditai.distributed.chunkfile import encode_chunk
from auditai.distributed.shard import (
    DEFAULT_CHUNK_SIZE,
    MANIFEST_SCHEMA,
    RESULTS_SCHEMA,
    TMP_SUFFIX,
    ArrayText,
    Chunk,
    RunFolder,
    RunFolderError,
    canonical_json,
    chunk_seed,
    floats_json,
    manifest_differences,
    merge_results,
    plan,
    sha256_text,
    verdicts_json,
    write_json_atomic,
)
from auditai.errors import AuditaiError, SuiteError


# --------------------------------------------------------------------------- what is run
def unit_test_fields(ut: Any) -> dict:
    """A UnitTest's defining fields (what `auditai.suite.make_unit_test` reads back)."""
    (kind, value), = ut.set.items()
    out: dict[str, Any] = {"name": ut.name, kind: value if isinstance(value, str) else list(value),
                           "norm": ut.norm, "eps": list(ut.eps), "spec": ut.spec, "method": ut.method}
    if ut.report_eps:
        out["report_eps"] = list(ut.report_eps)
    for k in ("max_verified_error", "min_verified_accuracy"):
        if getattr(ut, k) is not None:
            out[k] = getattr(ut, k)
    if ut.description:
        out["description"] = ut.description
    if getattr(ut, "target", None) not in (None, "head"):  # head targets: manifests as before
        out["target"] = ut.target
    return out


def _load(args: argparse.Namespace):
    """(suite with defaults filled, model, data, engine) as `auditai verify` loads them."""
    from auditai.commands.single_test import single_test as _single_test
    from auditai.data import load_data
    from auditai.model import load_model
    from auditai.suite import load_suite

    suite = load_suite(args.suite) if args.suite else _single_test(args)
    model_src, data_src = args.model or suite.model, args.data or suite.data
    if not model_src or not data_src:
        raise SuiteError("no model or data: give --model and --data (or `model:`/`data:` in the suite)",
                         path=suite.path)
    model = load_model(model_src, trust_pickle=args.trust_pickle)
    data = load_data(data_src, model, device="cpu")
    tests = [ut.with_defaults(spec=suite.spec, method=args.method or suite.method, target=getattr(args, "target", None))
             for ut in suite.unit_tests]
    engine = args.engine or suite.engine or "auditai"
    return suite, tests, model, data, engine, (model_src, data_src)


def make_manifest(suite: Any, tests: list, model: Any, data: Any, engine: str, chunk_size: int,
                  sources: tuple[str, str], train_data: str | None, precision: str | None = None) -> dict:
    """The run's manifest: what must agree for DIR to be resumed (see `shard.PINNED`)."""
    from auditai.sheet.record import current_versions

    uts = [unit_test_fields(ut) for ut in tests]
    v = current_versions()
    versions = {"auditai": v.get("auditai"), "torch": v.get("torch")}
    return {
        "schema": MANIFEST_SCHEMA,
        "suite": suite.name,
        "suite_path": suite.path,
        "suite_sha256": sha256_text(canonical_json({"unit_tests": uts, "engine": engine})),
        "model_source": str(sources[0]),
        "model_sha256": model.content_hash,
        "data_source": str(sources[1]),
        "data_sha256": data.content_hash,
        "train_data_source": train_data,
        "n": int(data.z.shape[0]),
        "chunk_size": int(chunk_size),
        "engine": engine,
        "precision": precision,
        "versions": versions,
        "unit_tests": uts,
    }


def _tests_from_manifest(manifest: dict) -> list:
    from auditai.suite import make_unit_test

    return [make_unit_test(f, where=f"manifest unit test '{f.get('name')}'") for f in manifest["unit_tests"]]


# --------------------------------------------------------------------------- one chunk
def verify_chunk(c: Chunk, ut: Any, model: Any, data: Any, engine: str, device: str,
                 precision: str | None = None) -> bytes:
    """The chunk file of one chunk (`chunkfile.encode_chunk`): samples [start, stop) of unit
    test `ut`, attack seeded by chunk."""
    from auditai.blackbox import target_module
    from auditai.verify import verify

    kind = ut.set_kind(model)
    fn = target_module(model, ut.target, f"unit test '{ut.name}'")
    z = data.z[c.start:c.stop]
    y = None if data.y is None else data.y[c.start:c.stop]
    seed = chunk_seed(ut.name, c.k)
    res = verify(fn, z, y, kind, list(ut.all_eps), spec=ut.spec, method=ut.method,
                 device=device, engine=engine, seed=seed, precision=precision,
                 max_time=getattr(ut, "max_time", None))
    return encode_chunk({"unit_test": ut.name, "k": c.k, "start": c.start, "stop": c.stop, "seed": seed},
                        res)


# --------------------------------------------------------------------------- the command
def run_sharded(args: argparse.Namespace) -> int:
    """`auditai verify ... --out DIR` on every rank; rank 0 merges. Returns the exit status."""
    if not args.out:
        raise AuditaiError("under torchrun, `auditai verify` needs --out DIR (the shared run folder "
                           "where ranks write their chunks)")
    t0 = time.perf_counter()
    g = grp.init_group(_device_arg(args.device), timeout_s=float(getattr(args, "dist_timeout", 1800.0)))
    try:
        return _run(args, g, t0, time.perf_counter() - t0)
    finally:
        g.close()


def _precision(args: argparse.Namespace, device: str) -> str:
    """The run's bound arithmetic (pinned in the manifest: a resume may not switch it)."""
    from auditai.bounds.rounding import parse_precision

    return parse_precision(getattr(args, "precision", None), device)


def _device_arg(name: str) -> str:
    return name or "auto"


def _run(args: argparse.Namespace, g: grp.Group, t0: float, group_s: float = 0.0) -> int:
    import torch

    folder = RunFolder(args.out)
    suite, tests, model, data, engine, sources = _load(args)
    old = folder.read_manifest()
    chunk_size = args.chunk_size if args.chunk_size is not None else (
        (old or {}).get("chunk_size") or DEFAULT_CHUNK_SIZE)
    if int(chunk_size) < 1:
        raise AuditaiError(f"--chunk-size must be a number of samples >= 1, got {chunk_size}")
    manifest = make_manifest(suite, tests, model, data, engine, int(chunk_size), sources, suite.train_data,
                             _precision(args, g.device))
    error = None
    if g.rank == 0:
        try:
            folder.check_or_write_manifest(manifest)
            folder.remove_stale_temporaries()
        except AuditaiError as e:
            error = str(e)
    error = g.broadcast(error)
    if error is not None:
        raise RunFolderError(error) if g.rank == 0 else SystemExit(2)
    mine0 = manifest
    manifest = g.broadcast(manifest)  # one plan for every rank: rank 0's
    seen = g.all_gather(manifest_differences(manifest, mine0))  # every rank sees the same files?
    bad = [(r, d) for r, d in enumerate(seen) if d]
    if bad:
        r, d = bad[0]
        raise RunFolderError(f"rank {r} loaded other files than rank 0 ({'; '.join(d)}): every node "
                             "must see the same model, data and suite")
    chunks = plan([ut.name for ut in tests], manifest["n"], manifest["chunk_size"])
    pending = g.broadcast(folder.pending(chunks) if g.rank == 0 else None)
    mine = pending[g.rank::g.world_size]
    by_name = {ut.name: ut for ut in tests}
    threads = torch.get_num_threads()
    t_compute = time.perf_counter()
    for i, c in enumerate(mine):
        rec = verify_chunk(c, by_name[c.name], model, data, engine, g.device,
                           manifest.get("precision"))
        folder.write_chunk(c, rec, before_replace=grp.fault_hook_for_tests(g.rank, i))
    t_done = time.perf_counter()
    compute_s = t_done - t_compute
    stats = g.all_gather({"rank": g.rank, "computed": len(mine), "compute_s": compute_s,
                          "setup_s": t_compute - t0, "group_s": group_s, "start_s": grp.process_age_s() - (t_done - t0)})
    wait_s = time.perf_counter() - t_done
    if g.rank != 0:
        return 0
    t_merge = time.perf_counter()
    sheet = merge_folder(folder, model=model, data=data, reports=args.report, device=g.device)
    merge_s = time.perf_counter() - t_merge
    folder.append_log({
        "world_size": g.world_size, "restart_count": grp.restart_count(), "chunks": len(chunks),
        "pending": len(pending), "computed": [s["computed"] for s in stats],
        "compute_s": [round(s["compute_s"], 4) for s in stats], "merge_s": round(merge_s, 4),
        "wall_s": round(time.perf_counter() - t0, 4), "threads": threads,
        # where the rest of the wall goes: interpreter + imports before the command started,
        # group/model/data/plan set-up, rank 0's wait for the slowest rank
        "start_s": [round(s["start_s"], 3) for s in stats], "setup_s": [round(s["setup_s"], 4) for s in stats],
        "group_s": [round(s["group_s"], 4) for s in stats],
        "wait_s": round(wait_s, 4),
    })
    print(f"auditai verify: {len(chunks)} chunks of {manifest['chunk_size']} samples, "
          f"{len(chunks) - len(pending)} done before, {len(pending)} computed by {g.world_size} rank(s) "
          f"(restart {grp.restart_count()}); merged in {merge_s:.2f} s → {folder.sheet_path}")
    return print_table(sheet, tests)


def merge_folder(folder: RunFolder, *, model: Any = None, data: Any = None, reports=(),
                 device: str | None = None) -> Any:
    """Merge DIR's chunks (every (unit test, sample) exactly once), write DIR/results.json,
    DIR/sheet.json and `reports`; returns the SpecSheet. Loads the model and data from the
    manifest's sources when not given (and checks their hashes)."""
    from auditai.sheet import SheetEntry, SpecSheet
    from auditai.sheet.entry import MAX_COUNTEREXAMPLES_PER_EPS
    from auditai.verify import Counterexample, VerificationResult

    manifest = folder.read_manifest()
    if manifest is None:
        raise RunFolderError(f"{folder.root}: no manifest.json: not a run folder of "
                             "`auditai verify --out`")
    tests = _tests_from_manifest(manifest)
    model, data = _model_data(manifest, model, data)
    chunks = plan([ut.name for ut in tests], manifest["n"], manifest["chunk_size"])
    stray = _stray_chunks(folder, chunks)
    if stray:
        raise RunFolderError(f"{stray[0]}: a chunk file outside the manifest's plan "
                             f"({len(stray)} such files): the run folder is inconsistent")
    train_codes = None
    if manifest.get("train_data_source"):
        from auditai.data import load_data

        train_codes = load_data(manifest["train_data_source"], model, device="cpu").z
    entries, out_tests, arrays = [], [], ArrayText()
    for ut in tests:
        m = merge_results([folder.read_chunk(c) for c in chunks if c.name == ut.name], manifest["n"], ut.name)
        # the sheet keeps the few most violated counterexamples per ε, results.json the worst one:
        # only those become objects (the chunk files keep them all)
        few = m.counterexample_dicts(m.top_per_eps(MAX_COUNTEREXAMPLES_PER_EPS))
        result = VerificationResult(**m.fields, verdicts=m.verdicts, certified_radius=m.radius,
                                    counterexamples=[Counterexample(**c) for c in few])
        kind = ut.set_kind(model)
        entry = SheetEntry.from_result(ut, result, kind, model=model, train_codes=train_codes,
                                       train_source=manifest.get("train_data_source"))
        entries.append(entry)
        stored = {**m.fields, "verdicts": arrays.put(verdicts_json(m.verdicts)),
                  "certified_radius": None if m.radius is None else arrays.put(floats_json(m.radius)),
                  "counterexamples": worst_per_eps(few)}
        out_tests.append({"unit_test": unit_test_fields(ut), "result": stored, "sheet": entry.to_dict()})
    dev = device or (out_tests[0]["result"].get("device") if out_tests else "cpu")
    sheet = SpecSheet.from_results(entries, model=model, data=data, device=dev,
                                   engine=manifest.get("engine", "auditai"), suite=manifest.get("suite"))
    write_json_atomic(folder.results_path, {
        "schema": RESULTS_SCHEMA, "suite": manifest.get("suite"), "manifest": manifest,
        "model": {"source": manifest.get("model_source"), "content_hash": manifest.get("model_sha256")},
        "data": {"source": manifest.get("data_source"), "content_hash": manifest.get("data_sha256"),
                 "n": manifest["n"]},
        "unit_tests": out_tests,
    }, indent=None, raw=arrays.raw)
    sheet.to_json(folder.sheet_path)
    for path in reports or ():
        sheet.write(path, model=model, codes=data.z)
    return sheet


def worst_per_eps(cex: list[dict]) -> list[dict]:
    """The most violated counterexample of each ε (results.json keeps these; the chunk files
    keep them all): a failure message names the worst one, and a full list of d-dimensional
    points for every falsified sample would dwarf the verdicts."""
    best: dict[int, dict] = {}
    for c in cex:
        e = int(c["eps_index"])
        if e not in best or float(c["margin"]) < float(best[e]["margin"]):
            best[e] = c
    return [best[e] for e in sorted(best)]


def _stray_chunks(folder: RunFolder, chunks: list[Chunk]) -> list[Path]:
    expected = {folder.chunk_path(c) for c in chunks}
    if not folder.chunks_dir.exists():
        return []
    return sorted(p for p in folder.chunks_dir.rglob("*") if p.is_file() and not p.name.endswith(TMP_SUFFIX)
                  and p not in expected)


def _model_data(manifest: dict, model: Any, data: Any) -> tuple[Any, Any]:
    from auditai.data import load_data
    from auditai.model import load_model

    if model is None:
        model = load_model(manifest["model_source"])
    if model.content_hash != manifest["model_sha256"]:
        raise RunFolderError(f"model {manifest['model_source']}: sha256 {str(model.content_hash)[:12]}… "
                             f"differs from the run's {manifest['model_sha256'][:12]}…")
    if data is None:
        data = load_data(manifest["data_source"], model, device="cpu")
    if data.content_hash != manifest["data_sha256"]:
        raise RunFolderError(f"data {manifest['data_source']}: sha256 {data.content_hash[:12]}… "
                             f"differs from the run's {manifest['data_sha256'][:12]}…")
    return model, data


def print_table(sheet: Any, tests: list) -> int:
    """The results table of `auditai verify`; 1 when a gate fails, else 0."""
    from tabulate import tabulate

    from auditai import gate

    table, failed = [], 0
    for ut in tests:
        uts = sheet.unit_test(ut.name)
        for row in uts.rows:
            cells, failed_here = gate.table_row(ut, row.eps, row.clean_error, row.verified_error,
                                                row.falsified_fraction, row.unknown_fraction)
            table.append(cells)
            failed += failed_here
    print(tabulate(table, gate.TABLE_HEAD, tablefmt="plain"))
    if failed:
        print(f"{failed} gate(s) failed")
    return 1 if failed else 0


def merge_command(root: str | os.PathLike, reports=()) -> int:
    """`auditai merge DIR`: merge an existing run offline and print its table."""
    folder = RunFolder(root)
    sheet = merge_folder(folder, reports=reports)
    tests = _tests_from_manifest(folder.read_manifest())
    print(f"auditai merge: {folder.sheet_path}")
    return print_table(sheet, tests)
