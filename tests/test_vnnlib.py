"""`auditai vnnlib`: the VNN-LIB reader and the decider.

Answers are checked against exact ones: the MILP oracle (tests/bounds/milp.py) on small ReLU
networks, dense sampling on a generator∘classifier chain, `auditai verify`'s complete method on
the properties `auditai export-vnnlib` writes (round trip); every `sat` is replayed here in
float64, and a property with a known counterexample is never answered `unsat`.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from auditai.cli import main
from auditai.latent import Dims
from auditai.vnnlib import VnnlibError, decide, parse_vnnlib
from tests.bounds.milp import spec_extremes


def header(n_in: int, n_out: int) -> str:
    return "".join(f"(declare-const X_{i} Real)\n" for i in range(n_in)) + \
        "".join(f"(declare-const Y_{j} Real)\n" for j in range(n_out))


def box(lo, hi) -> str:
    return "".join(f"(assert (<= X_{i} {float(h)!r}))\n(assert (>= X_{i} {float(l)!r}))\n"
                   for i, (l, h) in enumerate(zip(lo, hi)))


def robustness(n_out: int, label: int) -> str:
    """Unsafe: some other class scores at least the label's."""
    return "(assert (or " + " ".join(f"(and (>= Y_{j} Y_{label}))" for j in range(n_out) if j != label) + "))\n"


def mlp(seed: int, sizes=(3, 12, 12, 3)) -> nn.Sequential:
    torch.manual_seed(seed)
    layers = []
    for a, b in itertools.pairwise(sizes):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1]).eval()


def replays(net: nn.Module, prop, ans) -> bool:
    """The answer's point lies in the box, its Y are net(X) in float64, and a disjunct holds."""
    x = torch.tensor(ans.x, dtype=torch.float64)
    assert ((x >= prop.lower) & (x <= prop.upper)).all()
    net64 = nn.Sequential(*[m for m in net]).double() if isinstance(net, nn.Sequential) else net.double()
    with torch.no_grad():
        y = net64(x[None])[0]
    assert torch.allclose(y, torch.tensor(ans.y, dtype=torch.float64), rtol=0, atol=1e-12)
    C, d, groups = prop.matrix()
    g = C @ y + d
    strict = [r.strict for dj in prop.disjuncts for r in dj]
    return any(all((g[r] < 0) if strict[r] else (g[r] <= 0) for r in gr) for gr in groups)


# --------------------------------------------------------------------------- reader
def test_reader_box_and_dnf():
    text = header(2, 2) + box([-0.5, 1.0], [0.5, 1.0]) + \
        "(assert (or (and (>= Y_1 Y_0)) (and (<= Y_0 -3) (> (+ Y_1 (* 2 Y_0)) 1.5e0))))\n"
    p = parse_vnnlib(text)
    assert p.lower.tolist() == [-0.5, 1.0] and p.upper.tolist() == [0.5, 1.0]
    C, d, groups = p.matrix()
    assert C.tolist() == [[1.0, -1.0], [1.0, 0.0], [-2.0, -1.0]] and d.tolist() == [0.0, 3.0, 1.5]
    assert groups == [[0], [1, 2]] and [r.strict for dj in p.disjuncts for r in dj] == [False, False, True]
    plain = parse_vnnlib(header(1, 2) + box([0], [1]) + "(assert (<= Y_0 Y_1))\n(assert (>= Y_0 0.25))\n")
    assert len(plain.disjuncts) == 1 and len(plain.disjuncts[0]) == 2  # plain asserts: a conjunction


@pytest.mark.parametrize("text, line, token", [
    (header(1, 1) + "(assert (<= X_0 1))\n(assert (>= X_0 0))\n(assert (<= (* Y_0 Y_0) 1))\n", 5, "*"),
    (header(1, 1) + "(assert (<= X_0 1))\n(assert (>= X_0 0))\n(assert (<= Y_0 Z_3))\n", 5, "Z_3"),
    (header(1, 1) + "(assert (<= X_0 1))\n(assert (>= X_0 0))\n(check-sat)\n", 5, "check-sat"),
    (header(1, 1) + "(assert (<= X_0 1))\n(assert (>= X_0 0))\n(assert (=> Y_0 1))\n", 5, "=>"),
    (header(1, 1) + "(assert (<= X_0 1))\n(assert (>= X_0 0))\n(assert (<= (+ X_0 Y_0) 1))\n", 5, "<="),
    (header(1, 1) + "(assert (<= X_0 1))\n(assert (>= X_0 0)\n", 4, "("),
    (header(1, 1) + "(assert (<= X_0 1)))\n", 3, ")"),
    (header(2, 1) + "(assert (<= (+ X_0 X_1) 1))\n", 4, "<="),
])
def test_reader_errors_are_located(text, line, token):
    with pytest.raises(VnnlibError) as e:
        parse_vnnlib(text, "p.vnnlib")
    assert f"p.vnnlib:{line}:" in str(e.value) and repr(token) in str(e.value)


