"""`auditai verify --precision` in a sharded run: recorded in the results and pinned in the
manifest (a resume with another precision is refused)."""

from __future__ import annotations

import json

from .conftest import cli, verify_args


def test_precision_is_recorded_and_pinned(tiny_dir, capsys):
    assert cli(verify_args("f32") + ["--precision", "float32"], tiny_dir) == 0
    res = json.loads((tiny_dir / "f32" / "results.json").read_text())
    assert res["manifest"]["precision"] == "float32"
    assert {t["result"]["precision"] for t in res["unit_tests"]} == {"float32"}
    capsys.readouterr()
    assert cli(verify_args("f32") + ["--precision", "float64"], tiny_dir) == 2
    err = capsys.readouterr().err
    assert "precision: this run 'float64', the folder 'float32'" in err
    # float64 (the CPU default) in its own folder: the same verdicts here (no borderline margins)
    assert cli(verify_args("f64"), tiny_dir) == 0
    r64 = json.loads((tiny_dir / "f64" / "results.json").read_text())
    assert r64["manifest"]["precision"] == "float64"
    assert [t["result"]["verdicts"] for t in r64["unit_tests"]] == [t["result"]["verdicts"] for t in res["unit_tests"]]
