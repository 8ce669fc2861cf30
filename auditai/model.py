"""The audited model f = f_d ∘ e (paper §2.1, Fig. 1) and a model file that runs no code when loaded.

In AuditAI the verifier receives the model from the designer (paper §1): a model file is untrusted
input. `save_model` writes one zip archive whose members are

- ``auditai_model.json``: format name and version, the head as a list of layer descriptions
  (type name, constructor arguments, names of its state tensors), direction descriptions, dims,
  class names, metadata (plain JSON);
- ``tensors.safetensors``: the head's state tensors and the directions (safetensors: no pickle);
- ``encoder/program.json`` + ``encoder/tensors.safetensors`` (and the same for ``decoder/``): a
  `torch.export` program, its graph as JSON and its weights as safetensors;
- an image classifier (`AuditModel(..., classifier=f)`, the black-box target of paper §2.2) as
  its graph IR (``classifier_graph`` in the manifest, tensors in the safetensors member), like a
  head that is not a chain: an op without a bound rule is refused at save.

`load_model` rebuilds the head from the supported layer types only, and the encoder/decoder with
`torch._export.serde.serialize.deserialize` fed with plain tensor dicts, after checking every graph
node's target against an allow-list and every symbolic-shape expression against a strict grammar.
It never calls `torch.export.load`: in torch 2.13 that function falls back to
``torch.load(weights_only=False)`` and plain ``pickle.loads`` for the program's weights and
constants, and feeds shape expressions from the file to ``sympy.sympify`` (which evaluates Python),
so it can run code from the file. Nothing here unpickles a model file unless the caller passes
``trust_pickle=True``.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import re
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from auditai.bounds.guard import refuse_hidden_forward
from auditai.errors import InputTypeError, ModelError, ModelFileError, UnsupportedLayerError
from auditai.modes import _enter_eval, _probe, _restore

FORMAT_NAME = "auditai-model"
FORMAT_VERSION = 2          # 2: a head that is not a chain is stored as its graph IR ("head_graph")
CHAIN_FORMAT_VERSION = 1    # chain heads are still written as version 1, which older auditai reads
READABLE_VERSIONS = (1, 2)
MANIFEST = "auditai_model.json"
TENSORS = "tensors.safetensors"
# Fixed zip timestamp: the same model saves to the same bytes (deterministic content hash).
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)

# --------------------------------------------------------------------------- head layers
# The module types a saved head may contain: the bound engine's supported list
# (docs/internals.md, auditai.bounds.ops.SUPPORTED_MODULES), held here so that saving and
# loading do not depend on the engine. Each entry: type name -> (class, constructor args).
_LAYERS: dict[str, tuple[type, tuple[str, ...]]] = {
    "Linear": (nn.Linear, ("in_features", "out_features", "bias")),
    "Conv1d": (
        nn.Conv1d,
        ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
         "bias", "padding_mode"),
    ),
    "Conv2d": (
        nn.Conv2d,
        ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
         "bias", "padding_mode"),
    ),
    "ReLU": (nn.ReLU, ()),
    "LeakyReLU": (nn.LeakyReLU, ("negative_slope",)),
    "Tanh": (nn.Tanh, ()),
    "Sigmoid": (nn.Sigmoid, ()),
    "Flatten": (nn.Flatten, ("start_dim", "end_dim")),
    "BatchNorm1d": (nn.BatchNorm1d, ("num_features", "eps", "momentum", "affine", "track_running_stats")),
    "BatchNorm2d": (nn.BatchNorm2d, ("num_features", "eps", "momentum", "affine", "track_running_stats")),
    "Identity": (nn.Identity, ()),
    "Dropout": (nn.Dropout, ("p",)),
    "Sequential": (nn.Sequential, ()),
}
SUPPORTED_HEAD_MODULES: tuple[type, ...] = tuple(c for c, _ in _LAYERS.values())


def _child_position(parent: str, i: int, top: bool) -> str:
    """Positions as the bound engine names them: head[2] at the top, then head[2].1."""
    return f"{parent}[{i}]" if top else f"{parent}.{i}"


def _layer_args(module: nn.Module, names: Sequence[str]) -> dict[str, Any]:
    args: dict[str, Any] = {}
    for n in names:
        if n == "bias":
            args[n] = module.bias is not None
            continue
        v = getattr(module, n)
        args[n] = list(v) if isinstance(v, tuple) else v
    return args


def describe_head(head: nn.Module, position: str = "head") -> tuple[list[dict], dict[str, Tensor]]:
    """The head as a JSON-able list of layer descriptions plus its state tensors.

    Raises UnsupportedLayerError naming the module type and position (e.g. "head[2].1") for
    a module outside `SUPPORTED_HEAD_MODULES` (a subclass of a supported type is refused too:
    its forward may differ).
    """
    tensors: dict[str, Tensor] = {}

    def walk(m: nn.Module, pos: str, top: bool) -> dict:
        name = type(m).__name__
        refuse_hidden_forward(m, pos)  # hooks and instance-level forward are not saved: refuse them
        if name not in _LAYERS or type(m) is not _LAYERS[name][0]:
            raise UnsupportedLayerError(
                f"{type(m).__module__}.{type(m).__qualname__}", pos,
                "a saved head may hold only " + ", ".join(_LAYERS),
            )
        if name == "Sequential":
            return {"type": name, "children": [walk(c, _child_position(pos, i, top), False)
                                               for i, c in enumerate(m)]}
        state = {}
        for k, t in m.state_dict(keep_vars=False).items():
            key = f"{pos}/{k}"
            tensors[key] = t.detach().cpu().clone().contiguous()
            state[k] = key
        return {"type": name, "args": _layer_args(m, _LAYERS[name][1]), "state": state}

    return [walk(head, position, True)], tensors


def build_head(layers: list[dict], tensors: Mapping[str, Tensor], where: str = "head") -> nn.Module:
    """Rebuild a head from `describe_head`'s output (in eval mode); runs no code from the file."""

    def build(d: Any, pos: str) -> nn.Module:
        if not isinstance(d, dict) or d.get("type") not in _LAYERS:
            t = d.get("type") if isinstance(d, dict) else type(d).__name__
            raise ModelFileError(f"{where}: unknown layer type {t!r} at {pos} (supported: {', '.join(_LAYERS)})")
        cls, names = _LAYERS[d["type"]]
        if d["type"] == "Sequential":
            return nn.Sequential(*[build(c, f"{pos}.{i}") for i, c in enumerate(d.get("children", []))])
        args = d.get("args", {})
        if set(args) != set(names):
            raise ModelFileError(f"{where}: layer {d['type']} at {pos} has arguments {sorted(args)}, expected {sorted(names)}")
        try:
            m = cls(**args)
            state = {k: tensors[v] for k, v in d.get("state", {}).items()}
            m.load_state_dict(state, strict=True, assign=True)
        except KeyError as e:
            raise ModelFileError(f"{where}: tensor {e} of layer {d['type']} at {pos} is missing") from None
        except (TypeError, ValueError, RuntimeError) as e:
            raise ModelFileError(f"{where}: cannot rebuild layer {d['type']} at {pos}: {e}") from None
        return m

    if not isinstance(layers, list) or len(layers) != 1:
        raise ModelFileError(f"{where}: the head description must be a list of one layer")
    return build(layers[0], "head").eval()


