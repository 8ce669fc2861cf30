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


__all__ = ["TARGETS", "DecodedClassifier", "TargetError", "attach_images", "compose_graphs", "target_module"]
