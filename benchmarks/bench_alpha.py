"""α-CROWN (issue 14) against auto_LiRPA 0.7.1's CROWN-Optimized: time and mean bounds.

Same heads, same sets (an ℓ∞ box on some latent dims), same margin rows, float64, the same
iterations (20), learning rate (0.5) and decay (0.98) on both sides. Our time is the whole
`bound(..., method="alpha-crown")` call (trace cached, guard included); auto_LiRPA's is
`compute_bounds` alone on a BoundedModule built beforehand. Median of `--reps` runs.

    python benchmarks/bench_alpha.py [--reps 3] [--quick]
    python benchmarks/bench_alpha.py --verify [--n 60]   # verdicts for k = 1, 2, 4, 8 directions

Writes benchmarks/results/bench_alpha.md (bench_alpha_verify.md with --verify).

`--verify`: a random head 16 → 64 ×3 → 10 (ReLU), labels = its predictions at the codes (clean
error 0), ℓ∞ boxes over the first k latent dims; verified error / falsified / unknown and time
of `verify` with crown-ibp, crown, alpha-crown and complete (CROWN-IBP pieces for k ≤ 3, CROWN beyond; max_time per
unit test) at each ε.
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from auditai.bounds import bound  # noqa: E402
from auditai.latent import LatentSet  # noqa: E402

ITER = 20


class ResMLP(nn.Module):
    def __init__(self, d: int, w: int, out: int, blocks: int) -> None:
        super().__init__()
        self.inp = nn.Linear(d, w)
        self.blocks = nn.ModuleList([nn.Linear(w, w) for _ in range(blocks)])
        self.out = nn.Linear(w, out)

    def forward(self, z):
        h = F.relu(self.inp(z))
        for b in self.blocks:
            h = F.relu(h + b(h))
        return self.out(h)


def mlp(d, widths, out):
    layers, prev = [], d
    for w in widths:
        layers += [nn.Linear(prev, w), nn.ReLU()]
        prev = w
    return nn.Sequential(*layers, nn.Linear(prev, out))


def heads(quick: bool):
    torch.manual_seed(0)
    rows = [("MLP 8→32×3→4", mlp(8, [32, 32, 32], 4), 8, 4, 16, 0.5),
            ("MLP 16→128×3→10", mlp(16, [128, 128, 128], 10), 16, 10, 32, 0.3),
            ("residual MLP 16→64, 3 blocks →10", ResMLP(16, 64, 10, 3), 16, 10, 32, 0.2)]
    if not quick:
        rows.append(("MLP 32→256×3→10", mlp(32, [256] * 3, 10), 32, 10, 32, 0.2))
    return [(name, h.double().eval(), d, out, n, eps) for name, h, d, out, n, eps in rows]


def margin_C(y, out):
    eye = torch.eye(out, dtype=torch.float64)
    return torch.stack([eye[int(t)].unsqueeze(0) - eye[[j for j in range(out) if j != int(t)]] for t in y])


def lirpa_runner(head, z0, half, C):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from auto_LiRPA import BoundedModule, BoundedTensor
        from auto_LiRPA.perturbations import PerturbationLpNorm

        torch.set_default_dtype(torch.float64)
        opts = {"optimize_bound_args": {"iteration": ITER, "lr_alpha": 0.5, "lr_decay": 0.98}}
        bm = BoundedModule(head, torch.zeros_like(z0), device="cpu", verbose=0, bound_opts=opts)
        x = BoundedTensor(z0, PerturbationLpNorm(norm=math.inf, x_L=z0 - half, x_U=z0 + half))

    def run(method):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lo, up = bm.compute_bounds(x=(x,), C=C, method=method)
        return lo.detach(), up.detach()

    return run


def timed(fn, reps):
    ts, out = [], None
    for _ in range(reps):
        t = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), out


def verify_table(n: int, max_time: float) -> None:
    from auditai.latent import Dims
    from auditai.verify import verify

    torch.manual_seed(3)
    head = mlp(16, [64, 64, 64], 10).double().eval()
    z0 = torch.randn(n, 16, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    with torch.no_grad():
        y = head(z0).argmax(1)
    eps = [0.02, 0.05, 0.1]
    lines = [f"Random head 16 → 64 ×3 → 10 (ReLU), N = {n}, labels = predictions, ℓ∞ box over the first k "
             f"dims, ε = {eps}; complete: CROWN-IBP (k ≤ 3) or CROWN (k > 3) on pieces, split_budget 4096, max_time {max_time:g} s per "
             "unit test. Cell: verified error / falsified / unknown.", "",
             "| k | method | time (s) | " + " | ".join(f"ε={e:g}" for e in eps) + " |",
             "|---:|---|---:|" + "---|" * len(eps)]
    for k in (1, 2, 4, 8):
        for m in ("crown-ibp", "crown", "alpha-crown", "complete"):
            t = time.perf_counter()
            r = verify(head, z0, y, Dims(list(range(k))), eps, method=m, radius=False, split_budget=4096,
                       max_time=max_time)
            t = time.perf_counter() - t
            cells = " | ".join(f"{r.verified_error[i]:.3f} / {r.falsified_fraction[i]:.3f} / "
                               f"{r.unknown_fraction[i]:.3f}" for i in range(len(eps)))
            note = f" ({'; '.join(r.notes)})" if r.notes else ""
            lines.append(f"| {k} | {m}{note} | {t:.2f} | {cells} |")
            print(lines[-1], flush=True)
    out_path = ROOT / "benchmarks" / "results" / "bench_alpha_verify.md"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text("\n".join(lines) + "\n")
    print(f"wrote {out_path}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--verify", action="store_true")
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--max-time", type=float, default=30.0)
    args = ap.parse_args()
    if args.verify:
        verify_table(args.n, args.max_time)
        return
    torch.set_num_threads(max(1, torch.get_num_threads()))
    lines = [f"Device: CPU ({platform.machine()}, {torch.get_num_threads()} threads); torch {torch.__version__}; "
             f"float64; {ITER} iterations, lr 0.5, decay 0.98 on both sides; box on half the latent dims; "
             "margin rows (out − 1 per sample); median of "
             f"{args.reps} runs. Width = mean (upper − lower).", "",
             "| head | N | CROWN width | α-CROWN width (ours) | CROWN-Optimized width (auto_LiRPA) | "
             "mean lower ours / theirs | ours s | auto_LiRPA s | speed-up |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, head, d, out, n, eps in heads(args.quick):
        g = torch.Generator().manual_seed(1)
        z0 = torch.randn(n, d, generator=g, dtype=torch.float64)
        dims = list(range(0, d, 2))
        s = LatentSet.from_dims(z0, dims, eps, "inf")
        with torch.no_grad():
            C = margin_C(head(z0).argmax(1), out)
        half = torch.zeros_like(z0)
        half[:, dims] = eps
        lo_c, up_c = bound(head, s, C, method="crown")
        bound(head, s, C, method="alpha-crown")  # warm-up (trace, first Adam step)
        t_ours, (lo, up) = timed(lambda: bound(head, s, C, method="alpha-crown",
                                               alpha_options={"iterations": ITER}), args.reps)
        run = lirpa_runner(head, z0, half, C)
        run("CROWN-Optimized")
        t_lirpa, (lo_r, up_r) = timed(lambda: run("CROWN-Optimized"), args.reps)
        wc, wo, wr = (float((b - a).detach().mean()) for a, b in ((lo_c, up_c), (lo, up), (lo_r, up_r)))
        lines.append(f"| {name} | {n} | {wc:.4f} | {wo:.4f} | {wr:.4f} | {float(lo.mean()):.4f} / "
                     f"{float(lo_r.mean()):.4f} | {t_ours:.3f} | {t_lirpa:.3f} | {t_lirpa / t_ours:.1f}× |")
        print(lines[-1], flush=True)
    out_path = ROOT / "benchmarks" / "results" / "bench_alpha.md"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text("\n".join(lines) + "\n")
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
