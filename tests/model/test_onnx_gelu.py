"""The tanh-approximate GELU of torch's ONNX export (x·x·x or Pow(x, 3), Tanh) read as one gelu node
(approximate="tanh"): answers like onnxruntime, bounds contain onnxruntime's outputs; a partial or
different pattern is refused with a message that says how far the pattern was seen."""

from __future__ import annotations

import io
import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper

from auditai.bounds import bound_box
from auditai.errors import UnsupportedLayerError
from auditai.onnx_graph import load_onnx_graph

RNG = np.random.default_rng(7)
BETA = math.sqrt(2 / math.pi)


def _run(data: bytes, x: np.ndarray) -> np.ndarray:
    s = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x.astype(np.float32)})[0]


def check(data: bytes, d=4, width=0.5, samples=200):
    gm = load_onnx_graph(data)
    x = RNG.standard_normal((6, d)) * 2
    with torch.no_grad():
        got = gm(torch.from_numpy(x).float()).numpy()
    np.testing.assert_allclose(got, _run(data, x), rtol=1e-5, atol=1e-5)
    lo, hi = x[:3] - width, x[:3] + width
    pts = lo[:, None] + (hi - lo)[:, None] * RNG.uniform(size=(3, samples, d))
    pts[:, 0], pts[:, 1] = lo, hi
    outs = _run(data, pts.reshape(-1, d)).reshape(3, samples, -1)
    for method in ("ibp", "crown-ibp", "crown"):
        l, u = bound_box(gm, torch.from_numpy(lo).float(), torch.from_numpy(hi).float(), method=method)
        tol = 1e-5 * (1 + np.abs(outs).max())
        assert (outs >= l.numpy()[:, None] - tol).all() and (outs <= u.numpy()[:, None] + tol).all(), method
    return gm


def _gelus(gm) -> list[str]:
    return [n.attrs.get("approximate") for n in gm.graph.nodes if n.op == "gelu"]


@pytest.mark.parametrize("opset", [13, 17, 20])
def test_torch_tanh_gelu_export(opset):
    torch.manual_seed(2)
    net = nn.Sequential(nn.Linear(4, 6), nn.GELU(approximate="tanh"), nn.Linear(6, 3)).eval()
    b = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.randn(1, 4), b, opset_version=opset, dynamo=False, input_names=["x"],
                          dynamic_axes={"x": {0: "N"}})
    gm = check(b.getvalue())
    assert _gelus(gm) == ["tanh"]
    x = torch.randn(8, 4)
    with torch.no_grad():
        torch.testing.assert_close(gm(x), net(x), rtol=1e-5, atol=1e-5)


def _graph(body, out="y") -> bytes:
    """x (N×4) → Gemm → body (nodes reading 'h', writing `out`) → y."""
    w = numpy_helper.from_array(RNG.standard_normal((4, 4)).astype(np.float32), "W")
    consts = {"three": 3.0, "two": 2.0, "k": 0.044715, "k_bad": 0.05, "beta": BETA, "one": 1.0, "half": 0.5}
    inits = [w] + [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in consts.items()]
    nodes = [helper.make_node("Gemm", ["x", "W"], ["h"], name="fc", transB=1)] + body
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                          [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", 4])], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m.SerializeToString()


def _n(op, ins, out):
    return helper.make_node(op, ins, [out], name=out)


def _inner(cube_with_pow=True, kappa="k"):
    cube = [_n("Pow", ["h", "three"], "cube")] if cube_with_pow else \
        [_n("Mul", ["h", "h"], "sq"), _n("Mul", ["sq", "h"], "cube")]
    return cube + [_n("Mul", [kappa, "cube"], "kc"), _n("Add", ["kc", "h"], "in"),
                   _n("Mul", ["in", "beta"], "bin"), _n("Tanh", ["bin"], "t"), _n("Add", ["t", "one"], "1t")]


@pytest.mark.parametrize("variant", ["pow, x·(1+t)·½", "x·x·x, ½x·(1+t)", "pow, x·(½·(1+t))"])
def test_hand_written_tanh_gelu_variants(variant):
    body = _inner(cube_with_pow=variant.startswith("pow"))
    if variant.endswith("x·(1+t)·½"):
        body += [_n("Mul", ["h", "1t"], "x1t"), _n("Mul", ["x1t", "half"], "y")]
    elif variant.endswith("½x·(1+t)"):
        body += [_n("Mul", ["half", "h"], "hx"), _n("Mul", ["1t", "hx"], "y")]
    else:
        body += [_n("Mul", ["1t", "half"], "h1t"), _n("Mul", ["h", "h1t"], "y")]
    gm = check(_graph(body))
    assert _gelus(gm) == ["tanh"]


@pytest.mark.parametrize("body,seen", [
    (_inner(kappa="k_bad"), "as far as x³, then Mul"),                     # 0.05, not 0.044715
    (_inner()[:4] + [_n("Relu", ["in"], "y")], "as far as x + 0.044715·x³, then Relu"),
    (_inner() + [_n("Mul", ["1t", "1t"], "y")], "as far as 1 + tanh(…), then Mul"),
    (_inner()[:6] + [_n("Sigmoid", ["t"], "y")], "as far as tanh(√(2/π)·(x + 0.044715·x³)), then Sigmoid"),
])
def test_partial_or_different_patterns_are_refused_saying_what_was_seen(body, seen):
    with pytest.raises(UnsupportedLayerError, match="tanh-GELU pattern") as e:
        load_onnx_graph(_graph(body))
    assert seen in str(e.value), str(e.value)


def test_other_powers_and_a_bare_square_are_refused_by_node():
    with pytest.raises(UnsupportedLayerError, match=r"node 'p2' \(Pow\).*only x³"):
        load_onnx_graph(_graph([_n("Pow", ["h", "two"], "p2"), _n("Relu", ["p2"], "y")]))
    with pytest.raises(UnsupportedLayerError, match=r"node 'y' \(Mul\).*as far as x·x"):
        load_onnx_graph(_graph([_n("Mul", ["h", "h"], "y")]))
    # a square feeding a node that cannot be read either: both named
    with pytest.raises(UnsupportedLayerError, match=r"node 'sq' \(Mul\).*x·x") as e:
        load_onnx_graph(_graph([_n("Mul", ["h", "h"], "sq"), _n("Erf", ["h"], "e"), _n("Add", ["e", "sq"], "y")]))
    assert "'e' (Erf)" in str(e.value)
