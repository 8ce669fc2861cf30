"""The black-box audit (paper §2.2): a unit test with `target: classifier` verifies an image
classifier on the images of the decoder, classifier(decoder(z)), over the latent set.

Checked here: the composition is one graph that computes classifier(decoder(z)); bounds of every
method contain sampled and attacked points of the set; a 'verified' verdict has no counterexample
under dense sampling and every counterexample replays; the classifier survives save/load as its
graph IR (an op without a rule is refused at save); a YAML suite with `target: classifier` runs
through the plugin.
"""

from __future__ import annotations

import itertools
import textwrap

import pytest
import torch
from torch import nn

from auditai.attack import head64, pgd
from auditai.blackbox import DecodedClassifier, TargetError, target_module
from auditai.bounds import bound
from auditai.errors import SuiteError, UnsupportedLayerError
from auditai.latent import Dims
from auditai.model import AuditModel, load_model, save_model
from auditai.spec import make_spec
from auditai.suite import make_unit_test, parse_suite
from auditai.verify import verify

D = 4


def generator() -> nn.Module:
    """Linear → reshape → ConvTranspose2d → ReLU → ConvTranspose2d → Sigmoid: 1×16×16 images."""
    return nn.Sequential(nn.Linear(D, 8 * 4 * 4), nn.Unflatten(1, (8, 4, 4)), nn.ConvTranspose2d(8, 4, 4, 2, 1),
                         nn.ReLU(), nn.ConvTranspose2d(4, 1, 4, 2, 1), nn.Sigmoid())


def cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 16), nn.ReLU(),
                         nn.Linear(16, 3))


def calibrated() -> tuple[nn.Module, nn.Module]:
    """A generator and a CNN whose classes all occur on N(0, I) codes (decision boundaries run
    through the latent set, so verdicts are mixed)."""
    torch.manual_seed(0)
    g, f = generator().eval(), cnn().eval()
    with torch.no_grad():
        g[0].weight.mul_(3.0)
        out = f(g(torch.randn(2000, D, generator=torch.Generator().manual_seed(5))))
        f[-1].bias.sub_(out.mean(0))
        f[-1].weight.div_(out.std(0).mean())
        f[-1].bias.div_(out.std(0).mean())
    return g, f


@pytest.fixture(scope="module")
def model() -> AuditModel:
    g, f = calibrated()
    return AuditModel(nn.Linear(D, 3), decoder=g, classifier=f, directions={"pose": torch.tensor([1.0, 0, 0, 0])})


@pytest.fixture(scope="module")
def codes() -> torch.Tensor:
    return torch.randn(12, D, generator=torch.Generator().manual_seed(1))


def test_target_is_one_graph_of_classifier_after_decoder(model, codes):
    fn = target_module(model, "classifier")
    want = DecodedClassifier(model.decoder, model.classifier)(codes)
    assert torch.allclose(fn(codes), want, atol=1e-6)
    assert target_module(model, None) is model.head and target_module(model, "head") is model.head


def test_missing_parts_are_named():
    with pytest.raises(TargetError, match="no decoder and no classifier"):
        target_module(AuditModel(nn.Linear(D, 3)), "classifier", "unit test 'x'")
    m = AuditModel(nn.Linear(D, 3), decoder=generator())
    with pytest.raises(TargetError, match="unit test 'x'.*no classifier"):
        target_module(m, "classifier", "unit test 'x'")
    with pytest.raises(ValueError, match="classifier does not accept images of shape"):
        AuditModel(nn.Linear(D, 3), decoder=generator(), classifier=nn.Linear(5, 3))


