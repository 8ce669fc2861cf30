"""Certified training under torchrun: 2 DDP ranks, a rank SIGKILLed mid-epoch and the group
restarted from the last step checkpoint, give the head of one uninterrupted process."""

from __future__ import annotations

import copy

import pytest
import torch

from auditai.data import load_data
from auditai.distributed.train import TEST_KILL_STEP_ENV, fit_ddp
from auditai.latent import Dims, Direction
from auditai.model import load_model
from auditai.train import fit

from .conftest import torchrun

ARGS = ["--model", "model.auditai", "--data", "data.pt", "--direction", "pose", "--dims", "expression",
        "--eps", "0.3", "--epochs", "3", "--warmup", "1", "--batch-size", "15", "--lr", "0.05"]


def _sets(model):
    return {"pose": Direction(model.directions["pose"].reshape(-1), "pose"),
            "expression": Dims(model.dims["expression"], "inf")}


@pytest.mark.slow  # a torchrun launch
def test_two_ranks_restarted_equal_one_process(tiny_dir):
    # 48 samples, global batch 15: 4 steps per epoch, the last of 3 samples (split 2 + 1)
    p = torchrun(["train", *ARGS, "--out", "ddp.auditai", "--checkpoint", "ddp.ckpt", "--checkpoint-every", "2"],
                 tiny_dir, max_restarts=1, env={TEST_KILL_STEP_ENV: "1:7"})
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert "exitcode: -9" in p.stderr  # rank 1 was killed before step 7 …
    assert "resumed from ddp.ckpt at epoch 2, batch 3 (step 6)" in p.stdout  # … and step 6's checkpoint used
    model = load_model(tiny_dir / "model.auditai")
    data = load_data(tiny_dir / "data.pt", model)
    ref = copy.deepcopy(model.head)
    fit(ref, data.z, data.y, _sets(model), 0.3, 3, lr=0.05, batch_size=15, warmup=1, seed=0,
        eval_every=0, progress=False, log=None)
    ddp = load_model(tiny_dir / "ddp.auditai").head
    moved = max((a - b).abs().max().item() for a, b in zip(ref.parameters(), model.head.parameters()))
    assert moved > 0.05, "training should move the head (else equality proves nothing)"
    for a, b in zip(ref.state_dict().values(), ddp.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    state = torch.load(tiny_dir / "ddp.ckpt", weights_only=True)
    assert (state["epoch"], state["batch"], state["step"]) == (3, 0, 12)
    assert set(state) >= {"head", "optimizer", "rng", "schedule_t", "history"}


def test_one_process_fit_ddp_equals_fit_and_resumes(tmp_path, tiny_dir):
    """Without torchrun, fit_ddp is fit; a checkpoint written mid-run resumes to the same head."""
    model = load_model(tiny_dir / "model.auditai")
    data = load_data(tiny_dir / "data.pt", model)
    kw = {"lr": 0.05, "batch_size": 15, "warmup": 1, "seed": 0, "eval_every": 0, "log": None}
    ref = copy.deepcopy(model.head)
    fit(ref, data.z, data.y, _sets(model), 0.3, 3, progress=False, **kw)
    a = copy.deepcopy(model.head)
    fit_ddp(a, data.z, data.y, _sets(model), 0.3, 2, checkpoint=tmp_path / "c.pt", checkpoint_every=3, **kw)
    # continues epoch 3 from the epoch-2 checkpoint (warm-up 1 and ramp 1 for 2 and 3 epochs alike)
    b = copy.deepcopy(model.head)
    fit_ddp(b, data.z, data.y, _sets(model), 0.3, 3, checkpoint=tmp_path / "c.pt", resume=True, **kw)
    for x, y in zip(ref.state_dict().values(), b.state_dict().values()):
        torch.testing.assert_close(y, x, rtol=1e-6, atol=1e-7)
