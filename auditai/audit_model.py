"""The audited model f = f_d ∘ e (paper §2.1, Fig. 1): encoder, head, decoder, classifier, named sets.

`AuditModel` only holds and checks the parts; reading and writing them is the model file's
(`auditai.model_file`, `auditai.model_load`); `auditai.model` offers all of it under one name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from auditai.errors import InputTypeError, ModelError
from auditai.modes import _enter_eval, _probe, _restore


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
