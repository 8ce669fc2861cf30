"""ONNX networks we did not write into the graph IR: torch exports at several opsets and graphs
shaped like public competition networks (ACAS Xu, ERAN MNIST). Each loaded network answers like
onnxruntime, and its IBP / CROWN-IBP / CROWN bounds (bound_box) contain onnxruntime's outputs at sampled
points of the box."""

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
from auditai.model import load_model
from auditai.onnx_graph import load_onnx_graph

RNG = np.random.default_rng(0)


# ------------------------------------------------------------------------------ helpers
def _ort(data: bytes, x: np.ndarray) -> np.ndarray:
    s = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    batch = s.get_inputs()[0].shape[0]
    xs = x.astype(np.float32)
    if batch == 1 or len(s.get_inputs()[0].shape) < len(xs.shape):  # a fixed batch of one: row by row
        return np.stack([s.run(None, {name: xi.reshape(s.get_inputs()[0].shape)})[0] for xi in xs])
    return s.run(None, {name: xs})[0]


def check(data: bytes, in_shape, scale=1.0, width=0.05, samples=64):
    """Agreement with onnxruntime, then bounds of both methods containing sampled outputs."""
    gm = load_onnx_graph(data)
    assert tuple(gm.graph.in_shape) == tuple(in_shape)
    x = RNG.standard_normal((6, *in_shape)) * scale
    want = _ort(data, x).reshape(6, -1)
    with torch.no_grad():
        got = gm(torch.from_numpy(x).float()).reshape(6, -1).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5 * max(1.0, np.abs(want).max()))
    c = x[:2]
    lo, hi = c - width, c + width
    pts = lo[:, None] + (hi - lo)[:, None] * RNG.uniform(size=(2, samples, *in_shape))
    pts[:, 0], pts[:, 1] = lo, hi  # two vertices
    outs = _ort(data, pts.reshape(-1, *in_shape)).reshape(2, samples, -1)
    for method in ("ibp", "crown-ibp", "crown"):
        l, u = bound_box(gm, torch.from_numpy(lo).float(), torch.from_numpy(hi).float(), method=method)
        tol = 1e-4 * (1 + np.abs(outs).max())
        assert (outs >= l.numpy()[:, None] - tol).all() and (outs <= u.numpy()[:, None] + tol).all(), method
        assert torch.isfinite(u - l).all()
    return gm


def export(module: nn.Module, in_shape, opset: int) -> bytes:
    b = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), torch.randn(1, *in_shape), b, opset_version=opset, dynamo=False,
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    return b.getvalue()


def _stats(m: nn.Module) -> nn.Module:
    torch.manual_seed(1)
    for mod in m.modules():
        if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
            mod.running_mean.uniform_(-1, 1)
            mod.running_var.uniform_(0.5, 2)
    return m.eval()


# ------------------------------------------------------------------------------ torch exports
class ResMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c, self.out = nn.Linear(6, 8), nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(16, 3)

    def forward(self, x):
        h = torch.relu(self.a(x))
        r = h + torch.relu(self.b(h))
        return self.out(torch.cat([r, torch.tanh(self.c(r)) - h], dim=1))


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1, self.bn = nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.c2, self.fc = nn.Conv2d(4, 4, 3), nn.Linear(16, 3)

    def forward(self, x):
        x = nn.functional.pad(x, (1, 0, 1, 0))
        x = nn.functional.max_pool2d(self.bn(torch.relu(self.c1(x))), 2)  # BN after ReLU: not fused into the conv
        x = nn.functional.avg_pool2d(torch.relu(self.c2(x)), 2, stride=1)
        return self.fc(torch.flatten(x, 1))


class Generator(nn.Module):
    def __init__(self, last: str = "tanh") -> None:
        super().__init__()
        self.fc = nn.Linear(4, 8 * 2 * 2)
        self.ct = nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.conv = nn.Conv2d(4, 1, 3, padding=1)
        self.last = torch.tanh if last == "tanh" else torch.sigmoid

    def forward(self, z):
        x = self.fc(z).view(-1, 8, 2, 2)
        x = torch.relu(self.bn(self.ct(x)))
        return self.last(self.conv(self.up(x)))


class Classifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 3, 3, stride=2), nn.Linear(27, 4)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).reshape(x.shape[0], -1))