def test_reader_needs_a_box():
    with pytest.raises(VnnlibError, match="X_0 has no lower or no upper bound"):
        parse_vnnlib(header(1, 1) + "(assert (<= X_0 1))\n(assert (<= Y_0 0))\n", "p.vnnlib")


# --------------------------------------------------------------------------- against the MILP oracle
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_answers_match_the_milp_oracle(seed):
    net = mlp(seed)
    Ws = [m.weight.detach().double().numpy() for m in net if isinstance(m, nn.Linear)]
    bs = [m.bias.detach().double().numpy() for m in net if isinstance(m, nn.Linear)]
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.randn(3, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        label = int(net.double()(x0[None]).argmax())
    net.float()
    counts = {"sat": 0, "unsat": 0}
    for eps in (0.05, 0.3, 0.8, 1.5):
        prop = parse_vnnlib(header(3, 3) + box(x0 - eps, x0 + eps) + robustness(3, label))
        ans = decide(net, prop, timeout=30)
        worst = min(spec_extremes(Ws, bs, x0.numpy(), np.eye(3), eps,
                                  np.eye(3)[label] - np.eye(3)[j])[0].value for j in range(3) if j != label)
        if ans.status == "unsat":
            assert worst > -1e-9, (eps, worst)
        elif ans.status == "sat":
            assert replays(net, prop, ans) and worst <= 1e-9
        else:  # decided unless the exact answer is a near-tie
            assert abs(worst) < 1e-6, (eps, ans.status, worst)
        counts[ans.status] = counts.get(ans.status, 0) + 1
    assert counts["sat"] + counts["unsat"] >= 3


def test_known_counterexample_is_never_unsat():
    net = mlp(3)
    x0 = torch.tensor([0.2, -0.4, 0.1])
    xs = x0 + torch.tensor([0.3, -0.3, 0.3])  # a corner of the box below
    with torch.no_grad():
        v = float(net.double()(xs.double()[None])[0, 0])
    net.float()
    # Y_0 ≥ v holds at xs (a tie at the threshold counts: ≥ is not strict)
    prop = parse_vnnlib(header(3, 3) + box(x0 - 0.3, x0 + 0.3) + f"(assert (>= Y_0 {v!r}))\n")
    ans = decide(net, prop, timeout=10)
    assert ans.status != "unsat"
    if ans.status == "sat":
        assert replays(net, prop, ans)


# --------------------------------------------------------------------------- generator∘classifier chain
class Image(nn.Module):
    """(N, 36) → (N, 1, 6, 6): a reshape ONNX exports as one Reshape by a constant shape."""

    def forward(self, x):
        return x.reshape(-1, 1, 6, 6)


def chain_net(conv: bool = True) -> nn.Sequential:
    """A generator (Linear → ReLU → Linear → Sigmoid → a 1×6×6 image) then a classifier (a small
    CNN, or with conv=False an MLP on the flat image, which the ONNX chain reader takes)."""
    torch.manual_seed(4)
    clf = [Image(), nn.Conv2d(1, 3, 3, 1, 0), nn.ReLU(), nn.Flatten(), nn.Linear(48, 10)] if conv else \
        [nn.Linear(36, 10)]
    net = nn.Sequential(nn.Linear(4, 24), nn.ReLU(), nn.Linear(24, 36), nn.Sigmoid(), *clf, nn.ReLU(),
                        nn.Linear(10, 3)).eval()
    with torch.no_grad():  # scores nearly tied at X0 (class 0 ahead by 0.02): a boundary runs close by
        net[-1].weight.mul_(20.0)
        net[-1].bias.mul_(20.0)
        net[-1].bias.sub_(net(X0[None])[0] - torch.tensor([0.02, 0.0, -0.01]))
    return net


X0 = torch.tensor([0.5, -0.3, 0.0, 0.2])


def test_generator_classifier_chain_against_dense_sampling():
    net = chain_net()
    x0 = X0
    with torch.no_grad():
        label = int(net(x0[None]).argmax())
    g = torch.linspace(-1, 1, 15)
    grid = torch.cartesian_prod(g, g)
    seen = set()
    for eps in (0.002, 0.1, 1.0):
        lo, hi = x0.clone(), x0.clone()
        lo[:2] -= eps
        hi[:2] += eps  # two perturbed latent coordinates, two fixed
        prop = parse_vnnlib(header(4, 3) + box(lo, hi) + robustness(3, label))
        ans = decide(net, prop, timeout=20)
        seen.add(ans.status)
        if ans.status == "sat":
            assert replays(net, prop, ans)
        elif ans.status == "unsat":
            pts = x0.expand(grid.shape[0], 4).clone()
            pts[:, :2] += eps * grid
            with torch.no_grad():
                assert (net(pts).argmax(1) == label).all()
    assert {"sat", "unsat"} <= seen


# --------------------------------------------------------------------------- command line
def _onnx(net: nn.Module, n_in: int, path) -> None:
    torch.onnx.export(net, (torch.zeros(1, n_in),), str(path), dynamo=False, input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})


