"""Chunk files (safetensors arrays + JSON header) and the vectorised merge, against the
per-sample merge they replace (Python lists concatenated in chunk order), plus the errors of
damaged, misplaced, overlapping and old-format run folders."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from auditai.distributed.chunkfile import decode_chunk, encode_chunk
from auditai.distributed.shard import (
    MANIFEST_SCHEMA,
    RunFolder,
    RunFolderError,
    floats_json,
    merge_results,
    plan,
    verdicts_json,
)
from auditai.model import load_model
from auditai.verify import verify

from .conftest import cli, verify_args
from .tiny import CHUNK, N_SAMPLES


def _chunk_results(tiny_dir: Path):
    """verify() on each chunk of the tiny data, 'pose' direction, 2 ε (falsified samples included)."""
    model = load_model(tiny_dir / "model.auditai")
    data = torch.load(tiny_dir / "data.pt")
    out = []
    for c in plan(["pose"], N_SAMPLES, CHUNK):
        res = verify(model.head, data["z"][c.start:c.stop], data["y"][c.start:c.stop],
                     _direction(model), [0.3, 1.0], spec="label", method="crown-ibp", seed=c.k)
        out.append((c, res))
    return out


def _direction(model):
    from auditai.suite import make_unit_test

    return make_unit_test({"name": "pose", "direction": "pose", "eps": [0.3, 1.0]}).set_kind(model)


def test_encode_decode_merge_equals_the_per_sample_merge(tiny_dir):
    parts = _chunk_results(tiny_dir)
    recs = [decode_chunk(encode_chunk({"unit_test": "pose", "k": c.k, "start": c.start, "stop": c.stop,
                                       "seed": c.k}, r)) for c, r in parts]
    m = merge_results(recs, N_SAMPLES, "pose")
    # the oracle: per-sample lists in chunk order, as the JSON merge built them
    verdicts = [row for _, r in parts for row in r.verdicts.tolist()]
    radius = [x for _, r in parts for x in r.certified_radius.tolist()]
    cex = [{**asdict(x), "sample": x.sample + c.start} for c, r in parts for x in r.counterexamples]
    assert len(cex) > 2, "the tiny data should have counterexamples"
    assert m.verdicts.tolist() == verdicts
    assert m.radius.tolist() == radius
    assert m.counterexample_dicts(range(len(cex))) == cex
    cols = list(zip(*verdicts))
    assert m.fields["falsified_fraction"] == [sum(v == -1 for v in col) / N_SAMPLES for col in cols]
    assert m.fields["verified_error"] == [1.0 - sum(v == 1 for v in col) / N_SAMPLES for col in cols]
    assert m.fields["unknown_fraction"] == [sum(v == 0 for v in col) / N_SAMPLES for col in cols]
    # the worst per ε: the first of the smallest margin, in chunk order
    for e in range(2):
        mine = [x for x in cex if x["eps_index"] == e]
        if mine:
            best = min(mine, key=lambda x: x["margin"])
            top = m.counterexample_dicts(m.top_per_eps(1))
            assert best in top and sum(x["eps_index"] == e for x in top) == 1


def test_a_sample_twice_or_missing_is_refused(tiny_dir):
    (c0, r0), (c1, r1) = _chunk_results(tiny_dir)[:2]
    enc = lambda c, r, s: decode_chunk(encode_chunk({"unit_test": "pose", "k": c.k, "start": s,
                                                     "stop": s + CHUNK, "seed": 0}, r))
    with pytest.raises(RunFolderError, match=r"sample 4 appears 2 times .*4 samples not exactly once"):
        merge_results([enc(c0, r0, 0), enc(c1, r1, 4)], 12, "pose")
    with pytest.raises(RunFolderError, match=r"sample 8 appears 0 times"):
        merge_results([enc(c0, r0, 0)], 12, "pose")


@pytest.fixture(scope="module")
def run(tiny_dir) -> Path:
    assert cli(verify_args("chunkfile-run"), tiny_dir) == 0
    return tiny_dir / "chunkfile-run"


def test_a_damaged_chunk_is_a_clear_error(run, tiny_dir, capsys):
    bad = tiny_dir / "damaged"
    shutil.copytree(run, bad)
    files = sorted((bad / "chunks").rglob("*.safetensors"))
    files[0].write_bytes(files[0].read_bytes()[:40])
    capsys.readouterr()
    assert cli(["merge", "damaged"], tiny_dir) == 2
    err = capsys.readouterr().err
    assert files[0].name in err and "not a chunk file" in err


def test_misplaced_chunk_names_both(run, tiny_dir, capsys):
    bad = tiny_dir / "misplaced"
    shutil.copytree(run, bad)
    folder = RunFolder(bad)
    c0, c2 = plan(["pose"], N_SAMPLES, CHUNK)[0], plan(["pose"], N_SAMPLES, CHUNK)[2]
    shutil.copyfile(folder.chunk_path(c2), folder.chunk_path(c0))
    capsys.readouterr()
    assert cli(["merge", "misplaced"], tiny_dir) == 2
    err = capsys.readouterr().err
    assert "holds chunk 2 of 'pose' (samples [16, 24)), expected chunk 0 of 'pose' ([0, 8))" in err


def test_an_old_format_run_folder_is_refused(run, tiny_dir, capsys):
    old = tiny_dir / "old-format"
    shutil.copytree(run, old)
    m = json.loads((old / "manifest.json").read_text())
    assert m["schema"] == MANIFEST_SCHEMA
    m["schema"] = "auditai.sharded-run/1"
    (old / "manifest.json").write_text(json.dumps(m))
    capsys.readouterr()
    for args in (["merge", "old-format"], verify_args("old-format")):
        assert cli(args, tiny_dir) == 2
        err = capsys.readouterr().err
        assert "a run folder of an older auditai" in err and "new --out folder" in err


def test_array_texts_read_back_as_json_dumps_would_write_them():
    g = torch.Generator().manual_seed(3)
    for E in (1, 2, 3, 9):
        v = torch.randint(-1, 2, (257, E), generator=g, dtype=torch.int8)
        assert json.loads(verdicts_json(v)) == v.tolist()
    x = torch.cat([torch.rand(100, generator=g, dtype=torch.float64) * 10.0 ** torch.randint(-300, 300, (100,), generator=g).double(),
                   torch.tensor([0.1, -0.0, 5e-324, 1.0, 2.0 ** 60])])
    assert floats_json(x) == json.dumps(x.tolist(), separators=(",", ":"))
    with pytest.raises(ValueError, match="not JSON compliant"):
        floats_json(torch.tensor([1.0, float("nan")]))
