"""A tiny model, data and suite for the torchrun tests (written to a folder as files).

Head: Linear(4, 8) → ReLU → Linear(8, 3), seeded; 48 codes with labels from a fixed rule, so
some samples are verified, some falsified and some unknown at the suite's ε.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import torch
from torch import nn

N_SAMPLES = 48
CHUNK = 8


def write_tiny(folder: Path) -> Path:
    """model.auditai, data.pt, suite.yaml and failing.yaml in `folder`; returns suite.yaml."""
    from auditai.model import AuditModel, save_model

    g = torch.Generator().manual_seed(7)
    head = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    with torch.no_grad():
        for p in head.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    z = torch.randn(N_SAMPLES, 4, generator=g)
    with torch.no_grad():
        y = head(z).argmax(1)
    y[::7] = (y[::7] + 1) % 3  # a few clean mistakes
    model = AuditModel(head, directions={"pose": torch.tensor([1.0, 0.5, 0.0, 0.0])},
                       dims={"expression": [2, 3]})
    folder.mkdir(parents=True, exist_ok=True)
    save_model(folder / "model.auditai", model)
    torch.save({"z": z, "y": y}, folder / "data.pt")
    suite = folder / "suite.yaml"
    suite.write_text(SUITE)
    (folder / "failing.yaml").write_text(FAILING_SUITE)
    return suite


SUITE = textwrap.dedent(
    """\
    suite: tiny
    model: model.auditai
    data: data.pt
    spec: label
    method: crown-ibp
    unit_tests:
      - name: pose
        direction: pose
        eps: [0.3, 1.0]
        max_verified_error: 0.9
      - name: expression
        dims: expression
        eps: 0.5
        report_eps: [0.05]
        max_verified_error: 0.5
    """
)

#: the same suite with a gate 'expression' fails (verified error 0.375 > 0.3)
FAILING_SUITE = SUITE.replace("max_verified_error: 0.5", "max_verified_error: 0.3")
