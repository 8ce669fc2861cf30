"""`auditai check --labels/--into/--max-recon-error`: the deployment report part of the command.

Kept apart from `check.py` (which reads the inputs and checks the ranges): this module turns
the checked codes, the labels and any GAN-inversion results into the report of
`auditai.deploy_report` (paper §2.4, §4.2) and writes it into a spec-sheet when asked.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from auditai.errors import DataError


def trusted_mask(recon: Sequence[tuple[int, Any]], threshold: float) -> tuple[np.ndarray | None, dict | None]:
    """Bool N (None when no input was inverted): the inputs whose code reproduces them within
    the relative reconstruction error `threshold`; plus the inversion summary over all of them."""
    if not any(inv is not None for _, inv in recon):
        return None, None
    import torch

    from auditai.inversion import Inversion

    parts, invs = [], []
    for n, inv in recon:
        parts.append(np.ones(n, dtype=bool) if inv is None else (~inv.flagged(threshold)).numpy())
        if inv is not None:
            invs.append(inv)
    merged = Inversion(torch.cat([i.z for i in invs]), torch.cat([i.error for i in invs]),
                       torch.cat([i.relative_error for i in invs]), max(i.steps for i in invs), invs[0].restarts)
    return np.concatenate(parts), merged.summary(threshold)


def deployment_section(args: argparse.Namespace, sheet: Any, model: Any, z: np.ndarray,
                       labels: list[np.ndarray], recon: Sequence[tuple[int, Any]], sources: Sequence[str]):
    """(report or None, trusted mask or None, a note for the text output)."""
    from auditai.inversion import max_relative_error

    threshold = max_relative_error(model, getattr(args, "max_recon_error", None))
    trusted, summary = trusted_mask(recon, threshold)
    note = ""
    if trusted is not None and not trusted.all():
        bad = np.flatnonzero(~trusted)
        listed = ", ".join(sources[i] for i in bad[:10]) + (" …" if len(bad) > 10 else "")
        note = (f"\n{len(bad)} input(s) not representable by the generator (GAN inversion's relative "
                f"reconstruction error above {threshold:g}): their codes are not trusted: {listed}")
    if not args.labels:
        return None, trusted, note
    from auditai.deploy_report import attach, deployment_report, predictions

    y = np.concatenate(labels)
    k = int(model.num_classes)
    if y.size and (y.min() < 0 or y.max() >= k):
        bad = np.flatnonzero((y < 0) | (y >= k))[:5].tolist()
        raise DataError(f"labels 'y' outside the head's classes 0..{k - 1} at inputs {[sources[i] for i in bad]}")
    rep = deployment_report(sheet, z, y, predictions(model.head, z), num_classes=k, eps=args.eps,
                            trusted=trusted, inputs=list(args.inputs), reconstruction=summary,
                            class_names=model.class_names)
    if args.into:
        attach(sheet, rep)
        sheet.write(args.into)
        print(f"wrote the deployment report into {args.into}", file=sys.stderr)
    return rep, trusted, note
