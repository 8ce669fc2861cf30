"""`auditai verify` without a gate measures (report-only), checks its files before anything
else, and takes the engine from --engine, else the suite's `engine:`."""

import json

import pytest

from auditai.bounds.lirpa import auto_lirpa_available
from auditai.cli import main

from .conftest import MODEL_MODULE, PASSING_SUITE

ONE = ("--model", "tinymodel:MODEL", "--data", "tinymodel:DATA", "--device", "cpu")


@pytest.fixture
def folder(tmp_path, monkeypatch):
    (tmp_path / "tinymodel.py").write_text(MODEL_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_unit_test_without_a_gate_is_measured_and_passes(folder, capsys):
    code = main(["verify", *ONE, "--name", "pose", "--direction", "pose", "--eps", "0.5", "1.0",
                 "--report", "r.json"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "FAIL" not in out and "gate(s) failed" not in out
    (ut,) = json.loads((folder / "r.json").read_text())["unit_tests"]
    assert ut["name"] == "pose"
    assert [(r["eps"], r["verified_error"], r["gated"], r["passed"]) for r in ut["rows"]] == [
        (0.5, 0.25, False, None), (1.0, 0.5, False, None)]


def test_a_suite_unit_test_without_a_gate_is_report_only(folder, capsys):
    (folder / "s.yaml").write_text(PASSING_SUITE.replace("    max_verified_error: 0.6\n", ""))
    assert main(["verify", "s.yaml", "--device", "cpu", "--report", "r.json"]) == 0
    rows = {u["name"]: u["rows"] for u in json.loads((folder / "r.json").read_text())["unit_tests"]}
    assert [r["gated"] for r in rows["pose"]] == [False, False, False]
    assert [r["gated"] for r in rows["light"]] == [True]


@pytest.mark.parametrize("missing", ["--model", "--data"])
def test_a_missing_file_is_reported_before_the_unit_test_options(folder, capsys, missing):
    args = dict(zip(ONE[::2], ONE[1::2]))
    args[missing] = "nowhere.pt"
    argv = ["verify", *[x for kv in args.items() for x in kv], "--eps", "1"]  # and no latent set
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nowhere.pt" in err and "no such file" in err, err
    assert "latent set" not in err and "gate" not in err


def test_engine_option_beats_the_suite_key(folder, capsys):
    ok, why = auto_lirpa_available()
    if not ok:
        pytest.skip(why)
    (folder / "s.yaml").write_text(PASSING_SUITE.replace("spec: label\n", "spec: label\nengine: auto_lirpa\n"))
    assert main(["verify", "s.yaml", "--device", "cpu", "--report", "a.json"]) == 0
    assert main(["verify", "s.yaml", "--device", "cpu", "--engine", "auditai", "--report", "b.json"]) == 0
    a = json.loads((folder / "a.json").read_text())
    b = json.loads((folder / "b.json").read_text())
    assert a["engine"] == "auto_lirpa" and {u["engine"] for u in a["unit_tests"]} == {"auto_lirpa"}
    assert b["engine"] == "auditai" and {u["engine"] for u in b["unit_tests"]} == {"auditai"}
    # same numbers from both engines on this linear head
    assert [r["verified_error"] for u in a["unit_tests"] for r in u["rows"]] == [
        r["verified_error"] for u in b["unit_tests"] for r in u["rows"]]


def test_an_unknown_engine_is_a_usage_error(folder, capsys):
    with pytest.raises(SystemExit) as e:
        main(["verify", *ONE, "--direction", "pose", "--eps", "1", "--engine", "lirpa"])
    assert e.value.code == 2
    assert "invalid choice: 'lirpa'" in capsys.readouterr().err