@pytest.mark.parametrize("opset", [9, 11, 13, 17])
@pytest.mark.parametrize("kind", ["residual", "conv", "generator"])
def test_torch_exports(kind, opset):
    torch.manual_seed(0)
    net, shape = {"residual": (ResMLP, (6,)), "conv": (ConvNet, (2, 10, 10)),
                  "generator": (lambda: Generator("tanh" if opset % 2 else "sigmoid"), (4,))}[kind]
    gm = check(export(_stats(net()), shape, opset), shape)
    ops = {n.op for n in gm.graph.nodes}
    want = {"residual": {"add", "cat", "sub"}, "conv": {"pad", "maxpool", "avgpool", "scale_shift"},
            "generator": {"conv_transpose", "upsample", "scale_shift"}}[kind]
    assert want <= ops


def test_generator_into_classifier():
    torch.manual_seed(2)
    net = _stats(nn.Sequential(Generator(), Classifier()))
    check(export(net, (4,), 13), (4,), width=0.1)


# ------------------------------------------------------------------------------ public shapes
def _c(name, arr, dtype=np.float32):
    return numpy_helper.from_array(np.asarray(arr, dtype=dtype), name)


def _model(nodes, inits, in_shape, out_shape, opsets=(("", 13),), check_model=True, inputs_list_inits=False):
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)]
    if inputs_list_inits:  # old exporters list every initializer as a graph input too
        inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in inits]
    g = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
                          initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])
    m.ir_version = 8
    if check_model:
        onnx.checker.check_model(m)
    return m.SerializeToString()


@pytest.mark.parametrize("flatten", [False, True])
def test_acas_xu_shape(flatten):
    """[1,1,1,5] input, per-feature Sub/Div by [1,1,5] constants, 6 hidden MatMul+Add+Relu of 50, 5 out."""
    nodes = [helper.make_node("Sub", ["x", "mean"], ["s"], name="sub"),
             helper.make_node("Div", ["s", "std"], ["h0"], name="div")]
    inits = [_c("mean", RNG.standard_normal((1, 1, 5))), _c("std", RNG.uniform(0.5, 2, (1, 1, 5)))]
    cur = "h0"
    if flatten:
        nodes.append(helper.make_node("Flatten", [cur], ["f"], name="flat"))
        cur = "f"
    sizes = [5] + [50] * 6 + [5]
    for i in range(7):
        inits += [_c(f"W{i}", RNG.standard_normal((sizes[i], sizes[i + 1])) / np.sqrt(sizes[i])),
                  _c(f"b{i}", RNG.standard_normal(sizes[i + 1]) * 0.1)]
        nodes += [helper.make_node("MatMul", [cur, f"W{i}"], [f"m{i}"], name=f"matmul_{i}"),
                  helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}" if i < 6 else "y"], name=f"add_{i}")]
        if i < 6:
            nodes.append(helper.make_node("Relu", [f"a{i}"], [f"r{i}"], name=f"relu_{i}"))
            cur = f"r{i}"
    data = _model(nodes, inits, [1, 1, 1, 5], [1, 5] if flatten else [1, 1, 1, 5])
    gm = check(data, (1, 1, 5), width=0.02)
    assert sum(n.op == "linear" for n in gm.graph.nodes) == 7 and not any(n.op == "add_const" and i > 3 for i, n in
                                                                           enumerate(gm.graph.nodes))
    m = load_model(_write(data, "acas.onnx"))  # the latent size d = 5 comes from the declared input
    assert m.latent_dim == 5 and m.num_outputs == 5
    # as a head on flat codes the normalisation folds into the first Linear: a plain chain
    assert [n.op for n in m.head.graph.nodes] == ["input"] + ["linear", "relu"] * 6 + ["linear"]
    z = RNG.standard_normal((9, 5))
    with torch.no_grad():
        got = m.head(torch.from_numpy(z).float()).numpy()
    np.testing.assert_allclose(got, _ort(data, z.reshape(9, 1, 1, 5)).reshape(9, 5), rtol=1e-4, atol=1e-5)


_TMP = {}


def _write(data: bytes, name: str):
    import tempfile
    from pathlib import Path

    d = _TMP.setdefault("d", Path(tempfile.mkdtemp()))
    p = d / name
    p.write_bytes(data)
    return p


