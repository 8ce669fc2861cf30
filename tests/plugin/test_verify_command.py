"""`auditai verify`: a suite or one unit test by options, without pytest; exit 1 on a failed gate."""

import pytest

from auditai.cli import main
from .conftest import FAILING_SUITE, MODEL_MODULE, PASSING_SUITE


@pytest.fixture
def folder(tmp_path, monkeypatch):
    (tmp_path / "tinymodel.py").write_text(MODEL_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_bad_single_test_is_a_usage_error(folder, capsys):
    assert main(["verify", "--model", "tinymodel:MODEL", "--data", "tinymodel:DATA", "--eps", "1"]) == 2
    assert "needs one latent set" in capsys.readouterr().err


def test_bad_suite_names_file_and_line(folder, capsys):
    (folder / "s.yaml").write_text(PASSING_SUITE.replace("eps: 1.0", "eps: one"))
    assert main(["verify", "s.yaml"]) == 2
    assert "s.yaml:14 key 'eps'" in capsys.readouterr().err


def test_suite_pass_and_fail(folder, capsys):
    (folder / "ok.yaml").write_text(PASSING_SUITE)
    (folder / "bad.yaml").write_text(FAILING_SUITE)
    assert main(["verify", "ok.yaml", "--device", "cpu", "--report", "r.json"]) == 0
    out = capsys.readouterr().out
    assert "pose" in out and "0.75" in out and (folder / "r.json").exists()
    assert main(["verify", "bad.yaml", "--device", "cpu"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_single_unit_test(folder, capsys):
    code = main(["verify", "--model", "tinymodel:MODEL", "--data", "tinymodel:DATA", "--device", "cpu",
                 "--direction", "pose", "--eps", "0.5", "--max-verified-error", "0.2"])
    assert code == 1
    assert "0.25" in capsys.readouterr().out
