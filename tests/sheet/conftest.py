"""Fixtures for the spec-sheet tests: small hand-made results, codes and a toy decoder.

Verification results are given as plain dicts in the documented `VerificationResult.to_dict()`
shape (the sheet accepts either form), so these tests do not depend on the verifier.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from auditai.latent import Dims, Direction
from auditai.sheet import SpecSheet
from auditai.suite import UnitTest

D = 4
HOSTILE = "<script>alert(1)</script>"


def make_result(eps, verified, falsified=None, clean=0.04, n=20, counterexamples=()):
    falsified = falsified or [v / 2 for v in verified]
    return {
        "eps": list(eps),
        "clean_error": [clean] * len(eps),
        "verified_error": list(verified),
        "falsified_fraction": list(falsified),
        "unknown_fraction": [v - f for v, f in zip(verified, falsified)],
        "n": n,
        "time_s": 0.5,
        "certified_radius": [0.5, 1.0, 1.5],
        "method": "crown-ibp",
        "spec": "label",
        "engine": "auditai",
        "device": "cpu",
        "counterexamples": list(counterexamples),
    }


class ToyModel:
    """An AuditModel-like object: codes are d=4, the decoder paints z[0] as brightness."""

    latent_dim = D
    num_outputs = 2
    class_names = None
    content_hash = "ab" * 32
    source = "toy.pt"

    def __init__(self):
        self.decoder = torch.nn.Sequential(
            torch.nn.Linear(D, 1), torch.nn.Sigmoid(), torch.nn.Unflatten(1, (1, 1, 1)), torch.nn.Upsample(size=(6, 6))
        )
        with torch.no_grad():
            self.decoder[0].weight.copy_(torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
            self.decoder[0].bias.zero_()
        self.encoder = None

    def encode(self, x):
        return x


@pytest.fixture
def codes() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(40, D))


@pytest.fixture
def toy_model() -> ToyModel:
    return ToyModel()


def build_sheet(codes, model=None, pose_verified=(0.05, 0.27, 0.5), name2="expression"):
    v = torch.tensor([3.0, 4.0, 0.0, 0.0])
    cex = [{"sample": 1, "eps_index": 1, "eps": 1.0, "delta": [0.7], "z": (codes[1] + 0.7 * v.numpy() / 5).tolist(),
            "row": 0, "row_name": "keep class 1", "margin": -0.3, "outputs": [0.1, 0.4]}]
    ut1 = UnitTest(name="pose", set={"direction": "pose"}, eps=(0.5, 1.0), report_eps=(2.0,), max_verified_error=0.2)
    ut2 = UnitTest(name=name2, set={"dims": [2, 3]}, norm="2", eps=(1.0,), min_verified_accuracy=0.85)
    r1 = make_result([0.5, 1.0, 2.0], list(pose_verified), counterexamples=cex)
    r2 = make_result([1.0], [0.1])
    return SpecSheet.from_results(
        [(ut1, r1, Direction(v, "pose")), (ut2, r2, Dims([2, 3], "2"))],
        model=model or ToyModel(),
        train_codes=codes,
        suite="toy",
    )


@pytest.fixture
def sheet(codes) -> SpecSheet:
    return build_sheet(codes)