def _eran_fc(in_shape):
    nodes = [helper.make_node("Sub", ["x", "mean"], ["s"], name="sub_0"),
             helper.make_node("Div", ["s", "std"], ["n"], name="div_0"),
             helper.make_node("Flatten", ["n"], ["f"], name="flatten_0")]
    inits = [_c("mean", [0.1307]), _c("std", [0.3081])]
    sizes, cur = [784, 30, 30, 10], "f"
    for i in range(3):
        inits += [_c(f"W{i}", RNG.standard_normal((sizes[i + 1], sizes[i])) / np.sqrt(sizes[i])),
                  _c(f"b{i}", RNG.standard_normal(sizes[i + 1]) * 0.1)]
        out = "y" if i == 2 else f"g{i}"
        nodes.append(helper.make_node("Gemm", [cur, f"W{i}", f"b{i}"], [out], name=f"gemm_{i}", transB=1))
        if i < 2:
            nodes.append(helper.make_node("Relu", [out], [f"r{i}"], name=f"relu_{i}"))
            cur = f"r{i}"
    return _model(nodes, inits, in_shape, [1, 10])


@pytest.mark.parametrize("in_shape", [[1, 1, 28, 28], [1, 784]])
def test_eran_mnist_fc_shape(in_shape):
    data = _eran_fc(in_shape)
    check(data, tuple(in_shape[1:]), scale=0.3, width=0.01)
    m = load_model(_write(data, "eran_fc.onnx"))
    assert m.latent_dim == 784 and m.num_outputs == 10
    assert [n.op for n in m.head.graph.nodes] == ["input"] + ["linear", "relu"] * 2 + ["linear"]