# --------------------------------------------------------------------------- the model
def _infer_latent_dim(head: nn.Module) -> int | None:
    from auditai.bounds.graph import GraphModule

    if isinstance(head, GraphModule) and len(head.graph.in_shape) == 1:
        return int(head.graph.in_shape[0])
    for m in head.modules():
        if isinstance(m, nn.Linear):
            return m.in_features
        if isinstance(m, nn.BatchNorm1d):
            return m.num_features
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            return None
    return None


class AuditModel:
    """encoder e: X → Z (optional), head f_d: Z → Y (verified), decoder g: Z → X̂ (optional).

    Named `directions` (name → a vector of d or a d×k basis, or (tensor, description)) and
    `dims` (name → latent indices) name the latent sets unit tests refer to. Construction checks
    that the parts fit and says which part and which sizes do not.
    """

    def __init__(
        self,
        head: nn.Module,
        encoder: nn.Module | None = None,
        decoder: nn.Module | None = None,
        directions: Mapping[str, Any] | None = None,
        dims: Mapping[str, Sequence[int]] | None = None,
        class_names: Sequence[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
        *,
        input_shape: Sequence[int] | None = None,
        latent_dim: int | None = None,
        classifier: nn.Module | None = None,
    ) -> None:
        if not isinstance(head, nn.Module):
            raise InputTypeError(f"head must be a torch.nn.Module, got {type(head).__name__}")
        for part, m in (("encoder", encoder), ("decoder", decoder), ("classifier", classifier)):
            if m is not None and not isinstance(m, nn.Module):
                raise InputTypeError(f"{part} must be a torch.nn.Module or None, got {type(m).__name__}")
        self.head, self.encoder, self.decoder = head, encoder, decoder
        self.classifier = classifier
        self.metadata: dict = dict(metadata or {})
        self.input_shape: tuple[int, ...] | None = (
            tuple(int(s) for s in input_shape) if input_shape is not None else None
        )
        self.content_hash: str | None = None
        self.source: str = "python"

        d = latent_dim if latent_dim is not None else _infer_latent_dim(head)
        if d is None and encoder is not None and self.input_shape is not None:
            d = self._encoder_out(2)
        if d is None:
            raise ModelError(
                "cannot tell the latent size d from the head (its first layer is not Linear or "
                "BatchNorm1d): pass AuditModel(..., latent_dim=d)"
            )
        self.latent_dim: int = int(d)
        param = next(iter(head.parameters()), None)
        dtype = param.dtype if param is not None else torch.get_default_dtype()
        device = param.device if param is not None else None
        try:
            out = _probe(head, torch.zeros(2, self.latent_dim, dtype=dtype, device=device))
        except Exception as e:  # noqa: BLE001 - any failure means the sizes do not fit
            raise ModelError(f"head does not accept latent codes of size d={self.latent_dim}: {e}") from None
        if out.dim() != 2:
            raise ModelError(f"head must output N×m scores, got shape {tuple(out.shape)} for 2 codes")
        self.num_outputs: int = int(out.shape[1])

        if encoder is not None and self.input_shape is not None:
            got = self._encoder_out(2)
            if got != self.latent_dim:
                raise ModelError(
                    f"encoder outputs codes of size {got} but the head takes d={self.latent_dim}"
                )
        self.image_shape: tuple[int, ...] | None = None
        if decoder is not None:
            try:
                img = _probe(decoder, torch.zeros(2, self.latent_dim, dtype=dtype, device=device))
            except Exception as e:  # noqa: BLE001
                raise ModelError(f"decoder does not accept latent codes of size d={self.latent_dim}: {e}") from None
            self.image_shape = tuple(int(s) for s in img.shape[1:])
        self.classifier_outputs: int | None = None
        if classifier is not None:
            shape = self.image_shape or self.input_shape
            if shape is None:
                raise ModelError("a classifier needs a decoder (or input_shape) to tell its input size: "
                                 "pass AuditModel(..., decoder=g, classifier=f)")
            try:
                out = _probe(classifier, torch.zeros(2, *shape, dtype=dtype, device=device))
            except Exception as e:  # noqa: BLE001
                raise ModelError(f"classifier does not accept images of shape {shape} (the decoder's "
                                 f"output): {e}") from None
            if out.dim() != 2:
                raise ModelError(f"classifier must output N×m scores, got shape {tuple(out.shape)} for 2 images")
            self.classifier_outputs = int(out.shape[1])

        self.directions: dict[str, Tensor] = {}
        self.direction_descriptions: dict[str, str] = {}
        for name, val in (directions or {}).items():
            desc = ""
            if isinstance(val, tuple):
                if len(val) != 2 or not isinstance(val[1], str):
                    raise ModelError(f"direction '{name}': give a tensor or (tensor, description)")
                val, desc = val
            v = torch.as_tensor(val).detach().clone()
            if not v.is_floating_point():
                v = v.to(torch.get_default_dtype())
            if v.dim() not in (1, 2) or v.shape[0] != self.latent_dim:
                raise ModelError(
                    f"direction '{name}' has shape {tuple(v.shape)}: expected a vector of "
                    f"d={self.latent_dim} or a {self.latent_dim}×k basis"
                )
            if not torch.isfinite(v).all():
                raise ModelError(f"direction '{name}' contains NaN or inf")
            if (v.reshape(self.latent_dim, -1).abs().sum(0) == 0).any():
                raise ModelError(f"direction '{name}' has a zero column: it spans nothing")
            self.directions[str(name)] = v
            self.direction_descriptions[str(name)] = desc

        self.dims: dict[str, list[int]] = {}
        for name, idx in (dims or {}).items():
            ids = [idx] if isinstance(idx, int) else list(idx)
            if not ids or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
                raise ModelError(f"dims '{name}' must be a non-empty list of ints, got {idx!r}")
            bad = [i for i in ids if not 0 <= i < self.latent_dim]
            if bad:
                raise ModelError(f"dims '{name}': index {bad} out of range for d={self.latent_dim} (valid 0..{self.latent_dim - 1})")
            if len(set(ids)) != len(ids):
                raise ModelError(f"dims '{name}' repeats an index: {ids}")
            self.dims[str(name)] = ids

        self.class_names: list[str] | None = None
        if class_names is not None:
            names = [str(c) for c in class_names]
            expect = 2 if self.num_outputs == 1 else self.num_outputs
            if len(names) != expect:
                raise ModelError(
                    f"class_names has {len(names)} names but the head has {self.num_outputs} "
                    f"output(s) ({expect} classes)"
                )
            self.class_names = names

    # ------------------------------------------------------------------ helpers
    def _encoder_out(self, n: int) -> int:
        assert self.encoder is not None and self.input_shape is not None
        try:
            z = _probe(self.encoder, torch.zeros(n, *self.input_shape))
        except Exception as e:  # noqa: BLE001
            raise ModelError(f"encoder does not accept inputs of shape {self.input_shape}: {e}") from None
        if z.dim() != 2:
            raise ModelError(f"encoder must output N×d codes, got shape {tuple(z.shape)}")
        return int(z.shape[1])

    @property
    def num_classes(self) -> int:
        """Number of classes: the head's outputs, or 2 for a single-logit (binary) head."""
        return 2 if self.num_outputs == 1 else self.num_outputs

    def encode(self, x: Tensor, batch_size: int = 1024, device=None) -> Tensor:
        """e(x) in batches of `batch_size` on `device` (N×… → N×d, on the CPU); without an encoder,
        by GAN inversion through the decoder (`auditai.inversion`, paper §2.3); codes N×d pass through."""
        if self.encoder is None:
            if x.dim() == 2 and x.shape[1] == self.latent_dim:
                return x
            from auditai.inversion import encode_inputs  # no decoder either: a DataError says so

            return encode_inputs(self, x, device=device)[0]
        enc = self.encoder
        if device is not None:
            enc = enc.to(device)
        outs = []
        modes = _enter_eval(enc)
        try:
            with torch.no_grad():
                for s in range(0, x.shape[0], batch_size):
                    outs.append(enc(x[s:s + batch_size].to(device) if device is not None else x[s:s + batch_size]).cpu())
        finally:
            _restore(modes)
        return torch.cat(outs) if outs else torch.zeros(0, self.latent_dim)

    def __repr__(self) -> str:
        parts = [f"d={self.latent_dim}", f"outputs={self.num_outputs}"]
        if self.encoder is not None:
            parts.append("encoder")
        if self.decoder is not None:
            parts.append("decoder")
        if self.classifier is not None:
            parts.append("classifier")
        if self.directions:
            parts.append(f"directions={sorted(self.directions)}")
        if self.dims:
            parts.append(f"dims={sorted(self.dims)}")
        return f"AuditModel({', '.join(parts)}, source={self.source!r})"


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


# --------------------------------------------------------------------------- save / load
def _jsonable(value: Any, key: str) -> Any:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ModelFileError(f"cannot save metadata key {key!r}: it must be plain JSON (str, number, bool, list, dict): {e}") from None
    return value


def _hash_members(members: Mapping[str, bytes]) -> str:
    """sha256 over the archive's members (sorted names, each name and its bytes' sha256)."""
    h = hashlib.sha256()
    for name in sorted(members):
        h.update(name.encode() + b"\0" + hashlib.sha256(members[name]).digest())
    return h.hexdigest()


def _model_members(model: AuditModel, example_input: Tensor | None, with_programs: bool) -> dict[str, bytes]:
    import safetensors.torch as st

    graph = None
    try:
        layers, tensors = describe_head(model.head)
    except UnsupportedLayerError as chain_error:
        from auditai.graph_io import graph_to_data, read_head_graph

        try:
            g = read_head_graph(model.head, model.latent_dim)
        except UnsupportedLayerError as graph_error:
            raise graph_error from chain_error
        graph, tensors = graph_to_data(g)
        layers = None
    for name, v in model.directions.items():
        tensors[f"direction/{name}"] = v.detach().cpu().clone().contiguous()
    manifest = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION if graph is not None else CHAIN_FORMAT_VERSION,
        "head": layers,
        "latent_dim": model.latent_dim,
        "num_outputs": model.num_outputs,
        "directions": {n: {"tensor": f"direction/{n}", "description": model.direction_descriptions.get(n, "")}
                       for n in model.directions},
        "dims": model.dims,
        "class_names": model.class_names,
        "input_shape": list(model.input_shape) if model.input_shape is not None else None,
        "metadata": {k: _jsonable(v, k) for k, v in model.metadata.items()},
        "encoder": model.encoder is not None,
        "decoder": model.decoder is not None,
        "torch": torch.__version__.split("+")[0],
    }
    if graph is not None:
        manifest["head_graph"] = graph
    if model.classifier is not None:
        from auditai.graph_io import graph_to_data, read_module_graph

        shape = model.image_shape or model.input_shape
        cdata, ctensors = graph_to_data(read_module_graph(model.classifier, shape, "classifier"), "classifier_graph")
        manifest["classifier_graph"] = cdata
        manifest["version"] = FORMAT_VERSION
        tensors.update(ctensors)
        if model.decoder is not None:
            # the decoder also as its graph IR when it has one: classifier∘decoder is then bounded
            # after loading (an exported program can be run but not read back as a graph)
            try:
                ddata, dtensors = graph_to_data(read_module_graph(model.decoder, (model.latent_dim,), "decoder"),
                                                "decoder_graph")
            except (UnsupportedLayerError, ModelFileError):
                ddata = None
            if ddata is not None:
                manifest["decoder_graph"] = ddata
                tensors.update(dtensors)
    members = {
        MANIFEST: json.dumps(manifest, sort_keys=True, indent=1).encode(),
        TENSORS: st.save(tensors),
    }
    if with_programs:
        if model.encoder is not None:
            if example_input is None:
                if model.input_shape is None:
                    raise ModelFileError(
                        "save_model needs the encoder's input shape to export it: pass "
                        "AuditModel(..., input_shape=(C, H, W)) or save_model(..., example_input=x)"
                    )
                example_input = torch.zeros(2, *model.input_shape)
            members.update(_export_module(model.encoder, example_input, "encoder"))
        if model.decoder is not None:
            members.update(_export_module(model.decoder, torch.zeros(2, model.latent_dim), "decoder"))
    return members


