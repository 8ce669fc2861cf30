"""`auditai train`: trains a head on a model's sets and saves a loadable model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from auditai.cli import main
from auditai.model import AuditModel, load_model, save_model

from .problems import clusters, mlp


@pytest.fixture()
def files(tmp_path):
    torch.manual_seed(0)
    enc = nn.Sequential(nn.Flatten(), nn.Linear(16, 10))
    m = AuditModel(mlp(), encoder=enc, directions={"tilt": (torch.linspace(-1, 1, 10), "a tilt")},
                   dims={"all": list(range(10))}, class_names=["a", "b", "c"], input_shape=(1, 4, 4))
    save_model(tmp_path / "m.auditai", m, example_input=torch.zeros(2, 1, 4, 4))
    z, y = clusters(300)
    np.savez(tmp_path / "d.npz", z=z.numpy(), y=y.numpy())
    return tmp_path


def test_cli_trains_and_saves_a_loadable_model(files, capsys):
    out = files / "trained.pt"
    rc = main(["train", "--model", str(files / "m.auditai"), "--data", str(files / "d.npz"),
               "--dims", "all", "--direction", "tilt", "--eps", "0.4", "--epochs", "8",
               "--lr", "5e-3", "--batch-size", "100", "--quiet", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "before" in text and "after" in text and str(out) in text
    old, new = load_model(files / "m.auditai"), load_model(out)
    assert new.encoder is not None and new.latent_dim == 10
    assert set(new.directions) == {"tilt"} and torch.equal(new.directions["tilt"], old.directions["tilt"])
    assert new.dims == old.dims and new.class_names == ["a", "b", "c"]
    assert not torch.equal(new.head[0].weight, old.head[0].weight)
    info = new.metadata["certified_training"]
    assert info["eps"] == 0.4 and set(info["verified_error_after"]) == {"all", "tilt"}
    assert info["verified_error_after"]["all"] < info["verified_error_before"]["all"] - 0.3
    x = torch.rand(3, 1, 4, 4)
    assert torch.allclose(new.encoder(x), old.encoder(x))


def test_cli_names_a_missing_direction(files, capsys):
    rc = main(["train", "--model", str(files / "m.auditai"), "--data", str(files / "d.npz"),
               "--direction", "pose", "--eps", "0.4", "--epochs", "2", "--out", str(files / "x.pt")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "'pose'" in err and "tilt" in err
    assert not (files / "x.pt").exists()
