"""ONNX pooling and Conv with ceil_mode, asymmetric pads and auto_pad: each loaded network answers like
onnxruntime (inputs of both signs: MaxPool's padding is −inf, never 0), and its IBP / CROWN-IBP / CROWN
bounds contain onnxruntime's outputs at sampled points and vertices of a box."""

from __future__ import annotations

import io
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

RNG = np.random.default_rng(3)
IN = (2, 7, 7)


def _run(data: bytes, x: np.ndarray) -> np.ndarray:
    s = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x.astype(np.float32)})[0]


def check(data: bytes, in_shape=IN, shift=0.0, width=0.3, samples=48):
    gm = load_onnx_graph(data)
    x = RNG.standard_normal((4, *in_shape)) + shift
    want = _run(data, x)
    with torch.no_grad():
        got = gm(torch.from_numpy(x).float()).numpy()
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    lo, hi = x[:2] - width, x[:2] + width
    pts = lo[:, None] + (hi - lo)[:, None] * RNG.uniform(size=(2, samples, *in_shape))
    pts[:, 0], pts[:, 1] = lo, hi
    outs = _run(data, pts.reshape(-1, *in_shape)).reshape(2, samples, -1)
    for method in ("ibp", "crown-ibp", "crown"):
        l, u = bound_box(gm, torch.from_numpy(lo).float(), torch.from_numpy(hi).float(), method=method)
        tol = 1e-4 * (1 + np.abs(outs).max())
        l, u = l.reshape(2, 1, -1).numpy(), u.reshape(2, 1, -1).numpy()
        assert (outs >= l - tol).all() and (outs <= u + tol).all(), method
        assert np.isfinite(u - l).all()
    return gm


def _net(op: str, in_shape=IN, opset=17, conv=False, **attrs) -> bytes:
    """x → [Conv 2→3, 3×3] → op(**attrs) → Flatten: one node under test, weights drawn here."""
    nodes, inits, cur = [], [], "x"
    if conv:
        wt = RNG.standard_normal((3, in_shape[0], *([3] * (len(in_shape) - 1)))).astype(np.float32) * 0.4
        inits += [numpy_helper.from_array(wt, "w"), numpy_helper.from_array(np.full(3, 0.1, np.float32), "b")]
        nodes.append(helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", **attrs))
        cur = "c"
    else:
        nodes.append(helper.make_node(op, ["x"], ["p"], name="pool", **attrs))
        cur = "p"
    nodes.append(helper.make_node("Flatten", [cur], ["y"], name="flat", axis=1))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *in_shape])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "M"])], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m.SerializeToString()


MAXPOOLS = [
    {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1},
    {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1, "pads": [1, 1, 1, 1]},
    {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [0, 1, 2, 0]},
    {"kernel_shape": [3, 2], "strides": [2, 3], "pads": [1, 0, 0, 1], "ceil_mode": 1},
    {"kernel_shape": [2, 2], "strides": [2, 2], "auto_pad": "SAME_UPPER"},
    {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_LOWER"},
    {"kernel_shape": [4, 4], "strides": [1, 1], "auto_pad": "SAME_UPPER"},
    {"kernel_shape": [4, 4], "strides": [3, 3], "auto_pad": "SAME_LOWER", "ceil_mode": 1},
    {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "VALID"},
]


@pytest.mark.parametrize("attrs", MAXPOOLS, ids=lambda a: "-".join(f"{k}{v}" for k, v in a.items()))
def test_maxpool(attrs):
    # inputs of both signs, and mostly negative: a zero in the padding would show as a wrong max
    check(_net("MaxPool", **attrs), shift=-2.0)
    check(_net("MaxPool", **attrs))


AVGPOOLS = [
    {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1},
    {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1, "count_include_pad": 1, "pads": [1, 1, 1, 1]},
    {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1, "count_include_pad": 0, "pads": [1, 1, 1, 1]},
    {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [0, 1, 2, 0], "count_include_pad": 0},
    {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [0, 1, 2, 0], "count_include_pad": 1},
    {"kernel_shape": [2, 2], "strides": [2, 2], "auto_pad": "SAME_UPPER"},
    {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_LOWER", "count_include_pad": 1},
    {"kernel_shape": [2, 2], "strides": [3, 3], "auto_pad": "SAME_UPPER", "ceil_mode": 1},
]


@pytest.mark.parametrize("attrs", AVGPOOLS, ids=lambda a: "-".join(f"{k}{v}" for k, v in a.items()))
def test_averagepool(attrs):
    check(_net("AveragePool", **attrs))


@pytest.mark.parametrize("mode", ["SAME_UPPER", "SAME_LOWER"])
@pytest.mark.parametrize("strides", [[1, 1], [2, 2], [2, 1]])
def test_conv_auto_pad(mode, strides):
    gm = check(_net("Conv", conv=True, kernel_shape=[3, 3], auto_pad=mode, strides=strides))
    assert gm.graph.out_shape == (3 * -(-7 // strides[0]) * -(-7 // strides[1]),)  # ceil(7 / stride) per axis


def test_1d_pools_with_ceil_mode_and_asymmetric_pads():
    check(_net("MaxPool", in_shape=(2, 9), kernel_shape=[2], strides=[2], ceil_mode=1, pads=[1, 0]),
          in_shape=(2, 9), shift=-2.0)
    check(_net("AveragePool", in_shape=(2, 9), kernel_shape=[3], strides=[2], ceil_mode=1, pads=[0, 1]),
          in_shape=(2, 9))


def test_torch_pools_with_ceil_mode_export():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True),
                        nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False), nn.Flatten(),
                        nn.Linear(3 * 2 * 2, 4)).eval()
    b = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.randn(1, *IN), b, opset_version=13, dynamo=False, input_names=["x"],
                          dynamic_axes={"x": {0: "N"}})
    gm = check(b.getvalue())
    x = torch.randn(5, *IN)
    with torch.no_grad():
        torch.testing.assert_close(gm(x), net(x), rtol=1e-5, atol=1e-5)


def test_pools_it_cannot_read_are_refused_by_node():
    with pytest.raises(UnsupportedLayerError, match=r"node 'pool' \(MaxPool\).*dilations"):
        load_onnx_graph(_net("MaxPool", kernel_shape=[2, 2], strides=[2, 2], dilations=[2, 2], pads=[0, 0, 1, 1]))
    with pytest.raises(UnsupportedLayerError, match=r"node 'pool' \(AveragePool\).*a negative pad"):
        load_onnx_graph(_net("AveragePool", in_shape=(2, 8, 6), kernel_shape=[2, 2], strides=[3, 3],
                             auto_pad="SAME_UPPER"))  # 8 → 3 windows of 2 need a pad of -1
    with pytest.raises(UnsupportedLayerError, match=r"node 'conv' \(Conv\).*SAME_UPPER with dilations"):
        load_onnx_graph(_net("Conv", conv=True, kernel_shape=[3, 3], auto_pad="SAME_UPPER", dilations=[2, 2]))
    with pytest.raises(UnsupportedLayerError, match=r"node 'pool' \(MaxPool\).*entirely in the padding"):
        load_onnx_graph(_net("MaxPool", kernel_shape=[2, 2], strides=[1, 1], pads=[0, 0, 3, 0]))
