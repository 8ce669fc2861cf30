"""Sharded verification on torchrun: same sheet for 1 and 2 ranks, resume, faults, merge.

Real 2-rank gloo runs (`torchrun --standalone`); the 1-process runs go through the same
command in this process. Each chunk is 8 samples, so the tiny suite is 2 unit tests × 6 chunks.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from auditai.distributed.group import TEST_KILL_ENV

from .conftest import cli, last_launch, results_content, sheet_content, torchrun, verify_args
from .tiny import N_SAMPLES

N_CHUNKS = 12


@pytest.fixture(scope="module")
def one(tiny_dir) -> Path:
    """The 1-process run folder (reference)."""
    assert cli(verify_args("one"), tiny_dir) == 0
    return tiny_dir / "one"


def _each_sample_once(run: Path) -> None:
    d = json.loads((run / "results.json").read_text())
    assert [t["unit_test"]["name"] for t in d["unit_tests"]] == ["pose", "expression"]
    for t in d["unit_tests"]:
        r = t["result"]
        assert r["n"] == N_SAMPLES and len(r["verdicts"]) == N_SAMPLES
        assert len(r["certified_radius"]) == N_SAMPLES
        assert all(0 <= c["sample"] < N_SAMPLES for c in r["counterexamples"])
    assert not list(run.rglob("*.tmp")), "a temporary file was left behind"
    assert len(list((run / "chunks").rglob("*.safetensors"))) == N_CHUNKS


def test_one_process_sheet_matches_unsharded_verify(one, tiny_dir, capsys):
    """The sharded run's figures equal plain `auditai verify` (no --out) on the same suite."""
    sheet = sheet_content(one / "sheet.json")
    rows = {(u["name"], r["eps"]): r for u in sheet["unit_tests"] for r in u["rows"]}
    capsys.readouterr()
    assert cli(["verify", "suite.yaml", "--device", "cpu"], tiny_dir) == 0
    out = capsys.readouterr().out
    for (name, eps), r in rows.items():
        line = next(ln for ln in out.splitlines() if ln.startswith(name) and f" {eps:g} " in ln)
        assert f"{r['verified_error']:.3g}" in line and f"{r['falsified_fraction']:.3g}" in line
    # the suite has verified, falsified and unknown samples (so the attack's seeding matters)
    pose = rows[("pose", 1.0)]
    assert 0 < pose["falsified_fraction"] < pose["verified_error"] < 1
    assert pose["unknown_fraction"] > 0
    _each_sample_once(one)


@pytest.mark.slow  # a torchrun launch
def test_two_ranks_give_the_same_sheet_as_one_process(one, tiny_dir):
    p = torchrun(verify_args("two"), tiny_dir)
    assert p.returncode == 0, p.stdout + p.stderr
    two = tiny_dir / "two"
    assert sheet_content(two / "sheet.json") == sheet_content(one / "sheet.json")
    assert results_content(two / "results.json") == results_content(one / "results.json")
    log = last_launch(two)
    assert log["world_size"] == 2 and log["computed"] == [6, 6] and log["pending"] == N_CHUNKS
    _each_sample_once(two)


def test_rerun_does_only_the_missing_chunk(one, tiny_dir):
    run = tiny_dir / "resume"
    shutil.copytree(one, run)
    victim = sorted((run / "chunks").rglob("*.safetensors"))[3]
    victim.unlink()
    (run / "sheet.json").unlink()
    assert cli(verify_args("resume"), tiny_dir) == 0
    assert last_launch(run)["computed"] == [1] and last_launch(run)["pending"] == 1
    assert victim.exists()
    assert sheet_content(run / "sheet.json") == sheet_content(one / "sheet.json")