def test_command_answers_in_the_competition_format(tmp_path, capsys):
    net = mlp(0)
    _onnx(net, 3, tmp_path / "net.onnx")
    x0 = torch.tensor([0.1, 0.2, 0.3])
    with torch.no_grad():
        label = int(net(x0[None]).argmax())
    (tmp_path / "small.vnnlib").write_text(header(3, 3) + box(x0 - 1e-3, x0 + 1e-3) + robustness(3, label))
    (tmp_path / "big.vnnlib").write_text(header(3, 3) + box(x0 - 5, x0 + 5) + robustness(3, label))
    assert main(["vnnlib", str(tmp_path / "net.onnx"), str(tmp_path / "small.vnnlib"),
                 "--results", str(tmp_path / "r.txt")]) == 0
    assert (tmp_path / "r.txt").read_text() == "unsat\n"
    assert main(["vnnlib", str(tmp_path / "net.onnx"), str(tmp_path / "big.vnnlib"), "--timeout", "20"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "sat" and lines[1].startswith("((X_0 ") and lines[-1].endswith("))")
    vals = {}
    for ln in lines[1:]:
        name, v = ln.strip(" ()").split()
        vals[name] = float(v)
    assert set(vals) == {"X_0", "X_1", "X_2", "Y_0", "Y_1", "Y_2"}
    with torch.no_grad():
        y = net.double()(torch.tensor([[vals["X_0"], vals["X_1"], vals["X_2"]]], dtype=torch.float64))[0]
    assert max(vals[f"Y_{j}"] for j in range(3) if j != label) >= vals[f"Y_{label}"]
    assert torch.allclose(y, torch.tensor([vals[f"Y_{j}"] for j in range(3)], dtype=torch.float64), atol=1e-12)


def test_command_bad_input_exits_2_with_the_line(tmp_path, capsys):
    net = mlp(0)
    _onnx(net, 3, tmp_path / "net.onnx")
    (tmp_path / "bad.vnnlib").write_text(header(3, 3) + box([0] * 3, [1] * 3) + "(assert (<= (* Y_0 Y_1) 0))\n")
    assert main(["vnnlib", str(tmp_path / "net.onnx"), str(tmp_path / "bad.vnnlib")]) == 2
    err = capsys.readouterr().err
    assert "bad.vnnlib:13:" in err and "'*'" in err
    (tmp_path / "wrong.vnnlib").write_text(header(2, 3) + box([0] * 2, [1] * 2) + robustness(3, 0))
    assert main(["vnnlib", str(tmp_path / "net.onnx"), str(tmp_path / "wrong.vnnlib")]) == 2
    assert "declares 2 inputs" in capsys.readouterr().err


def test_generator_classifier_from_torch_and_from_onnx_get_the_same_answers(tmp_path):
    net = chain_net(conv=False)
    _onnx(net, 4, tmp_path / "gc.onnx")
    for eps in (0.002, 1.0):
        lo, hi = X0.clone(), X0.clone()
        lo[:2] -= eps
        hi[:2] += eps
        prop = tmp_path / f"p{eps}.vnnlib"
        prop.write_text(header(4, 3) + box(lo, hi) + robustness(3, 0))
        want = decide(net, parse_vnnlib(prop.read_text()), timeout=20).status
        assert main(["vnnlib", str(tmp_path / "gc.onnx"), str(prop), "--results", str(tmp_path / "r.txt"),
                     "--timeout", "20"]) == 0
        assert (tmp_path / "r.txt").read_text().splitlines()[0] == want
        assert want == ("unsat" if eps < 0.01 else "sat")


def test_round_trip_with_export_vnnlib(tmp_path):
    """export-vnnlib's properties, answered by `auditai vnnlib`, agree with verify(method=complete)."""
    from auditai.onnx_io import export_vnnlib
    from auditai.verify import verify

    head = mlp(5, sizes=(4, 16, 3))
    gen = torch.Generator().manual_seed(6)
    z = torch.randn(8, 4, generator=gen)
    with torch.no_grad():
        y = head(z).argmax(1)
    kind, eps = Dims([0, 2]), 0.6
    written = export_vnnlib(head, z, y, kind, eps, tmp_path)
    r = verify(head, z, y, kind, [eps], method="complete", radius=False, split_budget=256)
    answers = []
    for (onnx_path, prop_path), v in zip(written, r.verdicts[:, 0].tolist()):
        out = tmp_path / f"{prop_path.stem}.txt"
        assert main(["vnnlib", str(onnx_path), str(prop_path), "--results", str(out), "--timeout", "20"]) == 0
        status = out.read_text().splitlines()[0]
        answers.append(status)
        assert not (v == 1 and status == "sat") and not (v == -1 and status == "unsat"), (v, status)
        if v != 0:
            assert status == {1: "unsat", -1: "sat"}[v]
    assert "sat" in answers and "unsat" in answers
