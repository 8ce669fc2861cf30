"""AuditModel checks, the safe model file (round trip, versions, corruption) and model sources."""

from __future__ import annotations

import io
import json
import sys
import textwrap
import zipfile

import pytest
import torch
from torch import nn

from auditai.errors import ModelFileError, UnsupportedLayerError
from auditai.model import FORMAT_VERSION, SUPPORTED_HEAD_MODULES, AuditModel, load_model, save_model


def make_head(d: int = 4, m: int = 3) -> nn.Module:
    torch.manual_seed(0)
    head = nn.Sequential(
        nn.Linear(d, 8), nn.BatchNorm1d(8), nn.LeakyReLU(0.1),
        nn.Sequential(nn.Dropout(0.2), nn.Linear(8, 8), nn.Tanh(), nn.Identity()),
        nn.ReLU(), nn.Linear(8, 6), nn.Sigmoid(), nn.Linear(6, m),
    )
    bn = head[1]
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    return head.eval()


def make_model(with_parts: bool = True) -> AuditModel:
    head = make_head()
    enc = dec = None
    if with_parts:
        enc = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(32, 4))
        dec = nn.Sequential(nn.Linear(4, 36), nn.Sigmoid())
    return AuditModel(
        head, encoder=enc, decoder=dec,
        directions={"pose": (torch.randn(4), "head turns"), "plane": torch.randn(4, 2)},
        dims={"expr": [1, 2]}, class_names=["a", "b", "c"], metadata={"trained": "unit test", "acc": 0.9},
        input_shape=(1, 6, 6) if with_parts else None,
    )


# --------------------------------------------------------------------------- AuditModel checks
def test_model_sizes_and_attributes():
    m = make_model()
    assert (m.latent_dim, m.num_outputs, m.num_classes) == (4, 3, 3)
    assert m.direction_descriptions == {"pose": "head turns", "plane": ""}
    assert m.encode(torch.randn(5, 1, 6, 6), batch_size=2).shape == (5, 4)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"directions": {"pose": torch.randn(5)}}, ["pose", "(5,)", "d=4"]),
        ({"directions": {"pose": torch.zeros(4)}}, ["pose", "zero"]),
        ({"dims": {"expr": [1, 9]}}, ["expr", "[9]", "d=4"]),
        ({"class_names": ["a", "b"]}, ["class_names", "2 names", "3 output"]),
        ({"encoder": nn.Linear(10, 5), "input_shape": (10,)}, ["encoder", "size 5", "d=4"]),
        ({"decoder": nn.Linear(7, 3)}, ["decoder", "d=4"]),
    ],
)
def test_model_parts_that_do_not_fit(kwargs, words):
    with pytest.raises(ValueError) as e:
        AuditModel(make_head(), **kwargs)
    for w in words:
        assert w in str(e.value)


def test_construction_leaves_training_mode_and_bn_stats_alone():
    head = make_head().train()
    before = head[1].running_mean.clone()
    AuditModel(head)
    assert head.training and torch.equal(head[1].running_mean, before)


def test_supported_list_matches_the_bound_engine_when_it_exists():
    from auditai.bounds import ops

    assert set(SUPPORTED_HEAD_MODULES) == set(ops.SUPPORTED_MODULES)


# --------------------------------------------------------------------------- round trip
@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    m = make_model()
    p = tmp_path_factory.mktemp("m") / "model.pt"
    h = save_model(p, m)
    return m, p, h


def test_round_trip_is_bit_identical(saved):
    m, p, h = saved
    m2 = load_model(p)
    z = torch.randn(64, 4)
    assert torch.equal(m.head(z), m2.head(z))
    x = torch.randn(9, 1, 6, 6)
    m.encoder.eval()
    assert torch.equal(m.encoder(x), m2.encode(x))
    assert torch.equal(m.decoder(z), m2.decoder(z))
    assert m2.content_hash == h == m.content_hash and len(h) == 64
    assert m2.class_names == ["a", "b", "c"] and m2.dims == {"expr": [1, 2]}
    assert m2.metadata == {"trained": "unit test", "acc": 0.9}
    assert m2.direction_descriptions["pose"] == "head turns"
    assert torch.equal(m2.directions["plane"], m.directions["plane"])
    assert m2.source == str(p)


def test_round_trip_gives_identical_bounds(saved):
    from auditai import bounds

    from auditai.latent import LatentSet

    m, p, _ = saved
    m2 = load_model(p)
    ls = LatentSet.from_dims(torch.randn(8, 4), [0, 2], 0.3)
    lo1, up1 = bounds.bound(m.head, ls, method="crown-ibp")
    lo2, up2 = bounds.bound(m2.head, ls, method="crown-ibp")
    assert torch.equal(lo1, lo2) and torch.equal(up1, up2)


