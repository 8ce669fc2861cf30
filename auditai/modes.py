"""Run a module in eval mode and put every submodule's mode back afterwards.

Shared by the model loader (`auditai.model`), GAN inversion (`auditai.inversion`) and the
deployment report; imports only torch, so those import it rather than each other.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _enter_eval(module: nn.Module) -> list[tuple[nn.Module, bool]]:
    """Put `module` in eval mode; returns the modes to restore (none for an exported program,
    whose graph is fixed and which refuses .train()/.eval())."""
    modes = [(m, m.training) for m in module.modules()]
    try:
        module.eval()
    except (NotImplementedError, RuntimeError):
        return []
    return modes


def _restore(modes: list[tuple[nn.Module, bool]]) -> None:
    for m, t in modes:
        m.train(t)


def _probe(module: nn.Module, x: Tensor) -> Tensor:
    """Run `module` once in eval mode without gradients, restoring every submodule's mode."""
    modes = _enter_eval(module)
    try:
        with torch.no_grad():
            return module(x)
    finally:
        _restore(modes)
