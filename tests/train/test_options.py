"""FitOptions: one options dataclass for fit, fit_pixel and fit_ddp; keywords still work."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from auditai.distributed.train import fit_ddp
from auditai.latent import Dims
from auditai.train import FitOptions, fit, fit_pixel

from .problems import clusters, mlp

BOX = Dims(range(10))


def _same(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_options_and_keywords_train_the_same_head():
    torch.set_num_threads(1)
    z, y = clusters(120)
    kw = {"warmup": 1, "lr": 5e-3, "batch_size": 40, "seed": 3, "eval_limit": 50, "progress": False, "log": None}
    by_kw, by_opts, mixed = mlp(), mlp(), mlp()
    r1 = fit(by_kw, z, y, BOX, 0.3, epochs=3, **kw)
    r2 = fit(by_opts, z, y, BOX, 0.3, epochs=3, options=FitOptions(**kw))
    # a keyword on top of options wins over the options' value
    r3 = fit(mixed, z, y, BOX, 0.3, epochs=3, options=FitOptions(**{**kw, "lr": 1.0}), lr=5e-3)
    assert _same(by_kw, by_opts) and _same(by_kw, mixed)
    assert [h["loss"] for h in r1.history] == [h["loss"] for h in r2.history] == [h["loss"] for h in r3.history]
    assert not _same(by_kw, mlp())  # it did train


def test_fit_and_fit_ddp_share_the_set_up():
    """One process without torchrun: fit_ddp runs fit's algorithm, so the heads agree."""
    torch.set_num_threads(1)
    z, y = clusters(90)
    o = FitOptions(warmup=1, lr=5e-3, batch_size=30, seed=1, eval_limit=30, progress=False, log=None)
    a, b = mlp(), mlp()
    ra = fit(a, z, y, BOX, 0.3, epochs=2, options=o)
    rb = fit_ddp(b, z, y, BOX, 0.3, epochs=2, options=o, device="cpu")
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.allclose(p, q, atol=1e-5)
    assert ra.final["verified_error"].keys() == rb.final["verified_error"].keys()
    assert ra.final["verified_error"] == pytest.approx(rb.final["verified_error"], abs=1e-9)


def test_unknown_option_is_a_type_error_naming_it():
    z, y = clusters(30)
    with pytest.raises(TypeError, match="fit\\(\\) got an unexpected keyword argument 'learning_rate'"):
        fit(mlp(), z, y, BOX, 0.3, epochs=2, learning_rate=1e-3)
    with pytest.raises(TypeError, match="fit_pixel\\(\\) got an unexpected keyword argument 'reduction'"):
        fit_pixel(nn.Identity(), mlp(), z, y, 0.1, epochs=2, reduction="sum")
    with pytest.raises(TypeError, match="options must be a FitOptions"):
        fit(mlp(), z, y, BOX, 0.3, epochs=2, options={"lr": 1e-3})


def test_fit_pixel_keeps_its_own_defaults():
    assert FitOptions.build(None, {}, "fit_pixel", batch_size=128, eval_limit=500).batch_size == 128
    assert FitOptions().batch_size == 256 and FitOptions().eval_limit == 2000


def test_certified_training_refuses_alpha_crown():
    """α-CROWN's slopes are detached: a loss on its bounds would train nothing, so it is refused."""
    import torch
    from auditai.errors import InputError
    from auditai.latent import Dims
    from auditai.train_loss import certified_loss

    head = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    z, y = torch.randn(5, 3), torch.randint(0, 2, (5,))
    with pytest.raises(InputError, match="alpha-crown"):
        certified_loss(head, z, y, Dims([0]), 0.1, method="alpha-crown")