def test_save_is_deterministic_and_hash_tracks_content(tmp_path):
    m = make_model(with_parts=False)
    h1 = save_model(tmp_path / "a.auditai", m)
    h2 = save_model(tmp_path / "b.auditai", m)
    assert h1 == h2 and (tmp_path / "a.auditai").read_bytes() == (tmp_path / "b.auditai").read_bytes()
    with torch.no_grad():
        m.head[0].weight[0, 0] += 1e-3
    assert save_model(tmp_path / "c.auditai", m) != h1


def test_float64_head_keeps_its_dtype(tmp_path):
    head = nn.Sequential(nn.Linear(3, 2)).double()
    save_model(tmp_path / "h.pt", AuditModel(head))
    h2 = load_model(tmp_path / "h.pt").head
    z = torch.randn(5, 3, dtype=torch.float64)
    assert torch.equal(head(z), h2(z))


def test_unsupported_head_module_is_named_at_save(tmp_path):
    class Softmaxed(nn.Module):  # no bound rule: neither saved as a chain nor as a graph
        def forward(self, x):
            return torch.softmax(x, dim=1)

    head = nn.Sequential(nn.Linear(3, 4), nn.Sequential(nn.ReLU(), Softmaxed()), nn.Linear(4, 2))
    with pytest.raises(UnsupportedLayerError) as e:
        save_model(tmp_path / "x.pt", AuditModel(head))
    assert "Softmaxed" in str(e.value) and "head[1][1]" in str(e.value)
    assert not (tmp_path / "x.pt").exists()


def test_encoder_without_input_shape_cannot_be_saved(tmp_path):
    m = AuditModel(make_head(), encoder=nn.Linear(10, 4))
    with pytest.raises(ModelFileError, match="input shape"):
        save_model(tmp_path / "x.pt", m)
    save_model(tmp_path / "y.pt", m, example_input=torch.randn(2, 10))
    assert load_model(tmp_path / "y.pt").encode(torch.randn(3, 10)).shape == (3, 4)


# --------------------------------------------------------------------------- corrupt files
def _rewrite(src, dst, edit):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for n in zin.namelist():
            data = edit(n, zin.read(n))
            if data is not None:
                zout.writestr(n, data)


