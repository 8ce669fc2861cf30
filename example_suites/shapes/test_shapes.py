"""A decorated semantic unit test: `pytest example_suites/shapes` runs it with the YAML suite.

The model and data come from `pytest.ini` beside this file (or --auditai-model/--auditai-data).
"""

import auditai


@auditai.unit_test(name="scale-exact", direction="scale", eps=[0.5, 1.0],
                   max_verified_error=0.05, method="complete")
def test_scale_exact(auditai_result):
    # method 'complete' enumerates the head's linear pieces along the segment: no unknowns
    assert max(auditai_result.unknown_fraction) == 0.0
    # every sample is decided, so the verified error equals the falsified fraction
    assert abs(auditai_result.verified_error[-1] - auditai_result.falsified_fraction[-1]) < 1e-9
