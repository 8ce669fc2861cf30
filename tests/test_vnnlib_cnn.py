"""`auditai vnnlib` on a convolutional generator∘classifier read from ONNX as a DAG: a
ConvTranspose generator then a Conv classifier, exported from torch, answered the same as the
torch composition; every `sat` replays in float64 on the torch network, every `unsat` holds
under dense sampling of the box, and an image-input classifier alone (declared N×C×H×W input)
is answered on its flat inputs.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from auditai.cli import main
from auditai.vnnlib import decide, parse_vnnlib
from tests.test_vnnlib import box, header, replays, robustness

pytestmark = pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export")

X0 = torch.tensor([0.4, -0.2, 0.1, 0.3])


def gen_cnn() -> nn.Sequential:
    """Linear → 4×3×3 → ConvTranspose2d → ReLU → ConvTranspose2d → Sigmoid (1×12×12), then
    Conv2d → ReLU → Flatten → Linear → ReLU → Linear (3 classes), nearly tied at X0."""
    torch.manual_seed(11)
    g = nn.Sequential(nn.Linear(4, 36), nn.Unflatten(1, (4, 3, 3)), nn.ConvTranspose2d(4, 2, 4, 2, 1), nn.ReLU(),
                      nn.ConvTranspose2d(2, 1, 4, 2, 1), nn.Sigmoid())
    f = nn.Sequential(nn.Conv2d(1, 4, 3, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(144, 16), nn.ReLU(),
                      nn.Linear(16, 3))
    net = nn.Sequential(g, f).eval()
    with torch.no_grad():  # class 0 ahead by 0.02 at X0: a decision boundary runs close by
        g[0].weight.mul_(3.0)
        f[-1].weight.mul_(20.0)
        f[-1].bias.mul_(20.0)
        f[-1].bias.sub_(net(X0[None])[0] - torch.tensor([0.02, 0.0, -0.01]))
    return net


def _onnx(net: nn.Module, shape: tuple[int, ...], path) -> str:
    torch.onnx.export(net, (torch.zeros(1, *shape),), str(path), dynamo=False, input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    return str(path)


def _answer(onnx_path: str, prop, tmp_path) -> list[str]:
    out = tmp_path / "r.txt"
    assert main(["vnnlib", onnx_path, str(prop), "--results", str(out), "--timeout", "30"]) == 0
    return out.read_text().splitlines()


def test_conv_generator_classifier_from_onnx_answers_as_torch(tmp_path):
    net = gen_cnn()
    path = _onnx(net, (4,), tmp_path / "gcnn.onnx")
    g = torch.linspace(-1, 1, 21)
    grid = torch.cartesian_prod(g, g)
    seen = []
    for eps in (0.002, 0.5):
        lo, hi = X0.clone(), X0.clone()
        lo[:2] -= eps
        hi[:2] += eps  # two perturbed latent coordinates, two fixed
        prop = tmp_path / f"p{eps}.vnnlib"
        prop.write_text(header(4, 3) + box(lo, hi) + robustness(3, 0))
        p = parse_vnnlib(prop.read_text())
        want = decide(net, p, timeout=30)
        lines = _answer(path, prop, tmp_path)
        assert lines[0] == want.status
        seen.append(want.status)
        if want.status == "sat":
            assert replays(net, p, want)
            vals = dict(ln.strip(" ()").split() for ln in lines[1:])
            x = torch.tensor([[float(vals[f"X_{i}"]) for i in range(4)]], dtype=torch.float64)
            assert ((x[0] >= p.lower) & (x[0] <= p.upper)).all()
            with torch.no_grad():
                y = nn.Sequential(*net).double()(x)[0]
            assert y[1:].max() >= y[0]  # the ONNX answer's point is a counterexample of the torch network
            net.float()
        elif want.status == "unsat":
            pts = X0.expand(grid.shape[0], 4).clone()
            pts[:, :2] += eps * grid
            with torch.no_grad():
                assert (net(pts).argmax(1) == 0).all()
    assert seen == ["unsat", "sat"]


def test_image_input_classifier_is_answered_on_flat_inputs(tmp_path):
    """The classifier alone: its ONNX input is declared 1×12×12; X_i are its 144 pixels."""
    net = gen_cnn()
    clf = net[1]
    with torch.no_grad():
        img = net[0](X0[None])[0]
    path = _onnx(clf, (1, 12, 12), tmp_path / "clf.onnx")
    flat = img.reshape(-1)
    label = int(clf(img[None]).argmax())
    answers = []
    for eps in (1e-4, 0.5):
        prop = tmp_path / f"c{eps}.vnnlib"
        prop.write_text(header(144, 3) + box((flat - eps).clamp(0, 1), (flat + eps).clamp(0, 1)) + robustness(3, label))
        p = parse_vnnlib(prop.read_text())
        lines = _answer(path, prop, tmp_path)
        want = decide(nn.Sequential(nn.Unflatten(1, (1, 12, 12)), *clf).eval(), p, timeout=30)
        assert lines[0] == want.status
        answers.append(lines[0])
    assert answers[0] == "unsat" and answers[1] == "sat"
