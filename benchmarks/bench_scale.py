"""Sharded verification at scale (issue 13): samples per second against the number of ranks,
float32 against float64 bounds, and the time spent outside the ranks' own compute.

Runs the real command, `torchrun --standalone --nproc-per-node R -m auditai verify SUITE --out DIR
--precision P`, on CPU with gloo and one thread per rank, for R in --ranks and P in
float64/float32, on a seeded head 32 → 256 → 256 → 10 (ReLU) and --n codes (one unit test:
a box on 4 latent dims, 2 ε, CROWN-IBP, certified radii by bisection). Each run's DIR/runs.jsonl
gives every rank's compute time (verifying and writing its chunks), rank 0's set-up (process
group, loading the suite, model and codes, the manifest and the plan), its wait for the slowest
rank and its merge time, and each rank's start-up before the command (interpreter and imports);
"beyond" = wall − the slowest rank's compute (set-up, barriers, merging, writing the sheet), and
"beyond incl. start-up" counts the wall from rank 0's process start.
The verdicts of float32 and float64 are compared cell by cell. Writes
benchmarks/results/bench_scale.md.

    python benchmarks/bench_scale.py [--n 100000] [--ranks 1 2] [--chunk-size 5000] [--quick]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = Path(__file__).resolve().parent / "results"

SUITE = textwrap.dedent(
    """\
    suite: scale
    model: model.auditai
    data: data.pt
    spec: label
    method: crown-ibp
    unit_tests:
      - name: box4
        dims: [0, 1, 2, 3]
        eps: [0.02, 0.05]
    """
)


def write_problem(folder: Path, n: int, widths: list[int]) -> None:
    """model.auditai (a seeded ReLU head), data.pt (n codes, labels with 5 % flipped), suite.yaml."""
    from auditai.model import AuditModel, save_model

    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(widths):
        layers += [nn.Linear(a, b), nn.ReLU()]
    head = nn.Sequential(*layers[:-1]).eval()
    with torch.no_grad():
        for p in head.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (2.0 / p.shape[-1]) ** 0.5)
        z = torch.randn(n, widths[0], generator=g)
        y = head(z).argmax(1)
    flip = torch.rand(n, generator=g) < 0.05
    y = torch.where(flip, (y + 1) % widths[-1], y)
    save_model(folder / "model.auditai", AuditModel(head))
    torch.save({"z": z, "y": y}, folder / "data.pt")
    (folder / "suite.yaml").write_text(SUITE)


def run(folder: Path, ranks: int, precision: str, chunk: int) -> dict:
    out = folder / f"run-{precision}-{ranks}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks),
           "-m", "auditai", "verify", "suite.yaml", "--out", out.name, "--chunk-size", str(chunk),
           "--device", "cpu", "--precision", precision]
    t = time.perf_counter()
    p = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, check=False)
    total = time.perf_counter() - t
    if p.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)} failed:\n{p.stdout}\n{p.stderr}")
    log = json.loads((out / "runs.jsonl").read_text().splitlines()[-1])
    res = json.loads((out / "results.json").read_text())["unit_tests"][0]["result"]
    return {"log": log, "process_s": total, "verdicts": torch.tensor(res["verdicts"]),
            "precision": res.get("precision")}


def _table(rows: list) -> list[str]:
    lines = [("| precision | ranks | samples/s | wall (s) | slowest rank's compute (s) | set-up (s) | wait (s) | "
              "merge (s) | beyond compute (s) | beyond (% of wall) | start-up before the command (s) | "
              "beyond incl. start-up (% of wall incl. start-up) | torchrun process (s) |"),
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        used, r, sps, wall, slow, setup, wait, merge, beyond, pct, start, pct_start, proc = row
        lines.append(f"| {used} | {r} | {sps:,.0f} | {wall:.2f} | {slow:.2f} | {setup:.2f} | {wait:.2f} | "
                     f"{merge:.2f} | {beyond:.2f} | {pct:.1f} % | {start:.2f} | {pct_start:.1f} % | {proc:.1f} |")
    return lines


def _measure(folder: Path, n: int, ranks: list[int], precisions: list[str], chunk: int) -> tuple[list, dict]:
    rows, runs = [], {}
    for precision in precisions:
        for r in ranks:
            res = run(folder, r, precision, chunk)
            runs[(precision, r)] = res
            log = res["log"]
            wall = float(log["wall_s"])
            slowest = max(log["compute_s"])
            beyond = wall - slowest
            start = float(log["start_s"][0])
            rows.append((res["precision"], r, n / wall, wall, slowest, float(log["setup_s"][0]),
                         float(log["wait_s"]), float(log["merge_s"]), beyond, 100 * beyond / wall, start,
                         100 * (beyond + start) / (wall + start), res["process_s"]))
            print(rows[-1], flush=True)
    return rows, runs


def _verdict_diff(a: dict, b: dict) -> str:
    v64, v32 = a["verdicts"], b["verdicts"]
    diff = v64 != v32
    kinds: dict = {}
    for x, y in zip(v64[diff].tolist(), v32[diff].tolist()):
        kinds[(x, y)] = kinds.get((x, y), 0) + 1
    desc = ", ".join(f"{c} cells float64 {x:+d} → float32 {y:+d}" for (x, y), c in sorted(kinds.items())) or "none"
    return f"verdicts differing in {int(diff.sum())} of {v64.numel()} cells ({desc})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000, help="codes for the ranks table")
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--n-precision", type=int, default=10_000, help="codes for the precision table")
    ap.add_argument("--chunk-size", type=int, default=5000)
    ap.add_argument("--quick", action="store_true", help="10,000 and 2,000 codes")
    args = ap.parse_args()
    n, n_prec = (10_000, 2_000) if args.quick else (args.n, args.n_precision)
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                   if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    small, wide = [16, 32, 32, 10], [32, 256, 256, 10]
    with tempfile.TemporaryDirectory() as tmp:
        write_problem(Path(tmp) / "small", n, small)
        rows_r, runs_r = _measure(Path(tmp) / "small", n, args.ranks, ["float64"], args.chunk_size)
        write_problem(Path(tmp) / "wide", n_prec, wide)
        rows_p, runs_p = _measure(Path(tmp) / "wide", n_prec, [1], ["float64", "float32"],
                                  max(1, min(args.chunk_size, n_prec // 2)))
    head = lambda w: " → ".join(map(str, w))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [(f"CPU: {cpu} ({os.cpu_count()} cores, shared with other jobs; load average {load:.1f} at the end), "
              f"torch {torch.__version__}, one thread per rank, gloo; one unit test (a box on 4 latent dims, "
              "2 ε, CROWN-IBP, certified radii by bisection); wall = rank 0's time from the command's start "
              "(loading included) to the written sheet; beyond = wall − the slowest rank's compute."), "",
             f"**Ranks**: {n:,} codes, head {head(small)} (ReLU), chunks of {args.chunk_size}.", ""]
    lines += _table(rows_r) + [""]
    if len(args.ranks) > 1:
        one, two = runs_r[("float64", args.ranks[0])], runs_r[("float64", args.ranks[-1])]
        same = torch.equal(one["verdicts"], two["verdicts"])
        lines.append(f"- {args.ranks[-1]} ranks give {'the same' if same else 'DIFFERENT'} verdicts as "
                     f"{args.ranks[0]}; throughput × {one['log']['wall_s'] / two['log']['wall_s']:.2f}.")
    lines += ["", f"**Precision**: {n_prec:,} codes, head {head(wide)} (ReLU), 1 rank.", ""]
    lines += _table(rows_p) + [""]
    a, b = runs_p[("float64", 1)], runs_p[("float32", 1)]
    t64, t32 = a["log"]["wall_s"], b["log"]["wall_s"]
    c64, c32 = max(a["log"]["compute_s"]), max(b["log"]["compute_s"])
    lines.append(f"- float32 against float64: wall speed-up {t64 / t32:.2f}×, compute speed-up {c64 / c32:.2f}×; "
                 f"{_verdict_diff(a, b)}.")
    text = "\n".join(lines) + "\n"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_scale.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
