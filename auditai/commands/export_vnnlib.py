"""`auditai export-vnnlib`: hand a unit test's samples to a complete verifier (α,β-CROWN).

Writes OUT/sample_NNNNN.onnx (input δ of k, z0 + B·δ folded into the head's first Linear),
OUT/sample_NNNNN.vnnlib (δ ∈ [−ε, ε]^k; unsafe when some y_j ≥ y_label), instances.csv in the
VNN-COMP layout, and auditai_export.json describing the set.
"""

from __future__ import annotations

import argparse

from auditai.errors import InputError

HELP = "write a unit test's samples as ONNX networks + VNN-LIB properties for a complete verifier"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="auditai model file, .onnx head, or package.module:attr")
    parser.add_argument("--data", required=True, help=".pt/.npz/.safetensors, an image folder, or package.module:attr")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--direction", help="a named direction (vector or basis) of the model")
    group.add_argument("--dims", help="a named dims entry of the model, or indices like 3,5")
    parser.add_argument("--norm", default="inf", help="norm of the δ-ball: inf (default), 2 or 1 (k=1 only)")
    parser.add_argument("--eps", type=float, required=True, help="radius ε of the latent set")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--limit", type=int, default=None, help="export only the first N samples")
    parser.add_argument("--timeout", type=float, default=300.0, help="per-instance timeout written to instances.csv")
    parser.add_argument("--trust-pickle", action="store_true", help="allow a torch.save pickle model (can run code)")


def _set_kind(model, args):
    from auditai.latent import Basis, Dims, Direction

    if args.direction is not None:
        if args.direction not in model.directions:
            raise InputError(f"--direction {args.direction!r}: the model has directions {sorted(model.directions)}")
        v = model.directions[args.direction]
        if v.dim() == 1 or v.shape[1] == 1:
            return Direction(v.reshape(-1), args.direction)
        return Basis(v, args.norm, args.direction)
    if args.dims in model.dims:
        return Dims(model.dims[args.dims], args.norm)
    try:
        idx = [int(s) for s in args.dims.replace(" ", "").split(",") if s]
    except ValueError:
        raise InputError(f"--dims {args.dims!r}: not a named dims entry ({sorted(model.dims)}) nor indices like 3,5") from None
    return Dims(idx, args.norm)


def run(args: argparse.Namespace) -> int:
    from auditai.data import load_data
    from auditai.errors import AuditaiError, DataError
    from auditai.model import load_model
    from auditai.onnx_io import export_vnnlib

    model = load_model(args.model, trust_pickle=args.trust_pickle)
    data = load_data(args.data, model)
    z, y = data.z, data.y
    if args.limit is not None:
        if args.limit < 1:
            raise DataError(f"--limit must be >= 1, got {args.limit}")
        z, y = z[: args.limit], y[: args.limit]
    try:
        kind = _set_kind(model, args)
        written = export_vnnlib(model.head, z, y, kind, args.eps, args.out, timeout=args.timeout,
                                model_hash=model.content_hash)
    except ValueError as e:
        if isinstance(e, AuditaiError):
            raise
        raise AuditaiError(str(e)) from None
    print(f"wrote {len(written)} ONNX network(s) + VNN-LIB properties to {args.out} (instances.csv lists them)")
    return 0
