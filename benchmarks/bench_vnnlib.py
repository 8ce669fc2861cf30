"""`auditai vnnlib` on generator∘classifier properties (issue 12's target: ≈350k parameters, up
to 10 perturbed latent inputs, decided in < 10 s median on 2 CPU cores).

The network: a generator Linear(10→1024) → 64×4×4 → ConvTranspose2d → ReLU → ConvTranspose2d →
Sigmoid (1×16×16 images), then a CNN Conv → ReLU → Conv → ReLU → Linear(2048→128) → ReLU →
Linear(128→10), its last layer calibrated so that all classes occur on N(0, I) codes. Properties:
robustness of the predicted class at random codes, k latent coordinates perturbed by ε.

    OMP_NUM_THREADS=2 python benchmarks/bench_vnnlib.py [--n 10] [--k 10] [--timeout 30]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from auditai.vnnlib import decide, parse_vnnlib


def network(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    gen = nn.Sequential(nn.Linear(10, 1024), nn.Unflatten(1, (64, 4, 4)), nn.ConvTranspose2d(64, 32, 4, 2, 1),
                        nn.ReLU(), nn.ConvTranspose2d(32, 1, 4, 2, 1), nn.Sigmoid())
    clf = nn.Sequential(nn.Conv2d(1, 16, 3, 1, 1), nn.ReLU(), nn.Conv2d(16, 32, 4, 2, 1), nn.ReLU(), nn.Flatten(),
                        nn.Linear(2048, 128), nn.ReLU(), nn.Linear(128, 10))
    net = nn.Sequential(gen, clf).eval()
    with torch.no_grad():
        gen[0].weight.mul_(3.0)
        out = net(torch.randn(2000, 10, generator=torch.Generator().manual_seed(5)))
        s = out.std(0).mean()
        clf[-1].bias.sub_(out.mean(0)).div_(s)
        clf[-1].weight.div_(s)
    return net


def prop_text(x0: torch.Tensor, k: int, eps: float, label: int, n_out: int) -> str:
    lines = [f"(declare-const X_{i} Real)" for i in range(x0.numel())]
    lines += [f"(declare-const Y_{j} Real)" for j in range(n_out)]
    for i in range(x0.numel()):
        e = eps if i < k else 0.0
        lines += [f"(assert (<= X_{i} {float(x0[i]) + e!r}))", f"(assert (>= X_{i} {float(x0[i]) - e!r}))"]
    lines.append("(assert (or " + " ".join(f"(and (>= Y_{j} Y_{label}))" for j in range(n_out) if j != label) + "))")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--eps", type=float, nargs="+", default=[0.01, 0.05, 0.2])
    ap.add_argument("--timeout", type=float, default=30.0)
    a = ap.parse_args()
    net = network()
    print(f"parameters: {sum(p.numel() for p in net.parameters()):,}")
    z = torch.randn(a.n, 10, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        labels = net(z).argmax(1)
    for eps in a.eps:
        times, counts = [], {}
        for i in range(a.n):
            prop = parse_vnnlib(prop_text(z[i], a.k, eps, int(labels[i]), 10))
            t = time.perf_counter()
            ans = decide(net, prop, timeout=a.timeout)
            times.append(time.perf_counter() - t)
            counts[ans.status] = counts.get(ans.status, 0) + 1
        print(f"k={a.k} eps={eps:g}: {counts}  median {statistics.median(times):.2f} s  max {max(times):.2f} s")


if __name__ == "__main__":
    main()