def model_content_hash(model: AuditModel) -> str:
    """sha256 of a model held in memory: head description and tensors, directions, dims, metadata.

    For a model loaded from an auditai file, `model.content_hash` also covers the encoder and decoder.
    """
    try:
        return _hash_members(_model_members(model, None, with_programs=False))
    except (UnsupportedLayerError, ModelFileError):
        h = hashlib.sha256()
        for k, v in sorted(model.head.state_dict().items()):
            h.update(k.encode() + b"\0" + v.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()


def save_model(path: str | Path, model: AuditModel, example_input: Tensor | None = None) -> str:
    """Write `model` to one auditai file (a zip; loading it runs no code). Returns the content hash.

    The head must hold only supported layers (an unsupported one raises UnsupportedLayerError
    naming it and its position); encoder and decoder are stored as `torch.export` programs.
    """
    if not isinstance(model, AuditModel):
        raise InputTypeError(f"save_model expects an AuditModel, got {type(model).__name__}")
    members = _model_members(model, example_input, with_programs=True)
    path = Path(path)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(members):
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, members[name])
    path.write_bytes(buf.getvalue())
    model.content_hash = _hash_members(members)
    return model.content_hash


def _read_auditai_zip(zf: zipfile.ZipFile, where: str) -> AuditModel:
    import safetensors.torch as st

    try:
        members = {n: zf.read(n) for n in zf.namelist()}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, zlib.error) as e:
        raise ModelFileError(f"{where}: the file is corrupt (a member fails its checksum or is cut off): {e}") from None
    try:
        man = json.loads(members[MANIFEST])
    except ValueError as e:
        raise ModelFileError(f"{where}: {MANIFEST} is not valid JSON: {e}") from None
    if not isinstance(man, dict) or man.get("format") != FORMAT_NAME:
        raise ModelFileError(f"{where}: not an auditai model file (format {man.get('format') if isinstance(man, dict) else None!r})")
    ver = man.get("version")
    if ver not in READABLE_VERSIONS:
        raise ModelFileError(
            f"{where}: auditai model format version {ver!r}, this auditai reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}"
            + (" (a newer auditai wrote it: upgrade auditai)" if isinstance(ver, int) and ver > FORMAT_VERSION else "")
        )
    try:
        tensors = st.load(members[TENSORS])
    except KeyError:
        raise ModelFileError(f"{where}: member {TENSORS} is missing") from None
    except Exception as e:  # noqa: BLE001
        raise ModelFileError(f"{where}: {TENSORS} is corrupt: {e}") from None
    if man.get("head_graph") is not None:
        from auditai.graph_io import graph_from_data

        head = graph_from_data(man["head_graph"], tensors, where)
    else:
        head = build_head(man.get("head"), tensors, where)
    parts = {}
    if man.get("classifier_graph") is not None:
        from auditai.graph_io import graph_from_data

        parts["classifier"] = graph_from_data(man["classifier_graph"], tensors, where, "classifier")
    if man.get("decoder_graph") is not None:
        from auditai.graph_io import graph_from_data

        parts["decoder"] = graph_from_data(man["decoder_graph"], tensors, where, "decoder")
    for part in ("encoder", "decoder"):
        if man.get(part) and part not in parts:
            if f"{part}/program.json" not in members:
                raise ModelFileError(f"{where}: the manifest lists a {part} but {part}/program.json is missing")
            parts[part] = _import_module(members, part, where)
    try:
        directions = {n: (tensors[d["tensor"]], d.get("description", "")) for n, d in man.get("directions", {}).items()}
        model = AuditModel(
            head, encoder=parts.get("encoder"), decoder=parts.get("decoder"), classifier=parts.get("classifier"),
            directions=directions,
            dims=man.get("dims") or {}, class_names=man.get("class_names"), metadata=man.get("metadata") or {},
            input_shape=man.get("input_shape"), latent_dim=man.get("latent_dim"),
        )
    except KeyError as e:
        raise ModelFileError(f"{where}: tensor {e} is missing") from None
    except (TypeError, ValueError) as e:
        raise ModelFileError(f"{where}: the stored parts do not fit: {e}") from None
    model.content_hash = _hash_members(members)
    return model


