"""engine="auto_lirpa" verifies heads with layers our engine rejects (README: "hands other
graphs to auto_LiRPA"), without going through our layer conversion first; still sound."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from auditai.bounds.lirpa import auto_lirpa_available
from auditai.errors import UnsupportedLayerError
from auditai.latent import Direction
from auditai.verify import verify

_OK, _WHY = auto_lirpa_available()


class Square(nn.Module):
    """x ↦ x²: a module of the user's own, outside our layers; auto_LiRPA traces its graph."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * x


def _head(act: nn.Module) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    head = nn.Sequential(nn.Linear(4, 8), act, nn.Linear(8, 3)).double()
    z = torch.randn(24, 4, dtype=torch.float64)
    with torch.no_grad():
        y = head(z).argmax(1)
    return head, z, y


V = torch.tensor([0.8, 0.6, 0.0, 0.0], dtype=torch.float64)  # unit length: t·V, |t| ≤ ε
POSE = Direction(V)


def test_our_engine_names_the_layer_it_rejects():
    head, z, y = _head(Square())
    with pytest.raises(UnsupportedLayerError, match="Square at head"):
        verify(head, z, y, POSE, [0.1], engine="auditai", device="cpu")


@pytest.mark.auto_lirpa
@pytest.mark.skipif(not _OK, reason=f"auto_LiRPA is not there: {_WHY}")
def test_auto_lirpa_verifies_a_head_ours_rejects_soundly():
    head, z, y = _head(Square())
    r = verify(head, z, y, POSE, [0.05, 0.3, 1.0], engine="auto_lirpa", device="cpu")
    assert r.engine == "auto_lirpa"
    vf = [1 - e for e in r.verified_error]
    assert vf[0] > 0.5 and vf == sorted(vf, reverse=True)  # it verifies, less as ε grows
    assert r.certified_radius is not None and (r.certified_radius >= 0).all()
    for i, eps in enumerate(r.eps):  # falsified ≤ true error ≤ verified error
        assert r.falsified_fraction[i] <= r.verified_error[i] + 1e-12
        ok = r.verdicts[:, i] == 1
        t = torch.linspace(-eps, eps, 201, dtype=torch.float64)
        zz = z[ok][:, None, :] + t[None, :, None] * V[None, None, :]
        with torch.no_grad():
            pred = head(zz.reshape(-1, 4)).argmax(1).reshape(int(ok.sum()), -1)
        assert (pred == y[ok][:, None]).all(), f"a 'verified' sample changes class at ε={eps}"


class Erf(nn.Module):
    """torch.erf: neither engine has a bound rule for it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.erf(x)


@pytest.mark.auto_lirpa
@pytest.mark.skipif(not _OK, reason=f"auto_LiRPA is not there: {_WHY}")
def test_an_op_neither_engine_bounds_is_an_error_naming_it():
    head, z, y = _head(Erf())
    with pytest.raises(UnsupportedLayerError, match=r"Erf at head.*auto_LiRPA cannot bound this head \(nor can ours\)"):
        verify(head, z, y, POSE, [0.1], engine="auto_lirpa", device="cpu")


@pytest.mark.auto_lirpa
@pytest.mark.skipif(not _OK, reason=f"auto_LiRPA is not there: {_WHY}")
def test_an_op_only_ours_bounds_is_an_error_with_auto_lirpa():
    head, z, y = _head(nn.ELU())
    verify(head, z, y, POSE, [0.1], engine="auditai", device="cpu", radius=False)  # ours bounds ELU
    with pytest.raises(UnsupportedLayerError, match=r"auto_LiRPA cannot bound this head \(engine auditai can\)"):
        verify(head, z, y, POSE, [0.1], engine="auto_lirpa", device="cpu")
