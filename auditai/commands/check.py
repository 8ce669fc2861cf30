"""`auditai check`: are new inputs inside the spec-sheet's deployment ranges? (paper §2.4)

With `--labels`, also the deployment report (`auditai.deploy_report`): coverage and accuracy,
precision and recall inside, outside and on all inputs; `--into` puts it on a spec-sheet. A
model without an encoder encodes inputs by GAN inversion (`auditai.inversion`); an input its
generator cannot reproduce is flagged and counted outside.

Exit status: 0 when every input lies inside the deployment range of every unit test, 1 when
any input is out of range (or not representable by the generator), 2 on errors (a bad sheet,
input file or model, labels missing).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from auditai.commands import nonnegative_float
from auditai.errors import AuditaiError, DataError, SheetError

HELP = "check that inputs (x or latent codes z) lie inside a spec-sheet's deployment ranges"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="files with inputs 'x' or latent codes 'z' (.npz, .pt, .npy, .safetensors)")
    parser.add_argument("--sheet", required=True, help="the spec-sheet JSON (auditai.spec-sheet/1)")
    parser.add_argument("--model", help="the model (to encode inputs x); must be the model the sheet describes")
    parser.add_argument("--eps", type=nonnegative_float("--eps"), default=None,
                        help="the ε whose range to check (default per unit test: its largest gated ε that passed)")
    parser.add_argument("--json", action="store_true", help="print the verdicts as JSON")
    parser.add_argument("--trust-pickle", action="store_true", help="allow pickled model files (runs their code)")
    # the deployment report (auditai.deploy_report, paper §2.4 and §4.2 Table 4)
    parser.add_argument("--labels", action="store_true",
                        help="read labels 'y' from each input file and report coverage, accuracy and macro "
                             "precision/recall inside, outside and on all inputs (needs --model)")
    parser.add_argument("--into", metavar="SHEET",
                        help="with --labels: write the spec-sheet with the report as its 'deployment' section "
                             "to SHEET (.json, .md or .html; may be the --sheet file itself)")
    parser.add_argument("--max-recon-error", type=nonnegative_float("--max-recon-error"), default=None,
                        help="models without an encoder encode by GAN inversion: an input whose relative "
                             "reconstruction error ‖g(z)−x‖²/‖x‖² exceeds this is flagged and counted outside "
                             "(default: the model's metadata, else 0.25)")


def _array(v: Any, key: str, where: str) -> np.ndarray:
    if hasattr(v, "detach"):
        v = v.detach().cpu()
        if v.dtype.is_floating_point:
            v = v.double()
        v = v.numpy()
    try:
        a = np.asarray(v, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{where}: '{key}' is not an array of numbers") from None
    if not np.isfinite(a).all():
        raise DataError(f"{where}: '{key}' contains NaN or inf")
    return a


def read_inputs(path: str) -> tuple[str, np.ndarray | None]:
    """(key, array) from a file: key 'z' (codes), 'x' (inputs) or '' (a bare array)."""
    raw = _read_raw(path)
    if isinstance(raw, dict):
        for key in ("z", "x"):
            if key in raw:
                return key, _array(raw[key], key, path)
        raise DataError(f"{path}: no key 'z' (latent codes) or 'x' (inputs); found keys {sorted(map(str, raw))}")
    return "", _array(raw, "array", path)


def read_labels(path: str, n: int) -> np.ndarray:
    """The labels 'y' of an input file: n integer class indices (for --labels)."""
    raw = _read_raw(path)
    if not isinstance(raw, dict):
        raise DataError(f"{path}: a bare array holds no labels; --labels needs a file with 'y' beside 'x' or 'z'")
    if "y" not in raw:
        raise DataError(f"{path}: no key 'y' (labels) for --labels; found keys {sorted(map(str, raw))}")
    y = _array(raw["y"], "y", path)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.shape[0] != n:
        raise DataError(f"{path}: 'y' must hold one label per input ({n}), got shape {y.shape}")
    if not np.array_equal(y, np.round(y)):
        raise DataError(f"{path}: labels 'y' must be integer class indices, got fractional values")
    return y.astype(np.int64)


def _read_raw(path: str) -> Any:
    """The file's arrays: a dict of them, or one bare array."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{path}: no such file")
    suffix = p.suffix.lower()
    try:
        if suffix == ".npz":
            with np.load(p, allow_pickle=False) as f:
                raw = {k: f[k] for k in f.files}
        elif suffix == ".npy":
            raw = np.load(p, allow_pickle=False)
        elif suffix in (".pt", ".pth"):
            import torch

            raw = torch.load(p, map_location="cpu", weights_only=True)
        elif suffix == ".safetensors":
            from safetensors.numpy import load_file

            raw = load_file(str(p))
        else:
            raise DataError(f"{path}: unknown input format {suffix!r} (expected .npz, .npy, .pt or .safetensors)")
    except AuditaiError:
        raise
    except Exception as e:  # noqa: BLE001 - any reader failure is a bad input file
        raise DataError(f"{path}: cannot read inputs: {e}") from None
    return raw


