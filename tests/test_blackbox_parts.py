"""An ONNX classifier and an ONNX generator given apart (issue 12, item 1): `with_parts` attaches
them to a head-only model, validated; `--auditai-classifier/--auditai-decoder` and
`auditai verify --classifier/--decoder` do so for a run. Checked: the ONNX parts verify exactly
as the torch composition they were exported from (same verified error), and mismatched shapes
or a missing part are named.
"""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
from torch import nn

from auditai.blackbox import TargetError, load_part, target_module, with_parts
from auditai.latent import Dims
from auditai.model import AuditModel
from auditai.verify import verify

pytestmark = pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export")

PARTS = textwrap.dedent(
    '''
    import torch
    from torch import nn
    from auditai.model import AuditModel

    def generator():
        torch.manual_seed(0)
        g = nn.Sequential(nn.Linear(4, 128), nn.Unflatten(1, (8, 4, 4)), nn.ConvTranspose2d(8, 4, 4, 2, 1),
                          nn.ReLU(), nn.ConvTranspose2d(4, 1, 4, 2, 1), nn.Sigmoid())
        with torch.no_grad():
            g[0].weight.mul_(3.0)
        return g.eval()

    def classifier():
        torch.manual_seed(1)
        return nn.Sequential(nn.Conv2d(1, 4, 3, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(256, 16), nn.ReLU(),
                             nn.Linear(16, 3)).eval()

    MODEL = AuditModel(nn.Linear(4, 3))  # head only: the parts come from the command line
    _Z = torch.randn(8, 4, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        _Y = classifier()(generator()(_Z)).argmax(1)
    DATA = {"z": _Z, "y": _Y}
    '''
)

SUITE = textwrap.dedent(
    """\
    suite: parts
    model: bbparts:MODEL
    data: bbparts:DATA
    target: classifier
    unit_tests:
      - name: pixels
        dims: [0, 1]
        eps: [0.05, 0.15]
        method: crown
        max_verified_error: 1.0
    """
)


def _ns() -> dict:
    ns: dict = {}
    exec(PARTS, ns)  # noqa: S102 - the test's own module, as the plugin imports it
    return ns


def _export(module: nn.Module, shape: tuple[int, ...], path) -> str:
    torch.onnx.export(module, (torch.zeros(1, *shape),), str(path), dynamo=False,
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
    return str(path)


@pytest.fixture
def onnx_parts(tmp_path):
    ns = _ns()
    return (ns, _export(ns["generator"](), (4,), tmp_path / "g.onnx"),
            _export(ns["classifier"](), (1, 16, 16), tmp_path / "f.onnx"))


def _want(ns: dict, eps):
    torch_model = AuditModel(nn.Linear(4, 3), decoder=ns["generator"](), classifier=ns["classifier"]())
    return verify(target_module(torch_model, "classifier"), ns["DATA"]["z"], ns["DATA"]["y"], Dims([0, 1]),
                  eps, method="crown", radius=False, seed=0)


def test_with_parts_attaches_onnx_parts_that_compute_the_torch_composition(onnx_parts):
    ns, g_path, f_path = onnx_parts
    head_only = ns["MODEL"]
    m = with_parts(head_only, classifier=f_path, decoder=g_path)
    assert head_only.classifier is None and head_only.decoder is None  # the original is unchanged
    assert m.image_shape == (1, 16, 16) and m.classifier_outputs == 3
    assert m.content_hash != head_only.content_hash and "classifier=" in m.source
    z = ns["DATA"]["z"]
    with torch.no_grad():
        want = ns["classifier"]()(ns["generator"]()(z))
        got = target_module(m, "classifier")(z)
    assert torch.allclose(got.double(), want.double(), atol=1e-5)
    res = verify(target_module(m, "classifier"), z, ns["DATA"]["y"], Dims([0, 1]), [0.05, 0.15],
                 method="crown", radius=False, seed=0)
    assert res.verified_error == pytest.approx(_want(ns, [0.05, 0.15]).verified_error)


def test_mismatched_or_missing_parts_are_named(onnx_parts, tmp_path):
    ns, g_path, f_path = onnx_parts
    wide = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 30 * 30, 3)).eval()
    bad = _export(wide, (1, 32, 32), tmp_path / "wide.onnx")
    with pytest.raises(TargetError, match=r"takes inputs of shape \(1, 32, 32\).*images of shape \(1, 16, 16\)"):
        with_parts(ns["MODEL"], classifier=bad, decoder=g_path)
    with pytest.raises(TargetError, match="give a decoder too"):
        with_parts(ns["MODEL"], classifier=f_path)
    with pytest.raises(TargetError, match="decoder.*does not accept inputs of shape \\(4,\\)"):
        with_parts(ns["MODEL"], decoder=nn.Linear(5, 256))
    with pytest.raises(TargetError, match="has no classifier"):
        load_part(ns["MODEL"], "classifier")
    from auditai.errors import AuditaiError

    with pytest.raises(AuditaiError, match="no such file"):
        with_parts(ns["MODEL"], decoder=str(tmp_path / "missing.onnx"))


@pytest.fixture
def bb(pytester: pytest.Pytester, onnx_parts):
    pytester.makepyfile(bbparts=PARTS)
    pytester.syspathinsert()
    pytester.makefile(".yaml", auditai_parts=SUITE)
    return pytester, onnx_parts


def test_plugin_options_attach_onnx_parts_to_a_head_only_model(bb):
    pt, (ns, g_path, f_path) = bb
    res = pt.runpytest("--auditai-device=cpu", f"--auditai-classifier={f_path}", f"--auditai-decoder={g_path}",
                       "--auditai-report=r.json", "-p", "no:cacheprovider")
    res.assert_outcomes(passed=2)
    ut = json.loads((pt.path / "r.json").read_text(encoding="utf-8"))["unit_tests"][0]
    assert ut["target"] == "classifier"
    ve = [r["verified_error"] for r in ut["rows"]]
    assert all(0.0 <= v <= 1.0 for v in ve)
    assert [r["clean_error"] for r in ut["rows"]] == [0.0, 0.0]  # the labels are the classifier's
    assert ve == pytest.approx(_want(ns, [0.05, 0.15]).verified_error)
    without = pt.runpytest("--auditai-device=cpu", "-p", "no:cacheprovider")  # head-only: named
    without.stdout.fnmatch_lines(["*target 'classifier'*no decoder and no classifier*"])


def test_verify_command_classifier_and_decoder_flags(onnx_parts, tmp_path, capsys, monkeypatch):
    from auditai.cli import main
    from auditai.model import save_model

    ns, g_path, f_path = onnx_parts
    save_model(tmp_path / "head.auditai", ns["MODEL"])
    torch.save({"z": ns["DATA"]["z"], "y": ns["DATA"]["y"]}, tmp_path / "d.pt")
    args = ["verify", "--model", str(tmp_path / "head.auditai"), "--data", str(tmp_path / "d.pt"), "--dims", "0,1",
            "--eps", "0.15", "--method", "crown", "--device", "cpu", "--target", "classifier",
            "--classifier", f_path, "--decoder", g_path, "--report", str(tmp_path / "r.json")]
    assert main(args) == 0
    ut = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))["unit_tests"][0]
    assert ut["target"] == "classifier"
    assert ut["rows"][0]["verified_error"] == pytest.approx(_want(ns, [0.15]).verified_error[0])
