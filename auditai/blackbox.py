"""The black-box audit (paper §2.2): verify an image classifier on the images of a generator.

A unit test with `target: classifier` checks f(g(z)) over its latent set, where g is the model's
decoder (Z → X̂) and f its image classifier (X → Y): the composition is one module,
one graph IR (decoder nodes, then classifier nodes, `compose_graphs`) wrapped as a `GraphModule`
and handed to `auditai.verify.verify` as the function to verify, so the bound methods, attacks,
input splitting and counterexamples are those of the head (the spec's labels and nominal
predictions then come from the classifier). Each part is read by the graph reader and checked
against the part itself in float64 (`auditai.graph_io.read_module_graph`); an op without a bound
rule is an UnsupportedLayerError naming it. Image-sized intermediates are chunked by the engine's
memory budget like any other node. `DecodedClassifier` is the same function as a plain module.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from auditai.bounds.graph import Graph, GraphModule, Node
from auditai.errors import AuditaiError

TARGETS = ("head", "classifier")


class TargetError(AuditaiError, ValueError):
    """A unit test asks for a target the model does not have (names the test and the part)."""


class DecodedClassifier(nn.Module):
    """classifier(decoder(z)): the black-box target as one module (Z → class scores)."""

    def __init__(self, decoder: nn.Module, classifier: nn.Module) -> None:
        super().__init__()
        self.decoder = decoder
        self.classifier = classifier

    def forward(self, z: Tensor) -> Tensor:
        return self.classifier(self.decoder(z))


def compose_graphs(first: Graph, second: Graph) -> Graph:
    """One graph computing second(first(x)): `second`'s input node becomes `first`'s output."""
    if tuple(first.out_shape) != tuple(second.in_shape):
        raise TargetError(f"the decoder outputs images of shape {tuple(first.out_shape)} but the classifier "
                          f"takes {tuple(second.in_shape)}")
    off = len(first.nodes) - 1

    def where(j: int) -> int:
        return first.output if j == 0 else off + j

    nodes = list(first.nodes)
    for n in second.nodes[1:]:
        nodes.append(Node(f"classifier.{n.name}", n.op, tuple(where(j) for j in n.inputs), dict(n.attrs),
                          dict(n.consts), n.shape, f"classifier.{n.where}" if n.where else n.where))
    return Graph(nodes, where(second.output))


def target_module(model: Any, target: str | None, name: str = "unit test") -> nn.Module:
    """The function a unit test verifies: the head (target 'head', the default) or
    classifier∘decoder (target 'classifier') as one graph (`GraphModule`). Raises TargetError
    when a part is missing, UnsupportedLayerError naming an op without a bound rule."""
    t = str(target or "head").strip().lower()
    if t == "head":
        return model.head
    if t != "classifier":
        raise TargetError(f"{name}: unknown target {target!r}; expected 'head' or 'classifier'")
    missing = [p for p in ("decoder", "classifier") if getattr(model, p, None) is None]
    if missing:
        raise TargetError(
            f"{name}: target 'classifier' verifies classifier(decoder(z)), but the model has no "
            f"{' and no '.join(missing)}: build it with AuditModel(head, decoder=g, classifier=f)")
    from auditai.graph_io import read_module_graph

    img = getattr(model, "image_shape", None)
    if img is None:
        raise TargetError(f"{name}: the model's decoder output shape is unknown")
    gd = read_module_graph(model.decoder, (int(model.latent_dim),), "decoder")
    gc = read_module_graph(model.classifier, tuple(img), "classifier")
    comp = GraphModule(compose_graphs(gd, gc)).eval()
    with torch.no_grad():  # the composed graph against the parts themselves, in float64
        gen = torch.Generator().manual_seed(1)
        z = torch.randn(4, int(model.latent_dim), generator=gen, dtype=torch.float64)
        got = comp.graph.to(torch.float64).forward(z)
        want = gc.to(torch.float64).forward(gd.to(torch.float64).forward(z))
        if not torch.allclose(got, want, rtol=1e-9, atol=1e-12):
            raise TargetError(f"{name}: the composed graph does not compute classifier(decoder(z))")
    return comp


@torch.no_grad()
def attach_images(result: Any, model: Any, target: str | None) -> None:
    """In place: the decoded image g(z) on the worst counterexample of each ε (target
    'classifier' only; one image per ε keeps the record small)."""
    if str(target or "head") != "classifier" or getattr(model, "decoder", None) is None:
        return
    for e in range(len(result.eps)):
        c = result.worst_counterexample(e)
        if c is None:
            continue
        dec = model.decoder
        p = next(iter(dec.parameters()), None)
        z = torch.tensor([c.z], dtype=p.dtype if p is not None else torch.float32,
                         device=p.device if p is not None else None)
        c.image = dec(z)[0].detach().cpu().tolist()


# --------------------------------------------------------------------------- parts given apart
PARTS = ("decoder", "classifier")


def _onnx_part(path: str, part: str) -> nn.Module:
    """An ONNX network (generator or classifier) as a GraphModule keeping its declared shapes;
    its weights as frozen parameters, so code that reads a part's dtype from them sees them."""
    from auditai.onnx_graph import load_onnx_graph

    gm = load_onnx_graph(path, path)
    for name, t in list(gm.named_buffers()):
        if t.is_floating_point():
            delattr(gm, name)
            gm.register_parameter(name, nn.Parameter(t, requires_grad=False))
    return gm


