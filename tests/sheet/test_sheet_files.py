"""A spec-sheet argument that is not one (binary, empty, truncated, the wrong JSON) is one line
naming the file, exit status 2, for `auditai check` and `auditai diff`; and every report is
written with the mode the umask gives (not the temporary file's 0o600), as model files are."""

from __future__ import annotations

import io
import os
import stat
import zipfile

import pytest

from auditai.cli import main
from auditai.sheet import write_atomic


def _zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("archive/data.pkl", b"\x80\x04K\x01.")
    return buf.getvalue()


BAD = {
    "random.bin": (bytes(range(256)) * 4, "not UTF-8 text"),
    "model.pt": (_zip(), "not UTF-8 text"),
    "latin1.json": ('{"name": "caf\xe9"}'.encode("latin-1"), "not UTF-8 text"),
    "empty.json": (b"", "not JSON"),
    "truncated.json": (b'{"schema": "auditai.spec-sheet/1", "unit_tests": [', "not JSON"),
    "list.json": (b"[1, 2, 3]", "expected an object"),
    "other.json": (b'{"hello": "world"}', "missing key"),
}


@pytest.mark.parametrize("name", sorted(BAD))
@pytest.mark.parametrize("command", ["check", "diff"])
def test_a_bad_sheet_is_one_line_and_status_2(tmp_path, capsys, monkeypatch, command, name):
    data, fragment = BAD[name]
    (tmp_path / name).write_bytes(data)
    (tmp_path / "z.npz").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    argv = ["check", "--sheet", name, "z.npz"] if command == "check" else ["diff", name, name]
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and name in lines[0] and fragment in lines[0], captured.err
    assert lines[0].startswith(f"auditai {command}: error: ")
    assert "Traceback" not in captured.err and captured.out == ""


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_reports_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        write_atomic(tmp_path / "sheet.json", "{}\n")
        write_atomic(tmp_path / "sheet.json", "{}\n")  # replacing a report: the same mode
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "sheet.json").stat().st_mode) == 0o666 & ~umask
    assert os.umask(old) == old  # the umask itself is left as it was
    assert [p.name for p in tmp_path.iterdir()] == ["sheet.json"]  # no temporary file left


def test_model_files_follow_the_umask(tmp_path):
    import torch
    from torch import nn

    from auditai.model import AuditModel, load_model, save_model

    model = AuditModel(nn.Sequential(nn.Linear(4, 2)), directions={"pose": torch.tensor([1.0, 0, 0, 0])})
    old = os.umask(0o002)
    try:
        save_model(tmp_path / "m.auditai", model)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "m.auditai").stat().st_mode) == 0o664
    assert load_model(tmp_path / "m.auditai").latent_dim == 4