def test_a_different_run_is_refused(one, tiny_dir, capsys):
    run = tiny_dir / "refused"
    shutil.copytree(one, run)
    before = sorted(p.name for p in run.rglob("*"))
    capsys.readouterr()
    assert cli(["verify", "suite.yaml", "--out", "refused", "--chunk-size", "16"], tiny_dir) == 2
    err = capsys.readouterr().err
    assert "manifest.json belongs to a different run" in err and "chunk_size: this run 16, the folder 8" in err
    assert err.count("\n") == 1  # one line
    (tiny_dir / "other.yaml").write_text((tiny_dir / "suite.yaml").read_text().replace("0.3, 1.0", "0.3, 0.9"))
    assert cli(verify_args("refused", "other.yaml"), tiny_dir) == 2
    assert "suite_sha256" in capsys.readouterr().err
    assert sorted(p.name for p in run.rglob("*")) == before  # nothing written


@pytest.mark.slow  # a torchrun launch
def test_killed_worker_then_rerun_completes(one, tiny_dir):
    """Rank 1 is SIGKILLed while writing its 3rd chunk; without restarts the run fails, keeps
    every finished chunk, and the same command (here in one process) finishes it."""
    p = torchrun(verify_args("killed"), tiny_dir, env={TEST_KILL_ENV: "1:2"})
    assert p.returncode != 0
    assert "exitcode: -9" in p.stderr or "Signals.SIGKILL" in p.stderr, p.stderr[-2000:]
    run = tiny_dir / "killed"
    done = list((run / "chunks").rglob("*.safetensors"))
    assert 2 <= len(done) < N_CHUNKS  # rank 1's first two chunks survived; the run is incomplete
    assert list(run.rglob("*.tmp")), "the killed write should have left its temporary file"
    assert not (run / "sheet.json").exists()
    assert cli(verify_args("killed"), tiny_dir) == 0
    assert last_launch(run)["computed"] == [N_CHUNKS - len(done)]
    assert sheet_content(run / "sheet.json") == sheet_content(one / "sheet.json")
    _each_sample_once(run)


@pytest.mark.slow  # a torchrun launch
def test_max_restarts_recovers_a_killed_worker(one, tiny_dir):
    p = torchrun(verify_args("restarted"), tiny_dir, max_restarts=1, env={TEST_KILL_ENV: "1:2"})
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    run = tiny_dir / "restarted"
    log = last_launch(run)
    assert log["restart_count"] == 1 and log["world_size"] == 2
    assert 0 < log["pending"] < N_CHUNKS  # the restarted group did only what was left
    assert sheet_content(run / "sheet.json") == sheet_content(one / "sheet.json")
    _each_sample_once(run)


def test_merge_offline(one, tiny_dir, capsys):
    run = tiny_dir / "merged"
    shutil.copytree(one, run)
    (run / "sheet.json").unlink()
    (run / "results.json").unlink()
    capsys.readouterr()
    assert cli(["merge", "merged", "--report", "merged/sheet.md"], tiny_dir) == 0
    assert "expression" in capsys.readouterr().out
    assert sheet_content(run / "sheet.json") == sheet_content(one / "sheet.json")
    assert results_content(run / "results.json") == results_content(one / "results.json")
    assert "| pose |" in (run / "sheet.md").read_text() or "pose" in (run / "sheet.md").read_text()
    # a missing chunk is a clear error, not a partial sheet
    next((run / "chunks").rglob("*.safetensors")).unlink()
    assert cli(["merge", "merged"], tiny_dir) == 2
    assert "is missing: rerun the same command" in capsys.readouterr().err
    assert cli(["merge", "nowhere"], tiny_dir) == 2
    assert "no manifest.json" in capsys.readouterr().err


def test_under_torchrun_without_out_is_an_error(tiny_dir, capsys, monkeypatch):
    for k, v in {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "localhost", "MASTER_PORT": "1"}.items():
        monkeypatch.setenv(k, v)
    assert cli(["verify", "suite.yaml"], tiny_dir) == 2
    assert "under torchrun, `auditai verify` needs --out DIR" in capsys.readouterr().err
