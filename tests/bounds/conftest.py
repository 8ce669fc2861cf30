"""Configuration of the bound-engine tests (tests/bounds).

Hypothesis profiles for these tests (registered here; chosen with HYPOTHESIS_PROFILE):
    default   ~30 examples per property and no deadline, so that the whole of tests/bounds
              stays well under a minute on 2 cores (`pytest -p no:xdist tests/bounds`).
    thorough  `HYPOTHESIS_PROFILE=thorough pytest -p no:xdist tests/bounds` runs 20× more
              examples per property (several minutes): use it after changing the engine.
The profiles are applied per test (`helpers.hyp`), never loaded globally, so the other test
folders keep their own Hypothesis settings.
Other switches:
    AUDITAI_RECORD=1   the MILP oracle test also writes benchmarks/results/milp_looseness.json
    pytest -s          prints the MILP looseness table
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

_COMMON = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
    "print_blob": True,
}
settings.register_profile("auditai-bounds", max_examples=30, **_COMMON)
settings.register_profile("thorough", max_examples=600, **_COMMON)


import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Run these tests on one intra-op thread (restored afterwards).

    The tensors here are tiny: with 2 threads on a loaded 2-core machine, thread hand-offs
    made a CROWN call ~10× slower than single-threaded. Only tests under tests/bounds are
    affected (module-scoped, so Hypothesis does not see a function-scoped fixture).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