_PICKLE_HELP = (
    "it is a pickle (torch.save of a module or a dict of modules), and loading a pickle can run "
    "arbitrary code from the file. Ask the designer to save it with auditai.save_model(path, "
    "AuditModel(head, encoder=...)), or, if you trust the file, pass trust_pickle=True "
    "(--auditai-trust-pickle)"
)


def _from_object(obj: Any, where: str) -> AuditModel:
    if isinstance(obj, AuditModel):
        return obj
    if isinstance(obj, nn.Module):
        return AuditModel(obj)
    if isinstance(obj, Mapping) and "head" in obj:
        keys = {"head", "encoder", "decoder", "classifier", "directions", "dims", "class_names", "metadata", "input_shape", "latent_dim"}
        extra = sorted(set(obj) - keys)
        if extra:
            raise ModelFileError(f"{where}: unknown key(s) {extra}; expected some of {sorted(keys)}")
        return AuditModel(**obj)
    found = sorted(obj) if isinstance(obj, Mapping) else type(obj).__name__
    raise ModelFileError(f"{where}: expected an AuditModel, an nn.Module or a dict with a 'head' key, got {found}")


def _load_python(spec: str) -> AuditModel:
    mod_name, _, attr = spec.partition(":")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise ModelFileError(f"{spec}: cannot import module {mod_name!r}: {e}") from None
    obj: Any = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ModelFileError(f"{spec}: module {mod_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if callable(obj) and not isinstance(obj, (nn.Module, AuditModel)):
        obj = obj()
    try:
        model = _from_object(obj, spec)
    except (TypeError, ValueError) as e:
        if isinstance(e, ModelFileError):
            raise
        raise ModelFileError(f"{spec}: {e}") from None
    model.source = spec
    if model.content_hash is None:
        model.content_hash = model_content_hash(model)
    return model


_PY_SOURCE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_.]*$")


