"""Speed of the graph IR engine (issue 11): chain heads before/after, graph heads against auto_LiRPA.

1. Chain heads are no slower than before the graph IR: the paper-shaped 128→1024×4→10 head is
   bounded by this tree and by a reference revision (default 44d77e8, the last commit before the
   IR), each as a ratio to a forward pass measured in the same process, the two processes run
   one after the other in this run.
2. A residual MLP head and a small conv ResNet head (custom forward: residual adds, BatchNorm,
   average pooling), bounded by our graph engine and by auto_LiRPA 0.7.1 in the same process.

    python benchmarks/bench_graph.py [--ref REV] [--quick]

Writes benchmarks/results/bench_graph.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"

CHAIN_SNIPPET = r"""
import json, sys, time, torch
from torch import nn
sys.path.insert(0, sys.argv[1])
from auditai.bounds import bound
from auditai.latent import LatentSet
torch.manual_seed(0)
torch.set_num_threads(int(sys.argv[3]))
w = [128, 1024, 1024, 1024, 1024, 10]
layers = []
for a, b in zip(w[:-1], w[1:]):
    layers += [nn.Linear(a, b), nn.ReLU()]
head = nn.Sequential(*layers[:-1]).eval()
n = int(sys.argv[2])
s = LatentSet.from_dims(torch.randn(n, 128), dims=list(range(8)), eps=0.05)
C = torch.randn(9, 10)
out = {}
with torch.no_grad():
    for method in ("ibp", "crown-ibp"):
        bound(head, s, C, method=method); head(s.z0)
        ratios = []
        for _ in range(7):
            t = time.perf_counter(); head(s.z0); head(s.z0); head(s.z0); tf = (time.perf_counter() - t) / 3
            t = time.perf_counter(); bound(head, s, C, method=method); tb = time.perf_counter() - t
            ratios.append(tb / tf)
        ratios.sort()
        out[method] = ratios[len(ratios) // 2]
print(json.dumps(out))
"""


class ResMLP(nn.Module):
    def __init__(self, d=64, w=256, blocks=2, out=10):
        super().__init__()
        self.inp = nn.Linear(d, w)
        self.blocks = nn.ModuleList([nn.Sequential(nn.Linear(w, w), nn.ReLU(), nn.Linear(w, w)) for _ in range(blocks)])
        self.out = nn.Linear(w, out)

    def forward(self, z):
        h = F.relu(self.inp(z))
        for b in self.blocks:
            h = F.relu(h + b(h))
        return self.out(h)


class ConvResNet(nn.Module):
    """latent → 8×8×8 image → two residual conv blocks with BatchNorm → average pool → logits."""

    def __init__(self, d=32, c=8, out=10):
        super().__init__()
        self.c = c
        self.inp = nn.Linear(d, c * 8 * 8)
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)
        self.pool = nn.AvgPool2d(2)
        self.out = nn.Linear(c * 4 * 4, out)
        for bn in (self.bn1, self.bn2):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 1.5)

    def forward(self, z):
        x = F.relu(self.inp(z)).view(-1, self.c, 8, 8)
        x = F.relu(x + self.bn1(self.conv1(x)))
        x = F.relu(x + self.bn2(self.conv2(x)))
        return self.out(self.pool(x).flatten(1))


def _time(fn, reps=3) -> float:
    fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    ts.sort()
    return ts[len(ts) // 2]


def chain_rows(refs: list[str], n: int, threads: int) -> list[str]:
    """One row per reference revision (each in its own temporary worktree), then this tree."""
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        trees = []
        for i, ref in enumerate(refs):
            tree = Path(tmp) / f"ref{i}"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tree), ref], check=True)
            trees.append((f"{ref}", tree))
        try:
            for name, tree in trees + [("this tree", ROOT)]:
                out = subprocess.run([sys.executable, "-c", CHAIN_SNIPPET, str(tree), str(n), str(threads)],
                                     check=True, capture_output=True, text=True).stdout
                res[name] = json.loads(out.strip().splitlines()[-1])
        finally:
            for _, tree in trees:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
    rows = ["| chain head 128→1024×4→10, batch %d | IBP / forward | CROWN-IBP / forward |" % n, "|---|---|---|"]
    for name, r in res.items():
        rows.append(f"| {name} | {r['ibp']:.2f}× | {r['crown-ibp']:.2f}× |")
    return rows


def graph_rows(quick: bool) -> list[str]:
    from auditai.bounds import bound
    from auditai.bounds.lirpa import auto_lirpa_available
    from auditai.latent import LatentSet

    ok, why = auto_lirpa_available()
    rows = ["| head | method | batch | auditai | auto_LiRPA | speed-up | max abs. difference |", "|---|---|---|---|---|---|---|"]
    torch.manual_seed(0)
    heads = [("residual MLP 64→256 (2 residual blocks)→10", ResMLP().double().eval(), 64),
             ("conv ResNet 32→8×8×8 (2 residual conv+BN blocks, avg pool)→10", ConvResNet().double().eval(), 32)]
    for name, head, d in heads:
        for method, n in (("ibp", 256), ("crown-ibp", 256 if not quick else 64), ("crown", 8)):
            s = LatentSet.from_dims(torch.randn(n, d, dtype=torch.float64), dims=list(range(4)), eps=0.05)
            C = torch.randn(9, 10, dtype=torch.float64)
            with torch.no_grad():
                ours = _time(lambda: bound(head, s, C, method=method))
                lo_a, up_a = bound(head, s, C, method=method)
            if ok:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    theirs = _time(lambda: bound(head, s, C, method=method, engine="auto_lirpa"), reps=1)
                    lo_b, up_b = bound(head, s, C, method=method, engine="auto_lirpa")
                diff = float(torch.maximum((lo_a - lo_b).abs().max(), (up_a - up_b).abs().max()))
                rows.append(f"| {name} | {method} | {n} | {ours * 1e3:.0f} ms | {theirs * 1e3:.0f} ms | "
                            f"{theirs / ours:.1f}× | {diff:.1e} |")
            else:
                rows.append(f"| {name} | {method} | {n} | {ours * 1e3:.0f} ms | ({why}) | | |")
    return rows


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ref", default=["44d77e8"], nargs="+",
                    help="reference revisions (default: 44d77e8, the last before the graph IR)")
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads (default: torch's)")
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    lines = [f"Machine: {_cpu_name()}, {threads} threads, torch {torch.__version__}", ""]
    lines += chain_rows(args.ref, args.batch if not args.quick else 256, threads) + [""]
    lines += graph_rows(args.quick)
    text = "\n".join(lines) + "\n"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_graph.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
