"""`auditai vnnlib NET.onnx PROP.vnnlib`: decide a VNN-LIB property for an ONNX network.

Answers in the VNN-COMP result format: `unsat` (the property holds: no input of the box reaches
the unsafe outputs), `sat` followed by the counterexample ((X_0 v) ... (Y_0 v)), `unknown` or
`timeout`, written to --results FILE or stdout. Exit status 0 for any answer, 2 for bad input
(an unreadable network or property: the error names the file, the line and the token).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from auditai.commands import nonnegative_float

HELP = "decide a VNN-LIB property for an ONNX network (unsat / sat + counterexample / unknown / timeout)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("net", metavar="NET.onnx", help="the network (ONNX)")
    parser.add_argument("prop", metavar="PROP.vnnlib", help="the property (VNN-LIB)")
    parser.add_argument("--timeout", type=nonnegative_float("--timeout"), default=60.0, metavar="S",
                        help="seconds to decide the property (default 60)")
    parser.add_argument("--results", metavar="FILE", default=None,
                        help="write the answer to FILE (default: stdout)")


def load_network(path: str):
    """The ONNX network as a module taking flat inputs (N, n_in) and giving (N, n_out)."""
    import onnx

    from auditai.errors import ModelFileError
    from auditai.onnx_io import load_onnx_head

    p = Path(path)
    if not p.is_file():
        raise ModelFileError(f"{path}: no such file (expected an ONNX network)")
    data = p.read_bytes()
    net = load_onnx_head(data, str(path))
    try:
        g = onnx.load_from_string(data).graph
        inits = {t.name for t in g.initializer}
        dims = next(i for i in g.input if i.name not in inits).type.tensor_type.shape.dim
        shape = [d.dim_value for d in dims][1:]
    except Exception as e:  # noqa: BLE001 - load_onnx_head has read it already
        raise ModelFileError(f"{path}: cannot read the input shape: {e}") from None
    # load_onnx_head's graph takes flat inputs already (a reshape to the declared shape first)
    return net.eval(), int(math.prod(shape)) if shape and all(s > 0 for s in shape) else None


def run(args: argparse.Namespace) -> int:
    from auditai.vnnlib import VnnlibError, decide, parse_vnnlib

    net, n_in = load_network(args.net)
    try:
        text = Path(args.prop).read_text(encoding="utf-8")
    except OSError as e:
        raise VnnlibError(f"cannot read the property: {e.strerror or e}", args.prop) from None
    except UnicodeDecodeError:
        raise VnnlibError("the property is not UTF-8 text", args.prop) from None
    prop = parse_vnnlib(text, args.prop)
    if n_in is not None and n_in != prop.n_in:
        raise VnnlibError(f"the property declares {prop.n_in} inputs X_i but the network {args.net} takes {n_in}",
                          args.prop)
    ans = decide(net, prop, timeout=float(args.timeout))
    if args.results:
        Path(args.results).write_text(ans.text(), encoding="utf-8")
    else:
        sys.stdout.write(ans.text())
    print(f"auditai vnnlib: {ans.status} in {ans.time_s:.2f} s ({ans.phase}, {ans.boxes} boxes)", file=sys.stderr)
    return 0
