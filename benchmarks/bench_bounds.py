"""Speed of the bound engine against a plain forward pass and against auto_LiRPA (issue 2).

Head of the paper's shape: 5 fully connected layers with ReLU, latent 128 → 1024 → 1024 →
1024 → 1024 → 10; a box on 8 latent dims; m = 9 margin rows (label vs each other class).
Every figure is a ratio to a forward pass of the same head, measured in the same run, so
machines and load cancel out. Writes a Markdown table to benchmarks/results/bench_bounds.md.

    python benchmarks/bench_bounds.py [--batches 1 64 1024 16384] [--device cpu|cuda] [--quick]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from auditai.bounds import bound  # noqa: E402
from auditai.bounds.lirpa import auto_lirpa_available  # noqa: E402
from auditai.latent import LatentSet  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def paper_head(device, dtype=torch.float32) -> nn.Sequential:
    torch.manual_seed(0)
    widths = [128, 1024, 1024, 1024, 1024, 10]
    layers = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1]).to(device=device, dtype=dtype).eval()


def margin_matrix(labels: torch.Tensor, classes: int) -> torch.Tensor:
    n = labels.shape[0]
    eye = torch.eye(classes, device=labels.device)
    C = eye[labels].unsqueeze(1) - eye.unsqueeze(0)  # n × classes × classes
    keep = torch.ones(n, classes, dtype=torch.bool, device=labels.device)
    keep[torch.arange(n), labels] = False
    return C[keep].reshape(n, classes - 1, classes)


def paired(fn, fwd, device, min_time=0.5, max_reps=30) -> tuple[float, float]:
    """(median time of fn, median of fn's time over the adjacent forward pass's time).

    Forward and bound calls alternate, so a slow patch of a shared machine hits both.
    """
    def once(f) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        f()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t

    fn(), fwd()
    times, ratios, total = [], [], 0.0
    while not times or (total < min_time and len(times) < max_reps):
        tf = sum(once(fwd) for _ in range(3)) / 3
        tb = once(fn)
        times.append(tb)
        ratios.append(tb / tf)
        total += tb
    times.sort()
    ratios.sort()
    return times[len(times) // 2], ratios[len(ratios) // 2]


def peak_memory(method: str, n: int, upper: bool, device) -> float | None:
    """Peak memory (MiB) of one bound call above what inputs and a forward pass use.

    CUDA: the allocator's peak. CPU: the growth of the peak resident set of a fresh process
    (torch's CPU allocations are invisible to tracemalloc).
    """
    if device.type == "cuda":
        head = paper_head(device)
        z0, C, s = make_inputs(n, device)
        with torch.no_grad():
            head(z0)
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
            bound(head, s, C, method=method, bound_upper=upper)
            torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    import subprocess

    out = subprocess.run(
        [sys.executable, __file__, "--memory-probe", method, str(n), "1" if upper else "0"],
        capture_output=True, text=True, timeout=600,
    )
    try:
        return float(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None


def make_inputs(n: int, device):
    g = torch.Generator().manual_seed(n)
    z0 = torch.randn(n, 128, generator=g).to(device)
    labels = torch.randint(0, 10, (n,), generator=g).to(device)
    return z0, margin_matrix(labels, 10), LatentSet.from_dims(z0, list(range(8)), 0.05)


def _peak_rss_mib() -> float:
    """This process's peak resident set (VmHWM; unlike ru_maxrss it is not inherited on fork)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return float(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _memory_probe(method: str, n: int, upper: bool) -> None:
    head = paper_head(torch.device("cpu"))
    z0, C, s = make_inputs(n, torch.device("cpu"))
    with torch.no_grad():
        head(z0)
        before = _peak_rss_mib()
        bound(head, s, C, method=method, bound_upper=upper)
        after = _peak_rss_mib()
    print(after - before)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 64, 1024, 16384])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--crown-max-batch", type=int, default=1024, help="largest batch for our full CROWN")
    ap.add_argument("--lirpa-crown-max-batch", type=int, default=64, help="largest batch for auto_LiRPA's CROWN")
    ap.add_argument("--no-lirpa", action="store_true")
    ap.add_argument("--lirpa-max-batch", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=str(RESULTS / "bench_bounds.md"))
    ap.add_argument("--memory-probe", nargs=3, metavar=("METHOD", "N", "UPPER"), help=argparse.SUPPRESS)
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory column")
    args = ap.parse_args()
    if args.memory_probe:
        _memory_probe(args.memory_probe[0], int(args.memory_probe[1]), args.memory_probe[2] == "1")
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    head = paper_head(device)
    have_lirpa, lirpa_version = auto_lirpa_available()
    use_lirpa = have_lirpa and not args.no_lirpa
    rows = []
    with torch.no_grad():
        for n in args.batches:
            z0, C, s = make_inputs(n, device)
            fwd = lambda: head(z0)  # noqa: E731
            cases = [("ibp", True), ("crown-ibp", False), ("crown-ibp", True)]
            if n <= args.crown_max_batch:
                cases.append(("crown", True))
            for method, upper in cases:
                slow = method == "crown"
                t, ratio = paired(lambda: bound(head, s, C, method=method, bound_upper=upper), fwd, device,
                                  min_time=0.0 if slow else 1.0, max_reps=1 if slow else 30)
                mem = None if args.no_memory or n < 64 else peak_memory(method, n, upper, device)
                t_l = ratio_l = None
                if use_lirpa and n <= (args.lirpa_crown_max_batch if method == "crown" else args.lirpa_max_batch):
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        t_l, ratio_l = paired(
                            lambda: bound(head, s, C, method=method, bound_upper=upper, engine="auto_lirpa"),
                            fwd, device, min_time=0.0 if slow else 1.0, max_reps=1 if slow else 10)
                rows.append({
                    "batch": n, "method": method + ("" if upper else " (lower only)"),
                    "samples/s": n / t, "ms": t * 1e3, "× forward": ratio,
                    "auto_LiRPA × forward": ratio_l,
                    "speed-up": None if t_l is None else t_l / t,
                    "peak MiB": mem,
                })
                r = rows[-1]
                print(f"N={n:6d} {r['method']:24s} {r['ms']:10.2f} ms  {r['× forward']:9.1f}× fwd"
                      + ("" if t_l is None else f"  auto_LiRPA {r['auto_LiRPA × forward']:9.1f}×  speed-up {r['speed-up']:.2f}×"),
                      flush=True)
    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    lines = [
        f"Device: {dev}; torch {torch.__version__}; auto_LiRPA {lirpa_version if use_lirpa else 'not run'}; float32.",
        "Head 128→1024→1024→1024→1024→10 (ReLU), box on 8 latent dims (ε=0.05), m=9 margin rows. "
        "× forward: median over repetitions of a bound call's time over the forward passes timed next to it.",
        "",
        "| batch | method | samples/s | ms | × forward | auto_LiRPA × forward | speed-up vs auto_LiRPA | peak MiB |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    f = lambda v, fmt: "–" if v is None else format(v, fmt)  # noqa: E731
    for r in rows:
        lines.append(f"| {r['batch']} | {r['method']} | {r['samples/s']:.0f} | {r['ms']:.2f} | {r['× forward']:.1f} | "
                     f"{f(r['auto_LiRPA × forward'], '.1f')} | {f(r['speed-up'], '.2f')} | {f(r['peak MiB'], '.0f')} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
