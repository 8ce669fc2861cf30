"""Helpers for the plugin's pytester tests: a tiny model module and suites.

The model: head = Linear(4, 2) with logits (z0, −z0); direction 'pose' = e0 decides the class,
'light' = e3 changes nothing. Codes have z0 ∈ ±{0.25, 0.75, 1.25, 1.75} and labels
y = [z0 < 0], so along 'pose' a sample is robust at ε exactly when |z0| > ε: the verified
error is 0.25 at ε=0.5 and 0.5 at ε=1.0 (exact for a linear head); along 'light' it is 0.
"""

from __future__ import annotations

import textwrap

import pytest

# torch must be imported in the outer process: pytester's in-process runs restore sys.modules,
# and a torch imported inside one of them could not be imported a second time.
import torch  # noqa: F401

# The same for hypothesis: its pytest plugin imports it in every run's terminal summary, which
# otherwise costs each pytester run seconds (the import is undone after each run).
try:
    import hypothesis  # noqa: F401
except ImportError:  # pragma: no cover - hypothesis is a dev dependency
    pass


MODEL_MODULE = textwrap.dedent(
    '''
    import os
    import torch
    from torch import nn
    from auditai.model import AuditModel

    def _head():
        head = nn.Linear(4, 2)
        with torch.no_grad():
            head.weight.zero_()
            head.weight[0, 0] = 1.0
            head.weight[1, 0] = -1.0
            head.bias.zero_()
        return head

    _Z0 = torch.tensor([0.25, 0.75, 1.25, 1.75, -0.25, -0.75, -1.25, -1.75])
    _Z = torch.zeros(8, 4)
    _Z[:, 0] = _Z0
    _Z[:, 1] = torch.linspace(-1, 1, 8)
    _Y = (_Z0 < 0).long()

    MODEL = AuditModel(
        _head(),
        directions={"pose": torch.tensor([1.0, 0, 0, 0]), "light": torch.tensor([0, 0, 0, 1.0])},
        dims={"expression": [2, 3]},
    )
    DATA = {"z": _Z.clone(), "y": _Y.clone()}

    class CountingIdentity(nn.Module):
        """An encoder that records each call in encode_calls.txt (to test the latent cache)."""
        def forward(self, x):
            with open("encode_calls.txt", "a") as f:
                f.write(f"{x.shape[0]}\\n")
            return x * 1.0

    def model_with_encoder():
        return AuditModel(_head(), encoder=CountingIdentity(),
                          directions={"pose": torch.tensor([1.0, 0, 0, 0])})

    DATA_X = {"x": _Z.clone(), "y": _Y.clone()}
    '''
)

PASSING_SUITE = textwrap.dedent(
    """\
    suite: tiny
    model: tinymodel:MODEL
    data: tinymodel:DATA
    spec: label
    method: crown-ibp
    unit_tests:
      - name: pose
        direction: pose
        eps: [0.5, 1.0]
        report_eps: [1.5]
        max_verified_error: 0.6
      - name: light
        direction: light
        eps: 1.0
        min_verified_accuracy: 0.9
    """
)

FAILING_SUITE = PASSING_SUITE.replace("max_verified_error: 0.6", "max_verified_error: 0.3")


@pytest.fixture
def tiny(pytester: pytest.Pytester) -> pytest.Pytester:
    """A pytester folder with tinymodel.py importable (a root conftest puts it on sys.path)."""
    pytester.makepyfile(tinymodel=MODEL_MODULE)
    pytester.makeconftest("")
    pytester.syspathinsert()
    return pytester
