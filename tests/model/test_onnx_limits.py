"""Untrusted ONNX files: a file that asks for a huge tensor is refused (ModelFileError naming the node
and the size) before anything of that size is allocated, and no tensor's data is read from a path
named by the file."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper

from auditai.errors import ModelFileError, UnsupportedLayerError
from auditai.model import load_model
from auditai.onnx_graph import load_onnx_graph
from auditai.onnx_io import load_onnx_head
from auditai.onnx_limits import MAX_ELEMENTS

HUGE = 2**20  # HUGE × HUGE float32 would be 4 TiB


def _i64(name, arr):
    return numpy_helper.from_array(np.asarray(arr, dtype=np.int64), name)


def _f32(name, arr):
    return numpy_helper.from_array(np.asarray(arr, dtype=np.float32), name)


def _model(nodes, inits, in_shape=(1, 4), out="y"):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
                          [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _refused(m, *words, **kw):
    """load_onnx_graph refuses m with a ModelFileError containing `words`, allocating < 64 MiB."""
    data = m.SerializeToString()
    tracemalloc.start()
    try:
        with pytest.raises(ModelFileError) as e:
            load_onnx_graph(data, **kw)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    msg = str(e.value)
    for w in words:
        assert w in msg, msg
    assert peak < 64 * 2**20, peak
    return msg


def _then_add(big: str):
    """y = x + ReduceSum(big): the output depends on the input and on the big constant."""
    return [helper.make_node("ReduceSum", [big], ["s"], name="sum", keepdims=0),
            helper.make_node("Add", ["x", "s"], ["y"], name="add")]


def test_constant_of_shape_with_a_huge_shape():
    m = _model([helper.make_node("ConstantOfShape", ["shape"], ["big"], name="cos")] + _then_add("big"),
               [_i64("shape", [HUGE, HUGE])])
    _refused(m, "node 'cos' (ConstantOfShape)", str(HUGE * HUGE), str(MAX_ELEMENTS))


def test_expand_and_tile_of_constants_with_huge_shapes():
    m = _model([helper.make_node("Expand", ["one", "shape"], ["big"], name="exp")] + _then_add("big"),
               [_f32("one", [1.0]), _i64("shape", [HUGE, HUGE])])
    _refused(m, "node 'exp' (Expand)", str(HUGE * HUGE))
    m = _model([helper.make_node("Tile", ["one", "reps"], ["big"], name="tile")] + _then_add("big"),
               [_f32("one", [[1.0, 2.0]]), _i64("reps", [HUGE, HUGE])])
    _refused(m, "node 'tile' (Tile)", str(2 * HUGE * HUGE))


def test_range_and_a_chain_of_folds_count_against_one_budget():
    m = _model([helper.make_node("Range", ["a", "b", "c"], ["big"], name="rng")] + _then_add("big"),
               [_f32("a", 0.0), _f32("b", 2.0**40), _f32("c", 1.0)])
    _refused(m, "node 'rng' (Range)", str(2**40))
    # each piece fits, together they do not: 3 × 400 elements over a budget of 1,000
    nodes = [helper.make_node("ConstantOfShape", ["shape"], [f"c{i}"], name=f"cos{i}") for i in range(3)]
    nodes += [helper.make_node("Sum", ["c0", "c1", "c2"], ["big"], name="sum3")] + _then_add("big")
    m = _model(nodes, [_i64("shape", [400])])
    _refused(m, "node 'cos2' (ConstantOfShape)", "1000", max_elements=1000)


def test_a_live_value_expanded_or_padded_to_a_huge_shape():
    m = _model([helper.make_node("Expand", ["x", "shape"], ["y"], name="live_exp")],
               [_i64("shape", [HUGE, HUGE, 4])])
    _refused(m, "live_exp", str(HUGE * HUGE * 4))
    m = _model([helper.make_node("Pad", ["x", "pads"], ["y"], name="live_pad")],
               [_i64("pads", [0, 2**40, 0, 2**40])])
    _refused(m, "live_pad", "pad")
    m = _model([helper.make_node("Reshape", ["x", "s"], ["x4"], name="r"),
                helper.make_node("Resize", ["x4", "", "", "sizes"], ["y"], name="live_resize")],
               [_i64("s", [1, 1, 2, 2]), _i64("sizes", [1, 1, HUGE, HUGE])])
    _refused(m, "live_resize", str(HUGE * HUGE))
    m = _model([helper.make_node("Reshape", ["x", "s"], ["x4"], name="r"),
                helper.make_node("ConvTranspose", ["x4", "w"], ["y"], name="live_convt", strides=[HUGE, HUGE])],
               [_i64("s", [1, 1, 2, 2]), _f32("w", np.ones((1, 1, 2, 2)))])
    _refused(m, "live_convt", "conv_transpose")


def test_a_sparse_constant_declaring_a_huge_dense_shape():
    values = _f32("v", [1.0])
    sparse = helper.make_sparse_tensor(values, _i64("i", [[0, 0]]), [HUGE, HUGE])
    m = _model([helper.make_node("Constant", [], ["big"], name="sparse_const", sparse_value=sparse)]
               + _then_add("big"), [])
    _refused(m, "node 'sparse_const' (Constant)", str(HUGE * HUGE))


def test_an_initializer_or_an_input_declaring_a_huge_shape():
    t = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[HUGE, HUGE])  # no data at all
    m = _model([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], [t])
    _refused(m, "initializer 'w'", str(HUGE * HUGE))
    m = _model([helper.make_node("Relu", ["x"], ["y"], name="relu")], [], in_shape=("N", HUGE, HUGE))
    _refused(m, "input 'x'", str(HUGE * HUGE))


def test_max_elements_is_the_documented_keyword():
    w = np.arange(4 * 300, dtype=np.float32).reshape(4, 300) / 1000
    m = _model([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], [_f32("w", w)])
    _refused(m, "initializer 'w'", "1200", "max_elements", max_elements=1000)
    gm = load_onnx_graph(m.SerializeToString(), max_elements=1200)
    x = torch.randn(3, 4)
    torch.testing.assert_close(gm(x).double(), x.double() @ torch.from_numpy(w).double(), rtol=1e-5, atol=1e-5)
    with pytest.raises(ModelFileError, match="initializer 'w'"):
        load_onnx_head(m.SerializeToString(), max_elements=1000)
    assert load_onnx_head(m.SerializeToString())(x).shape == (3, 300)  # the default allows it


def test_the_readers_are_exported_from_the_package_with_the_keyword():
    import auditai

    assert auditai.load_onnx_graph is load_onnx_graph and auditai.load_onnx_head is load_onnx_head
    m = _model([helper.make_node("ConstantOfShape", ["shape"], ["c"], name="cos")] + _then_add("c"),
               [_i64("shape", [300])])
    with pytest.raises(ModelFileError, match="cos"):
        auditai.load_onnx_graph(m.SerializeToString(), max_elements=200)
    x = torch.randn(2, 4)
    torch.testing.assert_close(auditai.load_onnx_graph(m.SerializeToString(), max_elements=400)(x), x)  # + 0


def test_load_model_refuses_a_huge_file(tmp_path):
    m = _model([helper.make_node("ConstantOfShape", ["shape"], ["big"], name="cos")] + _then_add("big"),
               [_i64("shape", [HUGE, HUGE])])
    p = tmp_path / "big.onnx"
    p.write_bytes(m.SerializeToString())
    with pytest.raises(ModelFileError, match="cos"):
        load_model(str(p))


def test_a_fold_without_a_size_rule_is_refused_by_name():
    m = _model([helper.make_node("Einsum", ["a", "b"], ["big"], name="ein", equation="i,j->ij")] + _then_add("big"),
               [_f32("a", np.ones(3)), _f32("b", np.ones(3))])
    with pytest.raises(UnsupportedLayerError, match=r"node 'ein' \(Einsum\).*size"):
        load_onnx_graph(m.SerializeToString())


def _external(name: str, location: str) -> TensorProto:
    t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=[4])
    t.data_location = TensorProto.EXTERNAL
    e = t.external_data.add()
    e.key, e.value = "location", location
    return t


@pytest.mark.parametrize("where", ["initializer", "constant", "constant_of_shape"])
def test_external_data_is_refused_and_never_read(tmp_path, monkeypatch, where):
    target = tmp_path / "secret.bin"
    target.write_bytes(np.arange(4, dtype=np.float32).tobytes())
    monkeypatch.chdir(tmp_path)  # a relative location would resolve here
    if where == "initializer":
        m = _model([helper.make_node("Add", ["x", "w"], ["y"], name="add")], [_external("w", "secret.bin")])
    elif where == "constant":
        m = _model([helper.make_node("Constant", [], ["w"], name="const", value=_external("v", "secret.bin")),
                    helper.make_node("Add", ["x", "w"], ["y"], name="add")], [])
    else:
        m = _model([helper.make_node("ConstantOfShape", ["shape"], ["w"], name="cos",
                                     value=_external("v", "secret.bin")),
                    helper.make_node("Add", ["x", "w"], ["y"], name="add")], [_i64("shape", [4])])
    reads = []
    real_open = open

    def spy(path, *a, **k):
        reads.append(str(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr("builtins.open", spy)
    msg = _refused(m, "external data")
    assert not any("secret" in r for r in reads), reads
    assert "'w'" in msg or "'v'" in msg


_A = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
FOLDS = [  # (op, inputs, attributes, number of outputs)
    ("Reshape", [_A, np.array([4, 6])], {}, 1),
    ("Shape", [_A], {}, 1),
    ("ReduceSum", [_A, np.array([1])], {"keepdims": 0}, 1),
    ("ReduceMean", [_A], {"axes": [0, 2]}, 1),
    ("Split", [_A, np.array([1, 2])], {"axis": 1}, 2),
    ("Concat", [_A, _A], {"axis": 0}, 1),
    ("Gather", [_A, np.array([[0, 1], [1, 0]])], {"axis": 2}, 1),
    ("MatMul", [np.ones((5, 1, 2, 3), np.float32), np.ones((4, 3, 6), np.float32)], {}, 1),
    ("Tile", [_A, np.array([2, 1, 3])], {}, 1),
    ("Expand", [np.ones((3, 1), np.float32), np.array([2, 1, 5])], {}, 1),
    ("Range", [np.array(1.0, np.float32), np.array(9.5, np.float32), np.array(2.0, np.float32)], {}, 1),
    ("Pad", [_A, np.array([0, 1, 2, 1, 0, 3])], {}, 1),
    ("OneHot", [np.array([0, 2, 1]), np.array(4), np.array([0.0, 1.0], np.float32)], {}, 1),
    ("NonZero", [_A], {}, 1),
    ("Where", [np.array([[True], [False], [True]]), _A[0], np.float32(0)], {}, 1),
    ("TopK", [_A, np.array([2])], {}, 2),
    ("Gemm", [np.ones((3, 5), np.float32), np.ones((4, 5), np.float32)], {"transB": 1}, 1),
]


@pytest.mark.parametrize("op,ins,at,n_out", FOLDS, ids=[f[0] for f in FOLDS])
def test_predicted_fold_sizes_bound_the_real_ones(op, ins, at, n_out):
    """fold_elements never under-counts what the reference evaluator then makes."""
    from onnx.reference import ReferenceEvaluator

    from auditai.onnx_limits import fold_elements

    names = [f"i{k}" for k in range(len(ins))]
    outs = [f"o{k}" for k in range(n_out)]
    node = helper.make_node(op, names, outs, **at)
    vi = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(np.asarray(a).dtype), np.shape(a))
          for n, a in zip(names, ins)]
    m = helper.make_model(helper.make_graph([node], "f", vi, [helper.make_empty_tensor_value_info(o) for o in outs]),
                          opset_imports=[helper.make_opsetid("", 18)])
    real = sum(np.asarray(v).size for v in ReferenceEvaluator(m).run(None, dict(zip(names, map(np.asarray, ins)))))
    need = fold_elements(op, at, [np.asarray(a) for a in ins], n_out)
    assert need is not None and real <= need <= max(4 * real, 64), (need, real)
