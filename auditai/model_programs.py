"""Encoder and decoder as `torch.export` programs in a model file, read back without running code.

A program is stored as its graph JSON and its weights as safetensors. Reading it checks every graph
node's target against an allow-list and every symbolic-shape expression against a strict grammar,
then calls `torch._export.serde.serialize.deserialize` with plain tensor dicts; it never calls
`torch.export.load` (which can unpickle and evaluate Python from the file; see auditai.model_file).
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from auditai.errors import ModelFileError
from auditai.modes import _enter_eval, _restore

# --------------------------------------------------------------------------- torch.export, safely
# Graph node targets a saved encoder/decoder may call: ATen/prims operators, symbolic-int helpers
# and a few pure Python operators. Anything else ("torch.save", "torch.os.system", ...) is refused.
_SAFE_TARGET = re.compile(r"^(torch\.ops\.(aten|prims)\.[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)?|torch\.sym_[a-z_]+|math\.[a-z0-9_]+)$")
_SAFE_OPERATOR = {f"_operator.{n}" for n in (
    "getitem", "add", "sub", "mul", "floordiv", "truediv", "mod", "neg", "pos", "pow", "abs",
    "eq", "ne", "lt", "le", "gt", "ge", "and_", "or_", "not_")}
# Symbolic-shape expressions go to sympy.sympify (which evaluates Python): allow only symbol
# names (s0, u3, ...), known sympy function names, numbers, operators and brackets.
_EXPR_CHARS = re.compile(r"^[A-Za-z0-9_+\-*/%()<>=!&|~,. ]*$")
_SYMBOL_DECL = re.compile(r"Symbol\('[a-z]+[0-9]+'(, (positive|integer|real|nonnegative)=(True|False))*\)")
_EXPR_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_EXPR_NAMES = {
    "FloorDiv", "ModularIndexing", "Where", "PythonMod", "Mod", "CleanDiv", "CeilToInt", "FloorToInt",
    "CeilDiv", "LShift", "RShift", "PowByNatural", "FloatPow", "FloatTrueDiv", "IntTrueDiv",
    "IsNonOverlappingAndDenseIndicator", "TruncToFloat", "TruncToInt", "RoundToInt",
    "RoundDecimal", "ToFloat", "Identity", "Max", "Min", "Eq", "Ne", "Lt", "Le", "Gt", "Ge",
    "And", "Or", "Not", "Abs", "floor", "ceiling", "oo", "true", "false", "True", "False",
    "sqrt", "Piecewise", "OpaqueUnaryFn_sqrt",
}


def _check_program_json(obj: Any, where: str) -> None:
    """Refuse an exported graph that names an op outside the allow-list or an odd expression."""
    stack = [obj]
    while stack:
        o = stack.pop()
        if isinstance(o, dict):
            for k, v in o.items():
                if k == "target" and isinstance(v, str):
                    if not (_SAFE_TARGET.match(v) or v in _SAFE_OPERATOR):
                        raise ModelFileError(f"{where}: the program calls {v!r}, which auditai does not load (only ATen operators are allowed)")
                elif k == "expr_str" and isinstance(v, str):
                    v = _SYMBOL_DECL.sub("s0", v)  # Symbol('s31', positive=True, integer=True)
                    bad = [w for w in _EXPR_IDENT.findall(v) if w not in _EXPR_NAMES and not re.fullmatch(r"[a-z]+[0-9]+", w)]
                    if not _EXPR_CHARS.match(v) or "__" in v or bad:
                        raise ModelFileError(f"{where}: refusing the shape expression {v!r}")
                elif k in ("custom_obj", "script_obj") and v:
                    raise ModelFileError(f"{where}: the program holds a custom (torchbind) object; auditai does not load those")
                else:
                    stack.append(v)
        elif isinstance(o, list):
            stack.extend(o)


def _export_module(module: nn.Module, example: Tensor, part: str) -> dict[str, bytes]:
    """`torch.export` a module (batch dimension dynamic) into zip members: graph JSON + safetensors."""
    import safetensors.torch as st
    from torch._export.serde.serialize import serialize

    modes = _enter_eval(module)
    try:
        batch = torch.export.Dim("batch", min=1)
        try:
            ep = torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
        except Exception:  # noqa: BLE001 - some modules specialise the batch; export it static
            ep = torch.export.export(module, (example,))
    except Exception as e:  # noqa: BLE001
        raise ModelFileError(f"cannot torch.export the {part} (auditai stores encoder and decoder as exported programs): {e}") from None
    finally:
        _restore(modes)
    art = serialize(ep)
    # Our own, just-made bytes: safe to read back, then stored without pickle.
    sd = torch.load(io.BytesIO(art.state_dict), weights_only=True) if art.state_dict else {}
    consts = torch.load(io.BytesIO(art.constants), weights_only=True) if art.constants else {}
    for k, v in {**sd, **consts}.items():
        if not isinstance(v, Tensor):
            raise ModelFileError(f"cannot save the {part}: its program holds a non-tensor constant {k!r} ({type(v).__name__})")
    tensors = {f"{'param' if isinstance(v, nn.Parameter) else 'state'}/{k}": v.detach().clone().contiguous()
               for k, v in sd.items()}
    tensors.update({f"const/{k}": v.detach().clone().contiguous() for k, v in consts.items()})
    return {f"{part}/program.json": art.exported_program, f"{part}/tensors.safetensors": st.save(tensors)}


def _import_module(members: Mapping[str, bytes], part: str, where: str) -> nn.Module:
    """Rebuild an exported program from its JSON graph and safetensors weights, running no pickle."""
    import safetensors.torch as st

    try:
        from torch._export.serde.serialize import SerializedArtifact, deserialize
    except ImportError as e:  # pragma: no cover - depends on the torch version
        raise ModelFileError(f"{where}: this torch cannot read exported programs ({e})") from None
    prog = members[f"{part}/program.json"]
    try:
        _check_program_json(json.loads(prog), f"{where} ({part})")
        tens = st.load(members[f"{part}/tensors.safetensors"])
    except ModelFileError:
        raise
    except Exception as e:  # noqa: BLE001
        raise ModelFileError(f"{where}: the {part} is corrupt: {e}") from None
    sd: dict[str, Tensor] = {k[len("state/"):]: v for k, v in tens.items() if k.startswith("state/")}
    sd.update({k[len("param/"):]: nn.Parameter(v, requires_grad=v.is_floating_point())
               for k, v in tens.items() if k.startswith("param/")})
    consts = {k[len("const/"):]: v for k, v in tens.items() if k.startswith("const/")}
    try:
        # dicts, not bytes: deserialize_torch_artifact returns them as they are (no torch.load);
        # b"" example inputs give {} likewise.
        ep = deserialize(SerializedArtifact(prog, sd, consts, b""))
        return ep.module()
    except Exception as e:  # noqa: BLE001
        raise ModelFileError(f"{where}: cannot rebuild the {part} program: {e}") from None

