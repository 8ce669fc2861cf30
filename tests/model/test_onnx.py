"""ONNX import (agreement with onnxruntime) and the VNN-LIB export (checked against the head)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch import nn

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper

from auditai.errors import ModelFileError, UnsupportedLayerError
from auditai.latent import Basis, Dims, Direction
from auditai.model import AuditModel, load_model, save_model
from auditai.onnx_io import export_vnnlib, load_onnx_head

RNG = np.random.default_rng(0)


def _c(name, arr):
    return numpy_helper.from_array(np.asarray(arr, dtype=np.float32), name)


def _save(tmp_path, nodes, inits, in_shape, out_shape, name="h.onnx"):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                          [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, out_shape)],
                          initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    p = tmp_path / name
    onnx.save(m, str(p))
    return p


def _ort(path, x):
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x.astype(np.float32)})[0]


def mlp_file(tmp_path):
    """Normalisation (Sub, Div) → Gemm → Relu → MatMul + Add → LeakyRelu → Mul → Gemm(transB=0) →
    BatchNormalization → Tanh → Gemm (alpha, beta) → Sigmoid: every folding path for flat inputs."""
    r = lambda *s: RNG.standard_normal(s)
    nodes = [
        helper.make_node("Sub", ["x", "mean"], ["a"], name="norm_sub"),
        helper.make_node("Div", ["a", "std"], ["b"], name="norm_div"),
        helper.make_node("Gemm", ["b", "W1", "b1"], ["c"], name="fc1", transB=1),
        helper.make_node("Relu", ["c"], ["d"], name="relu1"),
        helper.make_node("MatMul", ["d", "W2"], ["e"], name="fc2"),
        helper.make_node("Add", ["b2", "e"], ["f"], name="fc2_bias"),
        helper.make_node("LeakyRelu", ["f"], ["g"], name="lrelu", alpha=0.2),
        helper.make_node("Mul", ["g", "s3"], ["h"], name="scale"),
        helper.make_node("Gemm", ["h", "W3"], ["i"], name="fc3"),
        helper.make_node("BatchNormalization", ["i", "bs", "bb", "bm", "bv"], ["j"], name="bn", epsilon=1e-3),
        helper.make_node("Tanh", ["j"], ["k"], name="tanh"),
        helper.make_node("Gemm", ["k", "W4", "b4"], ["l"], name="fc4", transB=1, alpha=0.5, beta=2.0),
        helper.make_node("Sigmoid", ["l"], ["y"], name="sig"),
    ]
    inits = [_c("mean", r(5)), _c("std", RNG.uniform(0.5, 2, 5)), _c("W1", r(6, 5)), _c("b1", r(6)),
             _c("W2", r(6, 7)), _c("b2", r(7)), _c("s3", r(7)), _c("W3", r(7, 4)),
             _c("bs", r(4)), _c("bb", r(4)), _c("bm", r(4)), _c("bv", RNG.uniform(0.5, 2, 4)),
             _c("W4", r(3, 4)), _c("b4", r(3))]
    return _save(tmp_path, nodes, inits, ["N", 5], ["N", 3])


def test_mlp_agrees_with_onnxruntime(tmp_path):
    p = mlp_file(tmp_path)
    m = load_model(p)
    assert m.latent_dim == 5 and m.num_outputs == 3 and len(m.content_hash) == 64
    # normalisation, the bias Add and the scale were folded: four Linear nodes and nothing else affine
    ops = [n.op for n in m.head.graph.nodes]
    assert ops.count("linear") == 4 and not {"add_const", "mul_const"} & set(ops)
    x = RNG.standard_normal((200, 5)) * 3
    with torch.no_grad():
        got = m.head(torch.from_numpy(x).float()).numpy()
    np.testing.assert_allclose(got, _ort(p, x), atol=2e-5, rtol=1e-4)


def test_imported_head_saves_as_auditai_file(tmp_path):
    m = load_model(mlp_file(tmp_path))
    save_model(tmp_path / "m.auditai", m)
    z = torch.randn(7, 5)
    assert torch.equal(load_model(tmp_path / "m.auditai").head(z), m.head(z))


@pytest.mark.parametrize("pad", [0, 1])
def test_conv_agrees_with_onnxruntime(tmp_path, pad):
    """Per-channel normalisation before a padded or unpadded Conv (the padding sees the shifted input)."""
    r = lambda *s: RNG.standard_normal(s)
    h = 6 + 2 * pad - 2
    nodes = [
        helper.make_node("Sub", ["x", "mean"], ["a"], name="sub"),
        helper.make_node("Mul", ["a", "inv"], ["b"], name="mul"),
        helper.make_node("Conv", ["b", "W1", "b1"], ["c"], name="conv1", kernel_shape=[3, 3], pads=[pad] * 4),
        helper.make_node("BatchNormalization", ["c", "bs", "bb", "bm", "bv"], ["d"], name="bn"),
        helper.make_node("Relu", ["d"], ["e"], name="relu"),
        helper.make_node("Conv", ["e", "W2"], ["f"], name="conv2", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Add", ["f", "cb"], ["g"], name="conv2_bias"),
        helper.make_node("Reshape", ["g", "shape"], ["i"], name="flat"),
        helper.make_node("Gemm", ["i", "W3", "b3"], ["y"], name="fc", transB=1),
    ]
    flat = 4 * (h // 2) ** 2
    inits = [_c("mean", r(1, 2, 1, 1)), _c("inv", RNG.uniform(0.5, 2, (2, 1, 1))), _c("W1", r(3, 2, 3, 3)),
             _c("b1", r(3)), _c("bs", r(3)), _c("bb", r(3)), _c("bm", r(3)), _c("bv", RNG.uniform(0.5, 2, 3)),
             _c("W2", r(4, 3, 2, 2)), _c("cb", r(4, 1, 1)),
             numpy_helper.from_array(np.array([-1, flat], dtype=np.int64), "shape"),
             _c("W3", r(2, flat)), _c("b3", r(2))]
    p = _save(tmp_path, nodes, inits, ["N", 2, 6, 6], ["N", 2])
    head = load_onnx_head(p)
    assert [n.op for n in head.graph.nodes].count("conv") == 2
    x = RNG.standard_normal((20, 2, 6, 6))
    with torch.no_grad():
        got = head(torch.from_numpy(x).reshape(20, -1).float()).numpy()
    np.testing.assert_allclose(got, _ort(p, x), atol=2e-5, rtol=1e-4)


def test_unsupported_operator_names_op_and_node(tmp_path):
    nodes = [helper.make_node("Gemm", ["x", "W"], ["a"], name="fc", transB=1),
             helper.make_node("Softmax", ["a"], ["y"], name="probabilities")]
    p = _save(tmp_path, nodes, [_c("W", RNG.standard_normal((3, 4)))], ["N", 4], ["N", 3])
    with pytest.raises(UnsupportedLayerError) as e:
        load_model(p)
    assert "Softmax" in str(e.value) and "probabilities" in str(e.value) and str(p) in str(e.value)


def test_branching_graph_and_unflatten_reshape_are_read(tmp_path):
    nodes = [helper.make_node("Gemm", ["x", "W"], ["a"], name="fc", transB=1),
             helper.make_node("Add", ["a", "x"], ["y"], name="residual")]
    p = _save(tmp_path, nodes, [_c("W", RNG.standard_normal((4, 4)))], ["N", 4], ["N", 4])
    x = RNG.standard_normal((7, 4))
    with torch.no_grad():
        got = load_model(p).head(torch.from_numpy(x).float()).numpy()
    np.testing.assert_allclose(got, _ort(p, x), atol=2e-5, rtol=1e-4)
    nodes = [helper.make_node("Reshape", ["x", "s"], ["a"], name="unflatten"),
             helper.make_node("Relu", ["a"], ["y"], name="r")]
    s = numpy_helper.from_array(np.array([-1, 1, 2, 2], dtype=np.int64), "s")
    p = _save(tmp_path, nodes, [s], ["N", 4], ["N", 1, 2, 2], name="r.onnx")
    gm = load_onnx_head(p)
    assert gm(torch.tensor([[1.0, -2.0, 3.0, -4.0]])).tolist() == [[1.0, 0.0, 3.0, 0.0]]


def test_corrupt_onnx_is_named(tmp_path):
    p = mlp_file(tmp_path)
    data = p.read_bytes()
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelFileError, match="bad.onnx"):
        load_model(bad)


# --------------------------------------------------------------------------- export
def export_head() -> nn.Module:
    torch.manual_seed(3)
    head = nn.Sequential(nn.Linear(6, 10), nn.BatchNorm1d(10), nn.ReLU(),
                         nn.Sequential(nn.Dropout(0.1), nn.Linear(10, 8), nn.LeakyReLU(0.1)),
                         nn.Linear(8, 4), nn.Tanh(), nn.Linear(4, 3))
    head[1].running_mean.uniform_(-1, 1)
    head[1].running_var.uniform_(0.5, 2)
    return head.eval()


@pytest.mark.parametrize("kind", [Dims([1, 4], "inf"), Direction(torch.randn(6), "pose"),
                                  Basis(torch.randn(6, 3), "inf", "plane"), Dims([2], "2")])
def test_exported_network_matches_head(tmp_path, kind):
    head = export_head()
    z0 = torch.randn(3, 6)
    y = torch.tensor([0, 2, 1])
    files = export_vnnlib(head, z0, y, kind, 0.25, tmp_path)
    assert len(files) == 3
    latent = kind.make(z0.double(), 0.25)
    for i, (net, prop) in enumerate(files):
        sess = ort.InferenceSession(str(net), providers=["CPUExecutionProvider"])
        delta = (torch.rand(16, latent.k, dtype=torch.float64) * 2 - 1) * 0.25
        got = np.concatenate([sess.run(None, {"delta": d[None].float().numpy()})[0] for d in delta])
        with torch.no_grad():
            want = head((latent.z0[i] + delta @ latent.basis.T).float()).numpy()
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4)
        text = prop.read_text()
        assert text.count("declare-const X_") == latent.k and text.count("declare-const Y_") == 3
        assert "(assert (<= X_0 0.25))" in text and "(assert (>= X_0 -0.25))" in text
        others = sorted(int(j) for j in re.findall(rf"\(>= Y_(\d) Y_{int(y[i])}\)", text))
        assert others == [j for j in range(3) if j != int(y[i])]
    assert (tmp_path / "instances.csv").read_text().splitlines()[0] == "sample_00000.onnx,sample_00000.vnnlib,300"


def test_l2_set_of_several_dims_is_refused(tmp_path):
    with pytest.raises(ValueError, match="not a box"):
        export_vnnlib(export_head(), torch.randn(2, 6), torch.tensor([0, 1]), Dims([0, 1], "2"), 0.1, tmp_path)


def test_binary_head_property(tmp_path):
    head = nn.Sequential(nn.Linear(2, 1)).eval()
    (_, p0), (_, p1) = export_vnnlib(head, torch.randn(2, 2), torch.tensor([0, 1]), Dims([0]), 0.5, tmp_path)
    assert "(assert (>= Y_0 0))" in p0.read_text() and "(assert (<= Y_0 0))" in p1.read_text()


def test_export_command(tmp_path):
    from auditai.cli import main

    head = export_head()
    save_model(tmp_path / "m.auditai", AuditModel(head, directions={"pose": torch.randn(6)}, dims={"pair": [0, 5]}))
    np.savez(tmp_path / "d.npz", z=np.random.default_rng(1).standard_normal((5, 6)).astype(np.float32),
             y=np.array([0, 1, 2, 0, 1]))
    out = tmp_path / "out"
    rc = main(["export-vnnlib", "--model", str(tmp_path / "m.auditai"), "--data", str(tmp_path / "d.npz"),
               "--direction", "pose", "--eps", "0.5", "--out", str(out), "--limit", "2"])
    assert rc == 0 and sorted(p.name for p in out.glob("*.onnx")) == ["sample_00000.onnx", "sample_00001.onnx"]
    rc = main(["export-vnnlib", "--model", str(tmp_path / "m.auditai"), "--data", str(tmp_path / "d.npz"),
               "--dims", "pair", "--norm", "2", "--eps", "0.5", "--out", str(tmp_path / "o2")])
    assert rc == 2  # an ℓ2 set of two dims is not a box: a clear error, not a wrong property
