"""Read a folder of ONNX networks (e.g. the VNN-COMP benchmarks) and check each one.

    python benchmarks/public_onnx.py DIR [--samples 64] [--width 0.01]

Nothing is downloaded: point it at networks you have. For each `*.onnx` file: read it into the
graph IR (`auditai.load_onnx_graph`), compare its outputs with onnxruntime's on random inputs
in [0, 1] (the max relative difference), bound a small box around a random point with IBP and
CROWN-IBP (`auditai.bounds.bound_box`) and check that sampled outputs of the box lie inside
(float64). Prints a markdown table (what benchmarks/README.md shows).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch


def _ort_run(path: Path, x: np.ndarray, in_shape: list) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]  # one sample per run
    outs = [sess.run(None, {inp.name: x[i].astype(np.float32).reshape(shape)})[0].reshape(1, -1)
            for i in range(x.shape[0])]
    return np.concatenate(outs)


def check(path: Path, samples: int, width: float) -> dict:
    from auditai import load_onnx_graph
    from auditai.bounds import bound_box

    row = {"network": path.name}
    t0 = time.perf_counter()
    try:
        net = load_onnx_graph(path)
    except Exception as e:  # noqa: BLE001 - reported in the table
        row["read"] = f"refused: {type(e).__name__}: {str(e).splitlines()[0][:120]}"
        return row
    row["read"] = f"{time.perf_counter() - t0:.2f} s"
    g = net.graph
    in_shape = list(g.in_shape)
    row["input"] = "×".join(map(str, in_shape))
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(8, *in_shape, generator=gen)
    ours = net.double()(x.double()).reshape(8, -1).detach().numpy()
    theirs = _ort_run(path, x.numpy(), in_shape)
    rel = np.abs(ours - theirs).max() / max(1e-12, np.abs(theirs).max())
    row["vs onnxruntime"] = f"{rel:.1e}"
    centre = torch.rand(1, *in_shape, generator=gen, dtype=torch.float64)
    lo, hi = centre - width, centre + width
    pts = lo + (hi - lo) * torch.rand(samples, *in_shape, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        out = net(pts).reshape(samples, -1)
    for method in ("ibp", "crown-ibp"):
        t0 = time.perf_counter()
        try:
            lb, ub = bound_box(net, lo, hi, method=method)
        except Exception as e:  # noqa: BLE001
            row[method] = f"error: {type(e).__name__}: {str(e).splitlines()[0][:80]}"
            continue
        dt = time.perf_counter() - t0
        lb, ub = lb.reshape(1, -1), ub.reshape(1, -1)
        tol = 1e-9 * (1 + out.abs().max())
        inside = bool(((out >= lb - tol) & (out <= ub + tol)).all())
        row[method] = f"{'contains' if inside else 'VIOLATED'}, width {float((ub - lb).mean()):.3g}, {dt:.2f} s"
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--width", type=float, default=0.01, help="half-width of the box in input units")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = [check(p, args.samples, args.width) for p in sorted(args.folder.glob("*.onnx"))]
    cols = ["network", "input", "read", "vs onnxruntime", "ibp", "crown-ibp"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |")


if __name__ == "__main__":
    main()