def load_model(source: str | Path | AuditModel, trust_pickle: bool = False) -> AuditModel:
    """Load a model from an auditai file, an ONNX head, or "package.module:attribute".

    A plain torch.save pickle is refused unless `trust_pickle=True` (a pickle can run code).
    Sets `model.content_hash` (sha256) and `model.source`.
    """
    if isinstance(source, AuditModel):
        return source
    path = Path(source)
    where = str(source)
    if not path.exists():
        if isinstance(source, str) and _PY_SOURCE.match(source):
            return _load_python(source)
        raise ModelFileError(f"{where}: no such file (give a model file, an .onnx head, or package.module:attribute)")
    if path.is_dir():
        raise ModelFileError(f"{where}: is a directory, expected a model file")
    data = path.read_bytes()
    if not data:
        raise ModelFileError(f"{where}: the file is empty")
    if path.suffix.lower() == ".onnx":
        from auditai.onnx_io import load_onnx_head

        model = AuditModel(load_onnx_head(data, where))
        model.content_hash = hashlib.sha256(data).hexdigest()
        model.source = where
        return model
    model: AuditModel
    if data[:4] == b"PK\x03\x04":
        try:
            zf = zipfile.ZipFile(io.BytesIO(data))
            names = zf.namelist()
        except (zipfile.BadZipFile, EOFError, ValueError) as e:
            raise ModelFileError(f"{where}: the file is truncated or corrupt (not a readable zip archive: {e})") from None
        if MANIFEST in names:
            model = _read_auditai_zip(zf, where)
        elif any(n.endswith("data.pkl") for n in names):
            model = _load_pickle(path, where, trust_pickle)
        else:
            raise ModelFileError(f"{where}: a zip archive but not an auditai model file (no {MANIFEST})")
    elif data[:1] == b"\x80" or data[:2] == b"\x8a\x0a":
        model = _load_pickle(path, where, trust_pickle)
    else:
        raise ModelFileError(
            f"{where}: not a model file auditai knows (expected an auditai_model zip from "
            "auditai.save_model, an .onnx head, or a torch.save pickle with trust_pickle=True)"
        )
    model.source = where
    return model


def _load_pickle(path: Path, where: str, trust_pickle: bool) -> AuditModel:
    if not trust_pickle:
        raise ModelFileError(f"{where}: refusing to load: {_PICKLE_HELP}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001
        raise ModelFileError(f"{where}: cannot unpickle the file: {e}") from None
    try:
        model = _from_object(obj, where)
    except ModelFileError:
        raise
    except (TypeError, ValueError) as e:
        raise ModelFileError(f"{where}: {e}") from None
    model.content_hash = hashlib.sha256(path.read_bytes()).hexdigest()
    return model


__all__ = [
    "FORMAT_VERSION",
    "SUPPORTED_HEAD_MODULES",
    "AuditModel",
    "build_head",
    "describe_head",
    "load_model",
    "model_content_hash",
    "save_model",
]