@pytest.mark.parametrize("method", ["ibp", "crown-ibp", "crown"])
def test_bounds_contain_sampled_and_attacked_points(model, codes, method):
    fn = target_module(model, "classifier")
    kind = Dims([0, 2])
    s = kind.make(codes.double(), 0.3)
    f64 = head64(DecodedClassifier(model.decoder, model.classifier))
    sp = make_spec("prediction", f64(s.z0), None)
    lo, up = bound(head64(fn), s, sp.C, method=method)
    gen = torch.Generator().manual_seed(2)
    delta = (torch.rand(64, *codes.shape[:1], 2, generator=gen, dtype=torch.float64) * 2 - 1) * 0.3
    corners = torch.tensor(list(itertools.product([-0.3, 0.3], repeat=2)), dtype=torch.float64)
    delta = torch.cat([delta, corners[:, None, :].expand(4, codes.shape[0], 2)])
    with torch.no_grad():
        for dl in delta:
            out = torch.einsum("no,nmo->nm", f64(s.z0 + dl @ s.basis.T), sp.C)
            assert (out >= lo - 1e-9).all() and (out <= up + 1e-9).all()
    res = pgd(fn, s, sp.C, sp.d, steps=20, restarts=2, generator=gen, h64=f64)
    with torch.no_grad():
        out = torch.einsum("no,nmo->nm", f64(s.z0 + res.delta @ s.basis.T), sp.C)
    assert (out >= lo - 1e-9).all()


@pytest.mark.parametrize("method", ["crown", "complete"])
def test_verified_has_no_counterexample_under_dense_sampling(model, codes, method):
    fn = target_module(model, "classifier")
    eps = [0.02, 0.05, 0.2, 0.6]
    r = verify(fn, codes, None, Dims([0, 1]), eps, spec="prediction", method=method, radius=False)
    assert (r.verdicts == 1).any() and (r.verdicts == -1).any()
    f64 = head64(DecodedClassifier(model.decoder, model.classifier))
    g = torch.linspace(-1, 1, 41, dtype=torch.float64)
    grid = torch.cartesian_prod(g, g)  # 1681 points of the unit square
    z = codes.double()
    with torch.no_grad():
        pred = f64(z).argmax(1)
        for e, ee in enumerate(eps):
            for i in (r.verdicts[:, e] == 1).nonzero().flatten().tolist():
                zz = z[i].expand(grid.shape[0], D).clone()
                zz[:, :2] += ee * grid
                assert (f64(zz).argmax(1) == pred[i]).all(), (i, ee)
    for c in r.counterexamples:  # every counterexample replays: another class wins at z
        with torch.no_grad():
            out = f64(torch.tensor([c.z], dtype=torch.float64))[0]
        assert out.argmax() != pred[c.sample] or out.max() - out[pred[c.sample]] >= 0
        assert max(abs(x) for x in c.delta) <= c.eps + 1e-12


def test_complete_decides_at_least_what_crown_decides(model, codes):
    fn = target_module(model, "classifier")
    args = (fn, codes, None, Dims([0]), [0.02, 0.1, 0.5])
    rc = verify(*args, spec="prediction", method="crown", radius=False)
    r = verify(*args, spec="prediction", method="complete", radius=False, split_budget=64)
    assert ((rc.verdicts != 0) <= (r.verdicts != 0)).all()  # decided by crown: decided by complete
    assert ((rc.verdicts != 0) & (rc.verdicts != r.verdicts)).sum() == 0  # and the same way
    assert (r.verdicts == -1).any() and (r.verdicts == 1).any()


def test_save_load_keeps_the_classifier(model, codes, tmp_path):
    save_model(tmp_path / "m.auditai", model)
    back = load_model(tmp_path / "m.auditai")
    assert back.classifier is not None and back.image_shape == (1, 16, 16)
    want = target_module(model, "classifier")(codes)
    assert torch.allclose(target_module(back, "classifier")(codes), want, atol=1e-6)
    r1 = verify(target_module(model, "classifier"), codes, None, Dims([0, 1]), [0.1], spec="prediction",
                method="crown", radius=False)
    r2 = verify(target_module(back, "classifier"), codes, None, Dims([0, 1]), [0.1], spec="prediction",
                method="crown", radius=False)
    assert torch.equal(r1.verdicts, r2.verdicts)