def run(args: argparse.Namespace) -> int:
    from auditai.sheet import SpecSheet

    sheet = SpecSheet.from_json(Path(args.sheet))
    model = None
    if args.model:
        from auditai.model import load_model

        model = load_model(args.model, trust_pickle=args.trust_pickle)
        want, got = sheet.model.get("sha256"), getattr(model, "content_hash", None)
        if want and got and want != got:
            raise SheetError(
                f"{args.model} (sha256 {got[:12]}…) is not the model the spec-sheet {args.sheet} "
                f"describes (sha256 {want[:12]}…): its ranges and figures do not apply"
            )
    if args.labels and model is None:
        raise DataError("--labels needs --model: the report compares the head's predictions with the labels")
    if args.into and not args.labels:
        raise DataError("--into writes the deployment report into a spec-sheet: give --labels too")
    codes, sources, labels, recon = [], [], [], []
    for path in args.inputs:
        key, a = read_inputs(path)
        inv = None
        if key == "z" or (key == "" and model is None):
            z = a
        elif model is None:
            raise DataError(f"{path}: holds inputs 'x'; give --model to encode them, or store codes 'z'")
        else:
            import torch

            from auditai.inversion import encode_inputs

            try:
                z, inv = encode_inputs(model, torch.as_tensor(a, dtype=torch.get_default_dtype()))
            except AuditaiError as e:
                raise DataError(f"{path}: {e}") from None
            except Exception as e:  # noqa: BLE001
                raise DataError(f"{path}: the model cannot encode inputs of shape {a.shape}: {e}") from None
            z = _array(z, "z (encoded)", path)
        if z.ndim == 1:
            z = z[None]
        if z.ndim != 2:
            raise DataError(f"{path}: codes must be N×d, got shape {z.shape}")
        d = sheet.latent_dim
        if d is not None and z.shape[1] != d:
            raise DataError(f"{path}: codes have d={z.shape[1]}, the spec-sheet's model has d={d}")
        codes.append(z)
        sources += [f"{path}[{i}]" for i in range(z.shape[0])]
        recon.append((z.shape[0], inv))
        if args.labels:
            labels.append(read_labels(path, z.shape[0]))
    z = np.concatenate(codes, axis=0)
    report = sheet.check(z, eps=args.eps, sources=sources)
    from auditai.commands.check_report import deployment_section

    dep, trusted, note = deployment_section(args, sheet, model, z, labels, recon, sources)
    if args.json:
        out = {"sheet": str(args.sheet), "eps": args.eps, **report.to_dict()}
        if trusted is not None:
            out["trusted"] = trusted.tolist()
        if dep is not None:
            out["deployment_report"] = dep.to_dict()
        json.dump(out, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        print(report.to_text())
        if note:
            print(note)
        if dep is not None:
            print("\n" + dep.to_text())
    inside = report.all_inside and (trusted is None or bool(trusted.all()))
    return 0 if inside else 1
