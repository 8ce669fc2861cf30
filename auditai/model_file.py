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
import io
import json
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from auditai.audit_model import AuditModel
from auditai.bounds.guard import refuse_hidden_forward
from auditai.errors import InputTypeError, ModelFileError, UnsupportedLayerError
from auditai.model_programs import _export_module, _import_module

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


