"""A decorated semantic unit test: `pytest example_suites/fashion` runs it with the YAML suite.

The model and data come from `pytest.ini` beside this file (or --auditai-model/--auditai-data).
"""

import itertools

import auditai


@auditai.unit_test(name="slant", direction="slant", eps=[0.1], report_eps=[0.25, 0.5],
                   min_verified_accuracy=0.65)
def test_slant(auditai_result):
    # the verified error never falls as ε grows (a larger set contains the smaller one)
    ve = auditai_result.verified_error
    assert all(a <= b + 1e-12 for a, b in itertools.pairwise(ve))