def test_eran_conv_shape():
    """Sub/Div, Conv + Relu, Transpose to NHWC, Reshape to [1, -1] (a fixed batch of 1), Gemm + Relu, Gemm."""
    nodes = [helper.make_node("Sub", ["x", "mean"], ["s"], name="sub"),
             helper.make_node("Div", ["s", "std"], ["n"], name="div"),
             helper.make_node("Conv", ["n", "Wc", "bc"], ["c"], name="conv", kernel_shape=[4, 4], strides=[2, 2],
                              pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Transpose", ["r"], ["t"], name="nhwc", perm=[0, 2, 3, 1]),
             helper.make_node("Reshape", ["t", "shape"], ["f"], name="reshape"),
             helper.make_node("Gemm", ["f", "W1", "b1"], ["g"], name="fc1", transB=1),
             helper.make_node("Relu", ["g"], ["h"], name="relu1"),
             helper.make_node("Gemm", ["h", "W2", "b2"], ["y"], name="fc2", transB=1)]
    inits = [_c("mean", [0.1307]), _c("std", [0.3081]), _c("Wc", RNG.standard_normal((4, 1, 4, 4)) * 0.3),
             _c("bc", RNG.standard_normal(4) * 0.1), _c("shape", [1, -1], np.int64),
             _c("W1", RNG.standard_normal((20, 4 * 7 * 7)) * 0.1), _c("b1", RNG.standard_normal(20) * 0.1),
             _c("W2", RNG.standard_normal((10, 20)) * 0.3), _c("b2", RNG.standard_normal(10) * 0.1)]
    data = _model(nodes, inits, [1, 1, 14, 14], [1, 10])
    check(data, (1, 14, 14), scale=0.3, width=0.01)


def test_batchnorm_epsilon_duplicate_opsets_and_inputs_listing_initializers():
    """BatchNormalization with epsilon 1e-3 (variances near it, so 1e-5 would be wrong); the model
    lists opset 11 twice and its initializers as graph inputs, as old exporters do."""
    nodes = [helper.make_node("Gemm", ["x", "W", "b"], ["a"], name="fc", transB=1),
             helper.make_node("Unsqueeze", ["a"], ["u"], name="unsq", axes=[2]),
             helper.make_node("BatchNormalization", ["u", "s", "bb", "m", "v"], ["bn"], name="bn", epsilon=1e-3),
             helper.make_node("Squeeze", ["bn"], ["q"], name="sq", axes=[2]),
             helper.make_node("Clip", ["q"], ["y"], name="clip", min=-0.5, max=0.8)]
    inits = [_c("W", RNG.standard_normal((4, 3))), _c("b", RNG.standard_normal(4)), _c("s", RNG.standard_normal(4)),
             _c("bb", RNG.standard_normal(4)), _c("m", RNG.standard_normal(4) * 0.1), _c("v", RNG.uniform(1e-4, 2e-3, 4))]
    plain = _model(nodes, inits, ["N", 3], ["N", 4], opsets=(("", 10),))
    dup = _model(nodes, inits, ["N", 3], ["N", 4], opsets=(("", 10), ("", 10)), check_model=False,
                 inputs_list_inits=True)
    gm = load_onnx_graph(dup)
    x = RNG.standard_normal((50, 3)) * 0.02
    with torch.no_grad():
        got = gm(torch.from_numpy(x).float()).numpy()
    np.testing.assert_allclose(got, _ort(plain, x), rtol=1e-4, atol=1e-4)
    check(plain, (3,), scale=0.02, width=0.005)


def test_opset_variants_of_slice_split_gather_pad_resize():
    """Slice/Split/Gather by constants, Pad with a value, ReduceMean, bilinear Resize, LeakyRelu, Elu,
    Softplus, Max/Min with constants."""
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="conv", kernel_shape=[1, 1]),
             helper.make_node("Split", ["c", "split"], ["p", "q"], name="split", axis=1),
             helper.make_node("LeakyRelu", ["p"], ["p1"], name="lrelu", alpha=0.1),
             helper.make_node("Elu", ["q"], ["q1"], name="elu"),
             helper.make_node("Concat", ["q1", "p1"], ["cat"], name="cat", axis=1),
             helper.make_node("Slice", ["cat", "st", "en", "ax"], ["sl"], name="slice"),
             helper.make_node("Pad", ["sl", "pads", "pv"], ["pd"], name="pad", mode="constant"),
             helper.make_node("Resize", ["pd", "", "scales"], ["rs"], name="resize", mode="linear"),
             helper.make_node("Gather", ["rs", "idx"], ["ga"], name="gather", axis=1),
             helper.make_node("ReduceMean", ["ga"], ["rm"], name="mean", axes=[3], keepdims=0),
             helper.make_node("Softplus", ["rm"], ["sp0"], name="softplus"),
             helper.make_node("Max", ["lo", "sp0"], ["mx"], name="max"),
             helper.make_node("Min", ["mx", "hi"], ["sp"], name="min"),
             helper.make_node("Flatten", ["sp"], ["y"], name="flat")]
    inits = [_c("W", RNG.standard_normal((4, 2, 1, 1))), _c("split", [1, 3], np.int64),
             _c("st", [1, 0], np.int64), _c("en", [4, -1], np.int64), _c("ax", [1, 2], np.int64),
             _c("pads", [0, 0, 1, 0, 0, 0, 0, 2], np.int64), _c("pv", 0.5), _c("scales", [1, 1, 2, 2]),
             _c("idx", [2, 0], np.int64), _c("lo", 0.4), _c("hi", [[[2.0]]])]
    data = _model(nodes, inits, ["N", 2, 4, 3], ["N", 2 * 8], opsets=(("", 17),), check_model=False)
    check(data, (2, 4, 3))


def test_every_unsupported_node_is_named():
    nodes = [helper.make_node("Gemm", ["x", "W"], ["a"], name="fc", transB=1),
             helper.make_node("Erf", ["a"], ["e"], name="my_erf"),
             helper.make_node("Mul", ["a", "a"], ["sq"], name="square"),
             helper.make_node("Add", ["e", "sq"], ["y"], name="join")]
    data = _model(nodes, [_c("W", RNG.standard_normal((3, 4)))], ["N", 4], ["N", 3])
    with pytest.raises(UnsupportedLayerError) as e:
        load_onnx_graph(data)
    msg = str(e.value)
    assert "'my_erf' (Erf)" in msg and "'square' (Mul)" in msg and "2 node(s)" in msg and "join" not in msg