class _Sort(nn.Module):
    def forward(self, x):
        return torch.sort(x.flatten(1), dim=1).values[:, :3]


def test_classifier_without_a_rule_is_refused_at_save(tmp_path):
    m = AuditModel(nn.Linear(D, 3), decoder=generator(), classifier=_Sort())
    with pytest.raises(UnsupportedLayerError, match="classifier"):
        save_model(tmp_path / "m.auditai", m)


def test_target_key_is_validated():
    ut = make_unit_test({"name": "t", "dims": [0], "eps": 0.1, "target": "classifier"})
    assert ut.target == "classifier" and ut.with_defaults().target == "classifier"
    assert make_unit_test({"name": "t", "dims": [0], "eps": 0.1}).with_defaults().target == "head"
    with pytest.raises(SuiteError, match="did you mean 'classifier'"):
        make_unit_test({"name": "t", "dims": [0], "eps": 0.1, "target": "clasifier"})
    s = parse_suite("target: classifier\nunit_tests:\n  - name: a\n    dims: [0]\n    eps: 0.1\n"
                    "  - name: b\n    dims: [0]\n    eps: 0.1\n    target: head\n")
    assert [u.target for u in s.unit_tests] == ["classifier", "head"]


MODULE = textwrap.dedent(
    '''
    import torch
    from torch import nn
    from auditai.model import AuditModel

    torch.manual_seed(0)
    _G = nn.Sequential(nn.Linear(4, 128), nn.Unflatten(1, (8, 4, 4)), nn.ConvTranspose2d(8, 4, 4, 2, 1),
                       nn.ReLU(), nn.ConvTranspose2d(4, 1, 4, 2, 1), nn.Sigmoid())
    _F = nn.Sequential(nn.Conv2d(1, 4, 3, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(256, 16), nn.ReLU(),
                       nn.Linear(16, 3))
    MODEL = AuditModel(nn.Linear(4, 3), decoder=_G.eval(), classifier=_F.eval())
    MODEL_NO_CLASSIFIER = AuditModel(nn.Linear(4, 3))
    _Z = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        _Y = _F(_G(_Z)).argmax(1)
    DATA = {"z": _Z, "y": _Y}
    '''
)

SUITE = textwrap.dedent(
    """\
    suite: blackbox
    model: bbmodel:MODEL
    data: bbmodel:DATA
    unit_tests:
      - name: pixels
        dims: [0, 1]
        eps: [0.05, 0.2]
        method: crown
        target: classifier
        max_verified_error: 1.0
      - name: latent
        dims: [0, 1]
        eps: 0.05
    """
)


