"""Benchmark of the verification runner (issue 3): time to verify N samples × 5 ε on the
engine benchmark's head (latent 128 → 1024 ×4 → 10, ReLU, random init) along one direction
(k = 1), for each method and the complete 1-D check, with the verdict fractions.

    python benchmarks/bench_verify.py            # N = 10,000 (slow on 2 CPU cores)
    python benchmarks/bench_verify.py --n 500    # quick run

Writes the markdown table to benchmarks/results/bench_verify.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch
from torch import nn

from auditai.latent import Direction
from auditai.verify import verify


def head(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    layers, w = [], 128
    for _ in range(4):
        layers += [nn.Linear(w, 1024), nn.ReLU()]
        w = 1024
    layers.append(nn.Linear(w, 10))
    return nn.Sequential(*layers).eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=10_000, help="samples (default 10,000)")
    ap.add_argument("--eps", type=float, nargs="+", default=[0.01, 0.02, 0.05, 0.1, 0.2])
    ap.add_argument("--methods", nargs="+", default=["ibp", "crown-ibp", "complete"],
                    help="crown is ~13× CROWN-IBP here: add it for small --n only")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "bench_verify.md"))
    a = ap.parse_args()
    h = head().to(a.device)
    g = torch.Generator().manual_seed(1)
    z0 = torch.randn(a.n, 128, generator=g).to(a.device)
    v = torch.randn(128, generator=g)
    with torch.no_grad():
        y = h(z0).argmax(1)
    y[: a.n // 20] = (y[: a.n // 20] + 1) % 10  # 5 % clean mistakes
    rows, base = [], None
    for m in a.methods:
        t = time.perf_counter()
        r = verify(h, z0, y, Direction(v, "v"), a.eps, method=m, radius=False, device=a.device)
        dt = time.perf_counter() - t
        if m == "crown-ibp":
            base = dt
        rows.append((m, dt, r))
        print(f"{m}: {dt:.1f} s", flush=True)
    lines = [
        f"Verification of {a.n:,} samples × {len(a.eps)} ε along one direction (k = 1), head 128 → 1024 ×4 → 10 "
        f"(ReLU, random init), spec 'label', 5 % clean mistakes; {a.device}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}. Bounds in float64; "
        "attack on unknown rows (20 steps × 2 restarts) included; radius off.",
        "",
        "| method | time (s) | × CROWN-IBP | " + " | ".join(f"ε={e:g} verified err / falsified / unknown" for e in a.eps) + " |",
        "|---|---|---|" + "---|" * len(a.eps),
    ]
    for m, dt, r in rows:
        cells = [f"{ve:.3f} / {ff:.3f} / {uf:.3f}" for ve, ff, uf in
                 zip(r.verified_error, r.falsified_fraction, r.unknown_fraction)]
        ratio = f"{dt / base:.1f}" if base else "–"
        name = "complete (ExactLine, k = 1)" if m == "complete" else m
        lines.append(f"| {name} | {dt:.1f} | {ratio} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