def test_truncated_file_is_named(saved, tmp_path):
    _, p, _ = saved
    data = p.read_bytes()
    for cut in (len(data) // 2, len(data) - 30, 10):
        bad = tmp_path / f"cut{cut}.pt"
        bad.write_bytes(data[:cut])
        with pytest.raises(ModelFileError) as e:
            load_model(bad)
        assert str(bad) in str(e.value) and ("truncated" in str(e.value) or "corrupt" in str(e.value))


def test_flipped_byte_is_detected(saved, tmp_path):
    _, p, _ = saved
    data = bytearray(p.read_bytes())
    # flip a byte inside the first member's compressed data (after its 30-byte local header)
    with zipfile.ZipFile(p) as zf:
        info = zf.infolist()[0]
    pos = info.header_offset + 30 + len(info.filename) + 5
    data[pos] ^= 0xFF
    bad = tmp_path / "flip.pt"
    bad.write_bytes(bytes(data))
    with pytest.raises(ModelFileError) as e:
        load_model(bad)
    assert str(bad) in str(e.value)


def test_empty_and_garbage_files(tmp_path):
    (tmp_path / "e.pt").write_bytes(b"")
    with pytest.raises(ModelFileError, match="empty"):
        load_model(tmp_path / "e.pt")
    (tmp_path / "g.pt").write_bytes(b"hello world, not a model")
    with pytest.raises(ModelFileError, match="not a model file"):
        load_model(tmp_path / "g.pt")
    with pytest.raises(ModelFileError, match="no such file"):
        load_model(tmp_path / "missing.pt")


def test_unknown_format_version_is_refused(saved, tmp_path):
    _, p, _ = saved

    def bump(n, b):
        if n == "auditai_model.json":
            man = json.loads(b)
            man["version"] = FORMAT_VERSION + 1
            return json.dumps(man).encode()
        return b

    _rewrite(p, tmp_path / "v.pt", bump)
    with pytest.raises(ModelFileError, match=rf"version {FORMAT_VERSION + 1}.*upgrade auditai"):
        load_model(tmp_path / "v.pt")


def test_missing_member_is_named(saved, tmp_path):
    _, p, _ = saved
    _rewrite(p, tmp_path / "m.pt", lambda n, b: None if n == "tensors.safetensors" else b)
    with pytest.raises(ModelFileError, match="tensors.safetensors"):
        load_model(tmp_path / "m.pt")


def test_unknown_layer_type_in_manifest_is_refused(saved, tmp_path):
    _, p, _ = saved

    def evil(n, b):
        if n == "auditai_model.json":
            man = json.loads(b)
            man["head"][0]["children"][0]["type"] = "os.system"
            return json.dumps(man).encode()
        return b

    _rewrite(p, tmp_path / "t.pt", evil)
    with pytest.raises(ModelFileError, match="unknown layer type 'os.system'"):
        load_model(tmp_path / "t.pt")


@pytest.mark.parametrize("field, value, words", [
    ("target", "torch.save", "torch.save"),
    ("target", "torch.os.system", "torch.os.system"),
    ("expr_str", "__import__('os').system('touch x')", "refusing the shape expression"),
])
def test_exported_program_with_dangerous_content_is_refused(saved, tmp_path, field, value, words):
    """torch.export programs name their ops and carry sympy expressions: both are checked."""
    _, p, _ = saved
    done = []

    def poison(obj):
        if isinstance(obj, dict):
            for k in obj:
                if k == field and isinstance(obj[k], str) and not done:
                    obj[k] = value
                    done.append(1)
                    return
                poison(obj[k])
        elif isinstance(obj, list):
            for o in obj:
                poison(o)

    def edit(n, b):
        if n == "encoder/program.json":
            prog = json.loads(b)
            poison(prog)
            return json.dumps(prog).encode()
        return b

    _rewrite(p, tmp_path / "p.pt", edit)
    assert done, f"no {field} in the exported program: the test would prove nothing"
    with pytest.raises(ModelFileError) as e:
        load_model(tmp_path / "p.pt")
    assert words in str(e.value)


# --------------------------------------------------------------------------- pickles
class _Touch:
    """Unpickling this object creates a file: proof that code from the file ran."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.path),))


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_malicious_pickle_is_refused_and_does_not_run(tmp_path, writer):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    if writer == "torch.save":
        torch.save({"head": _Touch(marker)}, evil)
    else:
        import pickle

        evil.write_bytes(pickle.dumps({"head": _Touch(marker)}, protocol=4))
    with pytest.raises(ModelFileError) as e:
        load_model(evil)
    msg = str(e.value)
    assert str(evil) in msg and "run arbitrary code" in msg
    assert "save_model" in msg and "--auditai-trust-pickle" in msg
    assert not marker.exists()
    # the same file does run code once trusted: the refusal above is what kept it from running
    with pytest.raises(ModelFileError):
        load_model(evil, trust_pickle=True)
    assert marker.exists()


def test_trusted_pickles_of_modules_and_dicts(tmp_path):
    head = make_head()
    torch.save(head, tmp_path / "head.pt")
    m = load_model(tmp_path / "head.pt", trust_pickle=True)
    z = torch.randn(4, 4)
    assert torch.equal(m.head(z), head(z)) and m.content_hash
    torch.save({"head": head, "class_names": ["a", "b", "c"]}, tmp_path / "d.pt")
    assert load_model(tmp_path / "d.pt", trust_pickle=True).class_names == ["a", "b", "c"]
    torch.save({"head": head, "colour": 1}, tmp_path / "bad.pt")
    with pytest.raises(ModelFileError, match="colour"):
        load_model(tmp_path / "bad.pt", trust_pickle=True)


# --------------------------------------------------------------------------- python sources
@pytest.fixture
def pymod(tmp_path, monkeypatch):
    (tmp_path / "auditai_testpkg_models.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn
        from auditai.model import AuditModel
        torch.manual_seed(1)
        MODEL = AuditModel(nn.Sequential(nn.Linear(3, 2)))
        def build():
            return AuditModel(nn.Sequential(nn.Linear(5, 2)))
        NOT_A_MODEL = 42
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "auditai_testpkg_models"
    sys.modules.pop("auditai_testpkg_models", None)


def test_python_sources(pymod):
    m = load_model(f"{pymod}:MODEL")
    assert m.latent_dim == 3 and m.source == f"{pymod}:MODEL" and len(m.content_hash) == 64
    assert load_model(f"{pymod}:build").latent_dim == 5
    with pytest.raises(ModelFileError, match="no attribute 'nope'"):
        load_model(f"{pymod}:nope")
    with pytest.raises(ModelFileError, match="int"):
        load_model(f"{pymod}:NOT_A_MODEL")
    with pytest.raises(ModelFileError, match="cannot import"):
        load_model("no_such_pkg_xyz.models:MODEL")


def test_hash_of_python_model_tracks_weights(pymod):
    m = load_model(f"{pymod}:MODEL")
    from auditai.model import model_content_hash

    h = model_content_hash(m)
    assert h == m.content_hash
    with torch.no_grad():
        m.head[0].bias += 1
    assert model_content_hash(m) != h


def test_zip_that_is_not_ours(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("readme.txt", "hi")
    (tmp_path / "z.pt").write_bytes(buf.getvalue())
    with pytest.raises(ModelFileError, match="not an auditai model file"):
        load_model(tmp_path / "z.pt")
