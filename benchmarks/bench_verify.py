"""Benchmark of the verification runner (issue 3): time to verify N samples × 5 ε along one direction
(k = 1) on the engine benchmark's head shape (latent 128 → 1024 ×4 → 10, ReLU), for each bound
method and for the complete 1-D check (ExactLine), with the verdict fractions per ε.

The head is *trained* here, so the numbers mean something (a random-init head verifies nothing by
IBP or CROWN-IBP): a synthetic 10-class problem in the 128-d latent space (Gaussian clusters, unit
covariance), a short natural phase, then a short certified phase (`auditai.train.certified_loss`,
IBP bounds on the direction set, ε ramped to `--train-eps`, χ = 0.5). The direction is the unit
vector between the means of classes 0 and 1 (a "semantic" direction along which some samples can
really be flipped), so the ε grid spans mostly verified to mostly falsified/unknown. The trained
weights are cached under benchmarks/results/.cache (git-ignored), keyed by the training settings.

    python benchmarks/bench_verify.py                  # N = 10,000, all four methods
    python benchmarks/bench_verify.py --n 1000         # quicker
    python benchmarks/bench_verify.py --train-only     # just train (or load) the head

Writes the markdown table to benchmarks/results/bench_verify.md (`--out` to change).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from auditai.latent import Direction  # noqa: E402
from auditai.train import certified_loss  # noqa: E402
from auditai.verify import verify  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
CACHE = RESULTS / ".cache"
D, K, WIDTH = 128, 10, 1024


def make_head(seed: int = 0) -> nn.Sequential:
    """128 → 1024 ×4 → 10 with ReLU (the shape of the engine benchmark's head)."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    w = D
    for _ in range(4):
        layers += [nn.Linear(w, WIDTH), nn.ReLU()]
        w = WIDTH
    layers.append(nn.Linear(w, K))
    return nn.Sequential(*layers)


def problem(seed: int, scale: float):
    """Class means (K×D) and the unit direction between the means of classes 0 and 1."""
    g = torch.Generator().manual_seed(seed)
    mu = scale * torch.randn(K, D, generator=g)
    v = mu[1] - mu[0]
    return mu, v / v.norm()


def sample(mu: torch.Tensor, n: int, seed: int):
    """n codes z ~ N(μ_y, I) with uniform labels y."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, K, (n,), generator=g)
    return mu[y] + torch.randn(n, D, generator=g), y


def trained_head(cfg: dict, log=print) -> tuple[nn.Sequential, dict]:
    """Train the head (natural, then certified IBP phase) or load it from the cache."""
    key = hashlib.sha1(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:12]
    path = CACHE / f"bench_verify_head_{key}.pt"
    h = make_head(cfg["seed"])
    if path.is_file():
        state = torch.load(path, map_location="cpu", weights_only=True)
        h.load_state_dict(state["head"])
        log(f"loaded the trained head from {path}")
        return h.eval(), state["info"]
    mu, v = problem(cfg["seed"], cfg["scale"])
    z, y = sample(mu, cfg["train_n"], cfg["seed"] + 1)
    opt = torch.optim.Adam(h.parameters(), lr=cfg["lr"])
    g = torch.Generator().manual_seed(cfg["seed"] + 2)
    kind = Direction(v, "v")
    n1, n2 = cfg["natural_steps"], cfg["certified_steps"]
    t0 = time.perf_counter()
    h.eval()  # no BatchNorm/Dropout here; bounds are taken in eval mode anyway
    for s in range(n1 + n2):
        idx = torch.randint(0, z.shape[0], (cfg["batch"],), generator=g)
        if s < n1:
            loss = nn.functional.cross_entropy(h(z[idx]), y[idx])
        else:
            frac = min(1.0, (s - n1 + 1) / max(1, int(0.6 * n2)))  # ramp ε over 60 % of the phase
            loss = certified_loss(h, z[idx], y[idx], kind, frac * cfg["train_eps"], "ibp", kappa=cfg["kappa"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (s + 1) % 25 == 0:
            log(f"  step {s + 1}/{n1 + n2}: loss {loss.item():.4f} ({time.perf_counter() - t0:.0f} s)")
    info = {"train_s": time.perf_counter() - t0}
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"head": h.state_dict(), "info": info, "cfg": cfg}, tmp)
    tmp.replace(path)
    log(f"trained the head in {info['train_s']:.0f} s; cached at {path}")
    return h.eval(), info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000, help="samples to verify (default 10,000)")
    ap.add_argument("--eps", type=float, nargs="+", default=[0.5, 1.0, 2.0, 4.0, 8.0])
    ap.add_argument("--methods", nargs="+", default=["ibp", "crown-ibp", "crown", "complete"])
    ap.add_argument("--train-eps", type=float, default=0.5, help="target ε of the certified phase")
    ap.add_argument("--natural-steps", type=int, default=40)
    ap.add_argument("--certified-steps", type=int, default=60)
    ap.add_argument("--train-only", action="store_true")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=str(RESULTS / "bench_verify.md"))
    a = ap.parse_args()
    cfg = {"seed": 0, "scale": 0.35, "train_n": 8192, "batch": 256, "lr": 1e-3, "kappa": 0.5,
           "train_eps": a.train_eps, "natural_steps": a.natural_steps, "certified_steps": a.certified_steps}
    h, info = trained_head(cfg)
    if a.train_only:
        return
    mu, v = problem(cfg["seed"], cfg["scale"])
    z0, y = sample(mu, a.n, cfg["seed"] + 3)  # held-out codes
    h = h.to(a.device)
    z0, y = z0.to(a.device), y.to(a.device)
    kind = Direction(v, "v")
    rows, base = [], None
    for m in a.methods:
        t = time.perf_counter()
        r = verify(h, z0, y, kind, a.eps, method=m, radius=False, device=a.device)
        dt = time.perf_counter() - t
        if m == "crown-ibp":
            base = dt
        rows.append((m, dt, r))
        print(f"{m}: {dt:.1f} s  unknown {[round(u, 3) for u in r.unknown_fraction]}", flush=True)
    eps_s = ", ".join(f"{e:g}" for e in a.eps)
    lines = [
        f"Verification of {a.n:,} samples × {len(a.eps)} ε (ε = {eps_s}) along one direction (k = 1), "
        f"head 128 → 1024 ×4 → 10 (ReLU), spec 'label'. The head is trained in the benchmark on 10 Gaussian "
        f"clusters in 128-d ({cfg['natural_steps']} natural + {cfg['certified_steps']} certified IBP steps, "
        f"batch {cfg['batch']}, ε_train = {cfg['train_eps']:g}, {info['train_s']:.0f} s when trained); the "
        "direction is the unit vector between the means of classes 0 and 1; held-out codes. "
        f"Clean error {rows[0][2].clean_error[0]:.3f}. {a.device}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}. Bounds in float64 with "
        "the rounding tolerance; latent PGD on the rows the bounds leave undecided (iterations in float32, "
        "every counterexample confirmed in float64); `crown` and `complete` check the endpoints ±ε (float64) "
        "before bounding; `complete` = CROWN-IBP, then ExactLine on the samples left undecided; radius off.",
        "",
        "Each cell: verified error / falsified fraction / unknown fraction (gap = verified error − falsified).",
        "",
        "| method | time (s) | × CROWN-IBP | " + " | ".join(f"ε={e:g}" for e in a.eps) + " | gap at ε="
        + ", ".join(f"{e:g}" for e in a.eps) + " |",
        "|---|---|---|" + "---|" * len(a.eps) + "---|",
    ]
    for m, dt, r in rows:
        cells = [f"{ve:.3f} / {ff:.3f} / {uf:.3f}" for ve, ff, uf in
                 zip(r.verified_error, r.falsified_fraction, r.unknown_fraction)]
        gap = ", ".join(f"{max(ve - ff, 0.0):.3f}" for ve, ff in zip(r.verified_error, r.falsified_fraction))
        ratio = f"{dt / base:.2f}" if base else "–"
        name = "complete (ExactLine, k = 1)" if m == "complete" else m
        lines.append(f"| {name} | {dt:.1f} | {ratio} | " + " | ".join(cells) + f" | {gap} |")
    text = "\n".join(lines) + "\n"
    print(text)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(text)


if __name__ == "__main__":
    main()