def test_verify_command_on_onnx_head(tmp_path, capsys):
    """`auditai verify --model net.onnx`: d read from the graph's [1,1,1,5] input; ε = 0 gives the clean error."""
    import json

    from auditai.cli import main

    nodes = [helper.make_node("Sub", ["x", "mean"], ["s"], name="sub"),
             helper.make_node("Flatten", ["s"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "W1", "b1"], ["h"], name="fc1", transB=1),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Gemm", ["r", "W2"], ["y"], name="fc2", transB=1)]
    inits = [_c("mean", RNG.standard_normal((1, 1, 5))), _c("W1", RNG.standard_normal((16, 5))),
             _c("b1", RNG.standard_normal(16)), _c("W2", RNG.standard_normal((3, 16)))]
    data = _model(nodes, inits, [1, 1, 1, 5], [1, 3])
    (tmp_path / "net.onnx").write_bytes(data)
    z = RNG.standard_normal((40, 5)).astype(np.float32)
    y = RNG.integers(0, 3, 40)
    np.savez(tmp_path / "d.npz", z=z, y=y)
    clean_error = float((_ort(data, z.reshape(40, 1, 1, 5)).reshape(40, 3).argmax(1) != y).mean())
    (tmp_path / "s.yaml").write_text(
        "suite: onnx\nmodel: net.onnx\ndata: d.npz\nspec: label\nmethod: crown-ibp\nunit_tests:\n"
        "  - name: first_two\n    dims: [0, 1]\n    eps: [0.0, 0.5]\n")
    rc = main(["verify", str(tmp_path / "s.yaml"), "--device", "cpu", "--report", str(tmp_path / "r.json")])
    assert rc == 0, capsys.readouterr()
    text = (tmp_path / "r.json").read_text()
    sheet = json.loads(text)
    assert "first_two" in text and "net.onnx" in text
    errs = _verified_errors(sheet)
    assert abs(errs[0.0] - clean_error) < 1e-9 and errs[0.5] >= errs[0.0]
    # the same unit test by options, the model given on the command line
    rc = main(["verify", "--model", str(tmp_path / "net.onnx"), "--data", str(tmp_path / "d.npz"), "--device", "cpu",
               "--dims", "0,1", "--eps", "0.0", "0.5", "--report", str(tmp_path / "r2.json")])
    assert rc == 0, capsys.readouterr()
    assert _verified_errors(json.loads((tmp_path / "r2.json").read_text())) == errs


def _verified_errors(obj) -> dict:
    """{eps: verified error} from a spec-sheet's rows, wherever they sit."""
    found = {}

    def walk(o):
        if isinstance(o, dict):
            if "eps" in o and "verified_error" in o and isinstance(o["eps"], (int, float)):
                found[float(o["eps"])] = float(o["verified_error"])
            for v in o.values():
                walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)

    walk(obj)
    return found


def test_linear_on_a_value_with_leading_axes_crown():
    """A Linear on (N, 2, 3, 5) (a MatMul of a rank-4 value): CROWN adds its bias at every position."""
    torch.manual_seed(4)
    net = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 2)).eval()
    lo = torch.randn(3, 2, 3, 5)
    hi = lo + 0.3
    pts = lo + (hi - lo) * torch.rand(200, 3, 2, 3, 5)
    with torch.no_grad():
        outs = net(pts.reshape(-1, 2, 3, 5)).reshape(200, 3, -1)
    for method in ("crown-ibp", "crown"):
        l, u = bound_box(net, lo, hi, method=method)
        assert (outs >= l - 1e-5).all() and (outs <= u + 1e-5).all(), method


@pytest.mark.parametrize("opset", [11, 17])
def test_gelu_erf_pattern(opset):
    """torch exports GELU as x·½·(1 + erf(x/√2)) below opset 20: read as one gelu node."""
    torch.manual_seed(5)
    net = nn.Sequential(nn.Linear(4, 6), nn.GELU(), nn.Linear(6, 3))
    gm = check(export(net, (4,), opset), (4,), width=0.2)
    assert [n.op for n in gm.graph.nodes].count("gelu") == 1 and "mul_const" not in {n.op for n in gm.graph.nodes}


# ------------------------------------------------------------------------------ export of graph heads
def _heads():
    from auditai.onnx_io import load_onnx_head

    torch.manual_seed(6)
    yield "traced residual module", _stats(ResMLP()), 6
    yield "onnx residual", load_onnx_head(export(_stats(ResMLP()), (6,), 13)), 6
    yield "onnx conv", load_onnx_head(export(_stats(ConvNet()), (2, 10, 10), 17)), 200
    yield "onnx generator∘classifier", load_onnx_head(export(_stats(nn.Sequential(Generator(), Classifier())),
                                                             (4,), 11)), 4
    yield "onnx gelu", load_onnx_head(export(nn.Sequential(nn.Linear(4, 6), nn.GELU(), nn.Linear(6, 3)), (4,), 13)), 4


