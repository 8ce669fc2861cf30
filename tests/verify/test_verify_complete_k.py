"""method='complete' for sets of k = 4…8 directions (issue 14, item 3): branch and bound over
boxes split along their most influential axis, a time budget, and the notes on what is left.

Soundness: no sampled point of a verified set violates the spec, and every falsified cell has a
float64-checked counterexample inside its set. Completeness on small heads: with enough pieces,
nothing is left unknown.
"""

from __future__ import annotations

import pytest
import torch

from auditai.bounds.split import branch_and_bound
from auditai.latent import Dims, LatentSet
from auditai.verify import verify

from _verify_helpers import small_head

DT = torch.float64
EPS = [0.1, 0.3]


def _data(d, seed=0, n=12):
    h = small_head(d=d, width=12, out=3, seed=seed)
    g = torch.Generator().manual_seed(seed + 3)
    z0 = torch.randn(n, d, generator=g, dtype=DT)
    y = h(z0).argmax(1).detach()
    return h, z0, y


def _violated_at_samples(h, z0, y, dims, eps, norm="inf", S=400):
    s = Dims(dims, norm=norm).make(z0, eps)
    pts = s.sample(S, torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = h(s.points(pts))
    return (out.argmax(2) != y).any(0)


@pytest.mark.parametrize("k,norm", [(4, "inf"), (5, "2"), (8, "inf")])
def test_complete_k_beyond_3_is_sound_and_decides_more(k, norm):
    h, z0, y = _data(d=8, seed=k)
    dims = list(range(k))
    r = verify(h, z0, y, Dims(dims, norm=norm), EPS, method="complete", radius=False, split_budget=256)
    rc = verify(h, z0, y, Dims(dims, norm=norm), EPS, method="crown-ibp", radius=False)
    for e, eps in enumerate(EPS):
        viol = _violated_at_samples(h, z0, y, dims, eps, norm)
        assert not (viol & (r.verdicts[:, e] == 1)).any()
        assert r.unknown_fraction[e] <= rc.unknown_fraction[e] + 1e-12
        # a verdict of CROWN-IBP (its first pass) is never contradicted by complete
        assert not ((rc.verdicts[:, e] == 1) & (r.verdicts[:, e] == -1)).any()
    for c in r.counterexamples:
        assert max(abs(x) for x in c.delta) <= EPS[c.eps_index] * (1 + 1e-12) or norm != "inf"
        assert c.margin <= 0
    if k <= 5 and norm == "inf":
        assert r.unknown_fraction == [0.0] * len(EPS), r.notes


def test_branch_and_bound_boxes_agree_with_sampling_k6():
    h, z0, y = _data(d=6, seed=11, n=10)
    s = LatentSet.from_dims(z0, list(range(6)), 0.35, "inf")
    eye = torch.eye(3, dtype=DT)
    C = torch.stack([eye[int(t)].unsqueeze(0) - eye[[j for j in range(3) if j != int(t)]] for t in y])
    d = torch.zeros(10, 2, dtype=DT)
    for method in ("crown-ibp", "alpha-crown"):
        sr = branch_and_bound(h, z0, s.basis, s.eps, s.p, C, d, method=method, budget=512)
        viol = _violated_at_samples(h, z0, y, list(range(6)), 0.35)
        assert not (viol & (sr.status == 1)).any()
        f = sr.status == -1
        if f.any():  # counterexamples are real points of the set
            out = h(z0[f] + sr.delta[f] @ s.basis.T)
            marg = torch.einsum("po,pmo->pm", out, C[f]).min(1).values
            assert (marg <= 0).all() and (sr.delta[f].abs() <= 0.35 + 1e-12).all()


def test_max_time_leaves_unknown_and_says_so():
    h, z0, y = _data(d=8, seed=3)
    r = verify(h, z0, y, Dims(list(range(6))), [0.6], method="complete", radius=False, attack=False,
               split_budget=10_000, max_time=1e-6)
    assert r.unknown_fraction[0] > 0
    assert any("max_time" in n for n in r.notes)
    d = r.to_dict()
    assert d["notes"] == r.notes


def test_bad_max_time():
    h, z0, y = _data(d=4)
    with pytest.raises(ValueError, match="max_time"):
        verify(h, z0, y, Dims([0, 1, 2, 3]), EPS, method="complete", max_time=-1)


def test_suite_keys_method_alpha_crown_and_max_time():
    from auditai.errors import SuiteError
    from auditai.suite import make_unit_test

    ut = make_unit_test({"name": "box4", "dims": [0, 1, 2, 3], "eps": 0.1, "method": "alpha-crown",
                         "max_time": 5}, where="t.yaml")
    assert ut.method == "alpha-crown" and ut.max_time == 5.0
    ut = make_unit_test({"name": "box4", "dims": [0, 1, 2, 3], "eps": 0.1, "method": "complete"}, where="t.yaml")
    assert ut.max_time is None
    with pytest.raises(SuiteError, match="max_time"):
        make_unit_test({"name": "b", "dims": [0], "eps": 0.1, "max_time": 0}, where="t.yaml")
    with pytest.raises(SuiteError, match="alpha-crown"):
        make_unit_test({"name": "b", "dims": [0], "eps": 0.1, "method": "alpha"}, where="t.yaml")
