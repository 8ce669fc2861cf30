"""One finished chunk on disk: a safetensors file of its per-sample arrays plus a JSON header.

    verdicts          int8    (c, E)   +1 verified, −1 falsified, 0 unknown
    certified_radius  float64 (c,)     only when the unit test bisects radii
    cex_sample, cex_eps_index, cex_row, cex_row_name   int64 (m,)   counterexamples (sample
    cex_eps, cex_margin                                float64 (m,) index within the chunk)
    cex_delta, cex_z, cex_outputs                      float64 (m, ·)

The header (safetensors metadata key "auditai") holds the chunk's identity (unit test, k,
start, stop, seed), the result's scalar fields (ε list, method, spec, clean error, time...)
and the distinct spec row names that `cex_row_name` indexes. Reading one is a single file read
and no per-sample Python object: the merge concatenates the arrays.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

CHUNK_SCHEMA = "auditai.chunk/2"
CHUNK_SUFFIX = ".safetensors"
#: the scalar fields of a VerificationResult a chunk header keeps
SCALARS = ("eps", "method", "spec", "set_description", "norm", "n", "clean_error", "max_radius",
           "time_s", "device", "engine", "precision", "notes")
CEX_INT = ("sample", "eps_index", "row")
CEX_FLOAT = ("eps", "margin")
CEX_VEC = ("delta", "z", "outputs")


class ChunkFileError(ValueError):
    """A chunk file that cannot be decoded (the caller names the file)."""


@dataclass
class ChunkData:
    """A decoded chunk: its header and its arrays (see the module docstring)."""

    header: dict
    tensors: dict[str, Tensor]

    @property
    def result(self) -> dict:
        return self.header["result"]

    @property
    def n_cex(self) -> int:
        t = self.tensors.get("cex_sample")
        return 0 if t is None else int(t.numel())


def encode_chunk(identity: dict, result: Any) -> bytes:
    """The bytes of a chunk file: `identity` (unit_test, k, start, stop, seed) and a
    `VerificationResult` (object; its counterexamples are turned into arrays)."""
    from safetensors.torch import save

    tensors: dict[str, Tensor] = {"verdicts": result.verdicts.to(torch.int8).contiguous()}
    if result.certified_radius is not None:
        tensors["certified_radius"] = result.certified_radius.detach().to("cpu", torch.float64).contiguous()
    cex = list(result.counterexamples)
    row_names: list[str] = []
    if cex:
        index: dict[str, int] = {}
        for name in CEX_INT:
            tensors[f"cex_{name}"] = torch.tensor([int(getattr(c, name)) for c in cex], dtype=torch.int64)
        for name in CEX_FLOAT:
            tensors[f"cex_{name}"] = torch.tensor([float(getattr(c, name)) for c in cex], dtype=torch.float64)
        for name in CEX_VEC:
            tensors[f"cex_{name}"] = torch.tensor([list(getattr(c, name)) for c in cex], dtype=torch.float64)
        tensors["cex_row_name"] = torch.tensor([index.setdefault(str(c.row_name), len(index)) for c in cex],
                                               dtype=torch.int64)
        row_names = list(index)
    header = {"schema": CHUNK_SCHEMA, **identity, "row_names": row_names,
              "result": {k: getattr(result, k) for k in SCALARS}}
    return save(tensors, metadata={"auditai": json.dumps(header, allow_nan=False)})


def decode_chunk(data: bytes) -> ChunkData:
    """Inverse of `encode_chunk` (raises ChunkFileError on anything malformed)."""
    from safetensors.torch import load

    try:
        (size,) = struct.unpack("<Q", data[:8])
        meta = json.loads(data[8:8 + size].decode("utf-8")).get("__metadata__") or {}
        header = json.loads(meta["auditai"])
        tensors = load(data)
    except Exception as e:  # noqa: BLE001 (any decoding failure is a bad file)
        raise ChunkFileError(f"not a chunk file ({type(e).__name__}: {e})") from None
    if not isinstance(header, dict) or header.get("schema") != CHUNK_SCHEMA:
        raise ChunkFileError(f"chunk header schema {header.get('schema') if isinstance(header, dict) else None!r}, "
                             f"expected {CHUNK_SCHEMA!r}")
    return ChunkData(header, tensors)


def read_chunk_file(path: Path) -> ChunkData:
    """Decode the chunk file at `path` (OSError and ChunkFileError propagate)."""
    return decode_chunk(path.read_bytes())