def load_part(source: Any, part: str, *, trust_pickle: bool = False) -> nn.Module:
    """A decoder or classifier from `source`: an nn.Module, an .onnx file (read into the graph
    IR, no code runs), an auditai model file holding that part, or package.module:attribute
    naming an nn.Module, an AuditModel holding that part, or a function returning either.
    Raises TargetError naming the source and the part when none is found there."""
    from pathlib import Path

    from auditai.errors import ModelFileError
    from auditai.model import AuditModel, load_model
    from auditai.model_load import _PY_SOURCE
    from auditai.python_ref import import_attribute

    if part not in PARTS:
        raise TargetError(f"unknown model part {part!r}; expected one of {PARTS}")
    obj: Any = source
    where = str(source)
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_file() and path.suffix.lower() == ".onnx":
            return _onnx_part(str(path), part)
        if path.exists():
            obj = load_model(path, trust_pickle=trust_pickle)
        elif isinstance(source, str) and _PY_SOURCE.match(source):
            obj = import_attribute(source, ModelFileError)
            if callable(obj) and not isinstance(obj, (nn.Module, AuditModel)):
                obj = obj()
        else:
            raise ModelFileError(f"{source}: no such file (give the {part} as an .onnx file, an auditai model "
                                 "file, or package.module:attribute)")
    if isinstance(obj, AuditModel):
        got = getattr(obj, part, None)
        if got is None:
            raise TargetError(f"{where}: the model there has no {part}")
        return got
    if isinstance(obj, nn.Module):
        return obj
    raise TargetError(f"{where}: expected an nn.Module or an AuditModel with a {part}, got {type(obj).__name__}")


def _probe_shape(module: nn.Module, shape: tuple[int, ...], what: str, dtype: torch.dtype) -> tuple[int, ...]:
    """The per-sample output shape of `module` on two zero inputs of per-sample `shape`."""
    p = next(iter(module.parameters()), None)
    dt = p.dtype if p is not None and p.is_floating_point() else dtype
    was = module.training
    module.eval()
    try:
        with torch.no_grad():
            out = module(torch.zeros(2, *shape, dtype=dt, device=p.device if p is not None else None))
    except Exception as e:  # noqa: BLE001 - any failure means the sizes do not fit
        raise TargetError(f"{what} does not accept inputs of shape {tuple(shape)}: {e}") from None
    finally:
        module.train(was)
    if not isinstance(out, Tensor) or out.dim() < 2 or out.shape[0] != 2:
        raise TargetError(f"{what} must return one N×… tensor, got {type(out).__name__}")
    return tuple(int(s) for s in out.shape[1:])


def with_parts(model: Any, *, classifier: Any = None, decoder: Any = None, trust_pickle: bool = False) -> Any:
    """A new AuditModel: `model` with its decoder and/or classifier replaced by the given parts
    (modules or sources, see `load_part`); `model` itself is unchanged. Validated: the decoder
    takes the model's latent codes (N×d), the classifier takes the decoder's images and returns
    N×m scores; a mismatch is a TargetError naming the part and both shapes."""
    import hashlib

    from auditai.model import AuditModel

    if classifier is None and decoder is None:
        return model
    dec = model.decoder if decoder is None else load_part(decoder, "decoder", trust_pickle=trust_pickle)
    cls = model.classifier if classifier is None else load_part(classifier, "classifier", trust_pickle=trust_pickle)
    d = int(model.latent_dim)
    p = next(iter(model.head.parameters()), None)
    dtype = p.dtype if p is not None and p.is_floating_point() else torch.get_default_dtype()
    img = None
    if dec is not None:
        img = _probe_shape(dec, (d,), f"the decoder{'' if decoder is None else f' ({decoder})'}", dtype)
        if len(img) < 1:
            raise TargetError(f"the decoder outputs shape {img}, not images")
    if cls is not None:
        if img is None:
            raise TargetError("a classifier is verified on the decoder's images: give a decoder too "
                              "(--auditai-decoder / --decoder, or a model with one)")
        gin = getattr(getattr(cls, "graph", None), "in_shape", None)  # an ONNX graph declares its input
        if gin is not None and tuple(gin) != tuple(img):
            raise TargetError(f"the classifier{'' if classifier is None else f' ({classifier})'} takes inputs of "
                              f"shape {tuple(gin)} but the decoder outputs images of shape {img}")
        out = _probe_shape(cls, img, f"the classifier{'' if classifier is None else f' ({classifier})'} "
                                     f"(on the decoder's images)", dtype)
        if len(out) != 1:
            raise TargetError(f"the classifier must output N×m scores, got per-image shape {out}")
    new = AuditModel(
        model.head, encoder=model.encoder, decoder=dec,
        directions={k: (v, model.direction_descriptions.get(k, "")) for k, v in model.directions.items()},
        dims=dict(model.dims), class_names=model.class_names, metadata=dict(model.metadata),
        input_shape=model.input_shape, latent_dim=d, classifier=cls,
    )
    h = hashlib.sha256(str(model.content_hash or "").encode())
    for name, m in (("decoder", dec), ("classifier", cls)):
        if m is None:
            continue
        h.update(b"\0" + name.encode())
        for k, v in sorted(m.state_dict().items()):
            h.update(k.encode() + b"\0" + v.detach().cpu().contiguous().numpy().tobytes())
    new.content_hash = h.hexdigest()
    extra = [f"{n}={src}" for n, src in (("decoder", decoder), ("classifier", classifier))
             if src is not None and not isinstance(src, nn.Module)]
    new.source = str(model.source) + (f" + {', '.join(extra)}" if extra else "")
    return new


__all__ = ["PARTS", "TARGETS", "DecodedClassifier", "TargetError", "attach_images", "compose_graphs", "load_part",
           "target_module", "with_parts"]