def test_graph_heads_export_to_vnnlib_networks(tmp_path):
    """export_vnnlib of graph heads: onnxruntime on δ equals the head at z0 + B·δ."""
    from auditai.latent import Basis
    from auditai.onnx_io import export_vnnlib

    for i, (what, head, d) in enumerate(_heads()):
        z0 = torch.randn(2, d)
        kind = Basis(torch.randn(d, 3), "inf", "plane")
        files = export_vnnlib(head, z0, torch.tensor([0, 1]), kind, 0.3, tmp_path / str(i))
        latent = kind.make(z0.double(), 0.3)
        for s, (net, _) in enumerate(files):
            sess = ort.InferenceSession(str(net), providers=["CPUExecutionProvider"])
            delta = (torch.rand(8, 3, dtype=torch.float64) * 2 - 1) * 0.3
            got = np.concatenate([sess.run(None, {"delta": dl[None].float().numpy()})[0] for dl in delta])
            with torch.no_grad():
                want = head((latent.z0[s] + delta @ latent.basis.T).float()).numpy()
            np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4, err_msg=what)


def test_input_without_a_batch_axis():
    """A graph whose input is [5] (no batch axis, as some competition files declare it)."""
    nodes = [helper.make_node("MatMul", ["x", "W0"], ["m"], name="fc0"),
             helper.make_node("Add", ["m", "b0"], ["a"], name="bias0"),
             helper.make_node("Relu", ["a"], ["r"], name="relu0"),
             helper.make_node("MatMul", ["r", "W1"], ["y"], name="fc1")]
    inits = [_c("W0", RNG.standard_normal((5, 7))), _c("b0", RNG.standard_normal(7)), _c("W1", RNG.standard_normal((7, 2)))]
    gm = check(_model(nodes, inits, [5], [2]), (5,), width=0.1)
    assert [n.op for n in gm.graph.nodes] == ["input", "linear", "relu", "linear"]


def test_a_fixed_batch_of_several_is_read_per_sample():
    """An input declared [2000, 5] (a fixed batch) is 5 features per sample."""
    nodes = [helper.make_node("Gemm", ["x", "W", "b"], ["h"], name="fc", transB=1),
             helper.make_node("Relu", ["h"], ["y"], name="relu")]
    inits = [_c("W", RNG.standard_normal((3, 5))), _c("b", RNG.standard_normal(3))]
    data = _model(nodes, inits, [2000, 5], [2000, 3])
    gm = load_onnx_graph(data)
    assert gm.graph.in_shape == (5,)
    x = RNG.standard_normal((2000, 5)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(gm(torch.from_numpy(x)).numpy(), _ort(data, x), rtol=1e-5, atol=1e-5)


def test_the_reader_does_not_import_the_model_file_loader():
    """The reading layer points one way: auditai.model imports the ONNX reader, never the reverse."""
    import subprocess
    import sys

    code = ("import sys, auditai.onnx_io, auditai.onnx_graph, auditai.onnx_passes, auditai.onnx_export_graph; "
            "print('auditai.model' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_broadcast_branches_expand_and_concat_with_a_constant():
    """Add of a [1,C,1,1] branch (global pooling) to a [1,C,H,W] one, Expand, Concat with a constant."""
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["c"], ["g"], name="gap"),
             helper.make_node("Add", ["c", "g"], ["s"], name="se_add"),
             helper.make_node("Expand", ["g", "eshape"], ["e"], name="expand"),
             helper.make_node("Sub", ["s", "e"], ["d"], name="sub"),
             helper.make_node("Concat", ["d", "k"], ["cat"], name="cat_const", axis=1),
             helper.make_node("Relu", ["cat"], ["r"], name="relu"),
             helper.make_node("Flatten", ["r"], ["y"], name="flat")]
    inits = [_c("W", RNG.standard_normal((3, 2, 3, 3))), _c("eshape", [1, 3, 4, 4], np.int64),
             _c("k", RNG.standard_normal((1, 1, 4, 4)))]
    gm = check(_model(nodes, inits, [1, 2, 4, 4], [1, 64]), (2, 4, 4), width=0.2)
    assert {"add", "sub", "cat", "mean"} <= {n.op for n in gm.graph.nodes}
