"""Graph heads in the model file (issue 11, item 6): stored as the IR (JSON + safetensors), loaded
without running code from the file; chain files of format version 1 still load."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from auditai.bounds import bound
from auditai.bounds.graph import GraphModule
from auditai.errors import ModelFileError, UnsupportedLayerError
from auditai.latent import LatentSet
from auditai.model import AuditModel, load_model, save_model

DATA = Path(__file__).parent / "data"


class ResidualHead(nn.Module):
    """A head as people write them: custom forward, residual add, concat, slicing, functional calls."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(4, 8)
        self.block = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 8))
        self.out = nn.Linear(12, 3)

    def forward(self, z):
        h = F.relu(self.inp(z))
        h = h + self.block(h)
        return self.out(torch.cat([torch.tanh(h), z * 0.5 - 1.0], dim=1))


def _head() -> ResidualHead:
    torch.manual_seed(2)
    h = ResidualHead()
    h.block[1].running_mean.uniform_(-0.3, 0.3)
    h.block[1].running_var.uniform_(0.5, 2.0)
    return h.eval()


def test_a_graph_head_round_trips_and_bounds_the_same(tmp_path):
    head = _head()
    path = tmp_path / "m.auditai"
    digest = save_model(path, AuditModel(head, class_names=["a", "b", "c"]))
    back = load_model(path)
    assert isinstance(back.head, GraphModule) and back.content_hash == digest
    z = torch.randn(10, 4)
    assert torch.allclose(back.head(z), head(z), atol=1e-6)
    with zipfile.ZipFile(path) as zf:
        man = json.loads(zf.read("auditai_model.json"))
    assert man["version"] == 2 and man["head"] is None
    assert {n["op"] for n in man["head_graph"]["nodes"]} >= {"add", "cat", "linear", "relu", "tanh"}
    s = LatentSet.from_dims(z.double(), dims=[0, 3], eps=0.2)
    for method in ("ibp", "crown-ibp", "crown"):
        lo_a, up_a = bound(head.double(), s, method=method)
        lo_b, up_b = bound(back.head.double(), s, method=method)
        assert torch.allclose(lo_a, lo_b, atol=1e-9) and torch.allclose(up_a, up_b, atol=1e-9)


def test_saving_the_same_graph_head_twice_gives_the_same_bytes(tmp_path):
    save_model(tmp_path / "a", AuditModel(_head()))
    save_model(tmp_path / "b", AuditModel(_head()))
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()


def _rewrite(src: Path, dst: Path, edit) -> None:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            data = zin.read(name)
            if name == "auditai_model.json":
                man = json.loads(data)
                edit(man)
                data = json.dumps(man).encode()
            zout.writestr(name, data)


@pytest.mark.parametrize("edit, message", [
    (lambda m: m["head_graph"]["nodes"][2].update(op="eval"), "unknown op 'eval'"),
    (lambda m: m["head_graph"]["nodes"][1].update(inputs=[5]), "indices of earlier nodes"),
    (lambda m: m["head_graph"]["nodes"][1]["consts"].update(weight="nope"), "tensor 'nope' is missing"),
    (lambda m: m["head_graph"]["nodes"][1].update(shape=[99]), "the file says"),
    (lambda m: m["head_graph"]["nodes"][1].update(attrs={"x": {"__class__": "os.system"}}), "plain JSON"),
])
def test_a_tampered_graph_is_a_clear_error(tmp_path, edit, message):
    good = tmp_path / "good.auditai"
    save_model(good, AuditModel(_head()))
    bad = tmp_path / "bad.auditai"
    _rewrite(good, bad, edit)
    with pytest.raises(ModelFileError, match=message) as info:
        load_model(bad)
    assert "bad.auditai" in str(info.value)


def test_a_head_with_an_unsupported_op_is_refused_with_its_position(tmp_path):
    class Squared(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 3)

        def forward(self, z):
            y = self.lin(z)
            return y * y

    with pytest.raises(UnsupportedLayerError, match="two tensors that both depend on the input"):
        save_model(tmp_path / "m", AuditModel(Squared(), latent_dim=4))
    assert not (tmp_path / "m").exists()


def test_a_chain_file_of_format_version_1_still_loads():
    """tests/model/data/chain_head_v1.auditai was written by the chain-only format (version 1)."""
    ref = json.loads((DATA / "chain_head_v1.json").read_text())
    model = load_model(DATA / "chain_head_v1.auditai")
    assert isinstance(model.head, nn.Sequential)
    assert model.content_hash == ref["content_hash"]
    assert model.class_names == ["a", "b", "c"] and "pose" in model.directions
    z = torch.tensor(ref["codes"])
    assert torch.allclose(model.head(z), torch.tensor(ref["outputs"]), atol=1e-6)
