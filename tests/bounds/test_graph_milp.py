"""Small residual ReLU graphs against an exact MILP oracle (issue 11, item 7).

The head is an ordinary nn.Module with a residual add; the oracle (tests/bounds/milp.py,
`graph_spec_extremes`) is given the same weights as a DAG of affine and ReLU nodes written out
here by hand (nothing read by our engine). Every method's bounds must contain the exact range of
each spec row; the CROWN width over the exact width is printed (`pytest -s`) and, with
AUDITAI_RECORD=1, written to benchmarks/results/milp_graph_looseness.json.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from auditai.bounds import bound_box

from .milp import GNode, graph_spec_extremes

pytest.importorskip("scipy.optimize")
DT = torch.float64


class ResHead(nn.Module):
    def __init__(self, d: int, w: int, out: int) -> None:
        super().__init__()
        self.inp, self.f1, self.f2, self.out = nn.Linear(d, w), nn.Linear(w, w), nn.Linear(w, w), nn.Linear(w, out)
        self.skip = nn.Linear(d, w, bias=False)

    def forward(self, x):
        h = torch.relu(self.inp(x))
        h = torch.relu(h + self.f2(torch.relu(self.f1(h))) + self.skip(x))   # two residual adds
        return self.out(h)


def _oracle_nodes(m: ResHead) -> list[GNode]:
    P = {k: v.detach().numpy() for k, v in m.state_dict().items()}
    w = P["inp.weight"].shape[0]
    eye = np.eye(w)
    return [
        GNode("input"),
        GNode("affine", (0,), (P["inp.weight"],), P["inp.bias"]),                       # 1
        GNode("relu", (1,)),                                                            # 2 h
        GNode("affine", (2,), (P["f1.weight"],), P["f1.bias"]),                          # 3
        GNode("relu", (3,)),                                                            # 4
        GNode("affine", (2, 4, 0), (eye, P["f2.weight"], P["skip.weight"]), P["f2.bias"]),  # 5 the adds
        GNode("relu", (5,)),                                                            # 6
        GNode("affine", (6,), (P["out.weight"],), P["out.bias"]),                        # 7
    ]


CASES = [(0, 3, 6, 2, 0.3), (1, 4, 8, 3, 0.5), (2, 2, 10, 2, 1.0)]
_RATIOS: list = []


@pytest.mark.parametrize("seed,d,w,out,half", CASES)
def test_bounds_contain_the_exact_range_of_residual_graphs(seed, d, w, out, half):
    torch.manual_seed(seed)
    m = ResHead(d, w, out).to(DT).eval()
    nodes = _oracle_nodes(m)
    gen = torch.Generator().manual_seed(seed)
    c = torch.randn(2, d, generator=gen, dtype=DT)
    lo_x, hi_x = c - half, c + half
    C = torch.randn(2, out, generator=gen, dtype=DT)
    with torch.no_grad():
        bounds = {meth: bound_box(m, lo_x, hi_x, C=C, method=meth) for meth in ("ibp", "crown-ibp", "crown")}
    for i in range(2):
        for r in range(C.shape[0]):
            ex_lo, ex_hi = graph_spec_extremes(nodes, lo_x[i].numpy(), hi_x[i].numpy(), C[r].numpy())
            tol = 1e-6 * (1 + abs(ex_lo) + abs(ex_hi))   # HiGHS' feasibility tolerance
            for meth, (lo, up) in bounds.items():
                assert float(lo[i, r]) <= ex_lo + tol and float(up[i, r]) >= ex_hi - tol, (meth, i, r)
            crown = bounds["crown"]
            width = float(crown[1][i, r] - crown[0][i, r])
            _RATIOS.append({"seed": seed, "d": d, "w": w, "sample": i, "row": r, "exact_width": ex_hi - ex_lo,
                            "crown_width": width, "ratio": width / max(ex_hi - ex_lo, 1e-12)})
    # the oracle must not be trivially loose itself: a sampled point reaches inside its range
    with torch.no_grad():
        y = (m(lo_x[0] + (hi_x[0] - lo_x[0]) * torch.rand(500, d, generator=gen, dtype=DT)) @ C.T)
    ex_lo, ex_hi = graph_spec_extremes(nodes, lo_x[0].numpy(), hi_x[0].numpy(), C[0].numpy())
    assert ex_lo <= float(y[:, 0].min()) + 1e-6 and ex_hi >= float(y[:, 0].max()) - 1e-6


def test_report_crown_looseness_on_residual_graphs():
    if not _RATIOS:
        pytest.skip("run with the containment test")
    ratios = np.array([r["ratio"] for r in _RATIOS])
    print(f"\nCROWN width / exact width on residual graphs: median {np.median(ratios):.3f}, "
          f"max {ratios.max():.3f} over {len(ratios)} spec rows")
    assert (ratios >= 1 - 1e-6).all()  # no bound is narrower than the exact range
    if os.environ.get("AUDITAI_RECORD") == "1":
        out = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "milp_graph_looseness.json"
        out.write_text(json.dumps(_RATIOS, indent=1))
