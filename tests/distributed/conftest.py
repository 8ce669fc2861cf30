"""Fixtures for the torchrun tests: the tiny model's files and helpers to run the command.

torchrun launches are real (gloo on CPU, 2 ranks) and cost a few seconds each, so the tests
launch it only where a second process matters (4 launches in all); everything else runs
`auditai.cli.main` in this process (one process, the same code path without a group).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch  # noqa: F401  (imported in the outer process, for pytester's in-process runs)

sys.path.insert(0, str(Path(__file__).parent))
from tiny import CHUNK, write_tiny


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny")
    write_tiny(folder)
    return folder


def torchrun(args: list[str], cwd: Path, nproc: int = 2, max_restarts: int = 0, env: dict | None = None,
             timeout: float = 240.0) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc-per-node N [--max-restarts R] -m auditai ARGS` (gloo, CPU)."""
    e = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RESTART_COUNT"):
        e.pop(k, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
           "--max-restarts", str(max_restarts), "--monitor-interval", "0.2", "-m", "auditai", *args]
    return subprocess.run(cmd, cwd=cwd, env=e, capture_output=True, text=True, timeout=timeout, check=False)


def cli(args: list[str], cwd: Path) -> int:
    """`auditai ARGS` in this process (one process), run from `cwd`."""
    from auditai.cli import main

    old = os.getcwd()
    os.chdir(cwd)
    try:
        return main(args)
    finally:
        os.chdir(old)


def verify_args(out: str, suite: str = "suite.yaml") -> list[str]:
    return ["verify", suite, "--out", out, "--chunk-size", str(CHUNK), "--device", "cpu"]


def sheet_content(path: Path) -> dict:
    """The spec-sheet without what legitimately differs between runs (times, creation date)."""
    d = json.loads(path.read_text())
    d.pop("created")
    for ut in d["unit_tests"]:
        for row in ut["rows"]:
            row.pop("time_s", None)
    return d


def results_content(path: Path) -> list[dict]:
    """results.json's per-unit-test results (verdicts, radii, counterexamples) without times."""
    d = json.loads(path.read_text())
    out = []
    for t in d["unit_tests"]:
        r = dict(t["result"])
        r.pop("time_s")
        out.append(r)
    return out


def last_launch(run: Path) -> dict:
    return json.loads((run / "runs.jsonl").read_text().splitlines()[-1])