@pytest.fixture
def bb(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(bbmodel=MODULE)
    pytester.syspathinsert()
    return pytester


def test_yaml_suite_with_target_classifier_runs_through_the_plugin(bb):
    import json

    bb.makefile(".yaml", auditai_bb=SUITE)
    res = bb.runpytest("--auditai-device=cpu", "--auditai-report=r.json", "-p", "no:cacheprovider")
    res.assert_outcomes(passed=3)
    sheet = json.loads((bb.path / "r.json").read_text(encoding="utf-8"))
    ut = {u["name"]: u for u in sheet["unit_tests"]}
    # the data's labels are the classifier's predictions: no clean error through the classifier,
    # while the (untrained) latent head gets most of them wrong
    assert [r["clean_error"] for r in ut["pixels"]["rows"]] == [0.0, 0.0]
    assert ut["latent"]["rows"][0]["clean_error"] > 0.3
    ns = {}
    exec(MODULE, ns)  # noqa: S102 - the test's own model module, as the plugin imports it
    want = verify(target_module(ns["MODEL"], "classifier"), ns["DATA"]["z"], ns["DATA"]["y"], Dims([0, 1]),
                  [0.05, 0.2], method="crown", radius=False)
    assert [r["verified_error"] for r in ut["pixels"]["rows"]] == pytest.approx(want.verified_error)
    imgs = [c["image"] for c in ut["pixels"]["counterexamples"] if c.get("image") is not None]
    assert bool(imgs) == bool(want.counterexamples)
    assert all(torch.tensor(i).shape == (1, 16, 16) for i in imgs)


def test_target_classifier_without_classifier_fails_clearly(bb):
    bb.makefile(".yaml", auditai_bb=SUITE.replace("bbmodel:MODEL", "bbmodel:MODEL_NO_CLASSIFIER"))
    res = bb.runpytest("--auditai-device=cpu", "-p", "no:cacheprovider")
    res.stdout.fnmatch_lines(["*target 'classifier' verifies classifier(decoder(z))*no decoder and no classifier*"])


@pytest.mark.parametrize("eps", [0.05, 0.5])
def test_forward_mode_bounds_contain_sampled_points(model, codes, eps):
    """Forward-mode linear bounds (auditai.bounds.graph_forward) through classifier∘decoder."""
    from auditai.bounds.graph_bounds import InputMap, bound_graph
    from auditai.bounds.graph_forward import bound_graph_forward

    f64 = head64(target_module(model, "classifier"))
    g = f64.graph
    z = codes.double()
    basis = torch.eye(D, dtype=torch.float64)[:, [0, 2, 3]]
    im = InputMap(z, torch.full((z.shape[0],), eps, dtype=torch.float64), float("inf"), basis=basis)
    lo, up = bound_graph_forward(g, im, None)
    lc, uc = bound_graph(g, im, None, "crown-ibp")
    gen = torch.Generator().manual_seed(3)
    delta = (torch.rand(256, z.shape[0], 3, generator=gen, dtype=torch.float64) * 2 - 1) * eps
    corners = torch.tensor(list(itertools.product([-eps, eps], repeat=3)), dtype=torch.float64)
    delta = torch.cat([delta, corners[:, None, :].expand(8, z.shape[0], 3)])
    with torch.no_grad():
        ys = torch.stack([f64(z + dl @ basis.T) for dl in delta])
    assert (ys >= lo - 1e-9).all() and (ys <= up + 1e-9).all()
    assert (up - lo).mean() < (uc - lc).mean()  # tighter than CROWN-IBP on this deep composition


def test_verify_command_target_flag(model, codes, tmp_path, capsys):
    from auditai.cli import main

    save_model(tmp_path / "m.auditai", model)
    with torch.no_grad():
        y = target_module(model, "classifier")(codes).argmax(1)
    torch.save({"z": codes, "y": y}, tmp_path / "d.pt")
    args = ["verify", "--model", str(tmp_path / "m.auditai"), "--data", str(tmp_path / "d.pt"), "--dims", "0,1",
            "--eps", "0.02", "--method", "crown", "--device", "cpu"]
    clean = {}
    for target in ("classifier", "head"):
        assert main(args + ["--target", target]) == 0
        row = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("unit_test"))
        clean[target] = float(row.split("]")[1].split()[1])  # after "dims [0, 1]" and ε
    assert clean["classifier"] == 0.0 and clean["head"] > 0.0  # the labels are the classifier's


def test_target_option_is_the_default_of_unit_tests_that_name_none(bb):
    import json

    bb.makefile(".yaml", auditai_bb=SUITE.replace("        target: classifier\n", ""))
    res = bb.runpytest("--auditai-device=cpu", "--auditai-target=classifier", "--auditai-report=r.json",
                       "-p", "no:cacheprovider")
    res.assert_outcomes(passed=3)
    ut = {u["name"]: u for u in json.loads((bb.path / "r.json").read_text(encoding="utf-8"))["unit_tests"]}
    assert ut["latent"]["rows"][0]["clean_error"] == 0.0  # both through the classifier now
    bad = bb.runpytest("--auditai-target=clasifier")
    assert bad.ret != 0
    bad.stderr.fnmatch_lines(["*invalid target 'clasifier'*did you mean 'classifier'*"])
