"""`python -m auditai.demo.run` end to end at a tiny size: build, suites through pytest, sheets."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from auditai.demo import run


@pytest.mark.slow
def test_demo_runs_end_to_end_at_tiny_size(tmp_path, capsys):
    out, cache = tmp_path / "out", tmp_path / "cache"
    rc = run.main(["--out", str(out), "--size", "tiny", "--datasets", "shapes", "--jobs", "1",
                   "--heads", "normal", "--cache-dir", str(cache)])
    text = capsys.readouterr().out
    assert rc == 0, text
    # the model, the data and the three spec-sheets of the suite run
    for name in ("shapes_model.auditai", "shapes_certified.auditai", "shapes_test.npz",
                 "shapes_normal.json", "shapes_normal.md", "shapes_normal.html"):
        assert (out / name).is_file(), name
    sheet = json.loads((out / "shapes_normal.json").read_text())
    tests = {ut["name"] for ut in sheet["unit_tests"]}
    # every unit test of the YAML suite and the decorated test reached the sheet
    assert {"position-x", "position-y", "scale", "brightness", "rotation", "scale-exact"} <= tests
    html = (out / "shapes_normal.html").read_text()
    assert "image strip of rotation" in html  # the decoder and codes reached the renderer
    _check_black_box_rows(sheet, out, html)
    summary = json.loads((out / "demo_summary.json").read_text())
    assert [r["head"] for r in summary["runs"]] == ["normal"]
    # a failed gate (likely with a tiny model) is reported, not an error: exit 0 either way
    if summary["failed_gates"]:
        assert "failed gates" in text
    assert "spec-sheets" in text and "held-out R²" in text
    # the shifted split: Table 4's layout, the deployment report on the audited head's sheet,
    # and `auditai check --labels` on the shifted data (paper §4.2)
    assert "Deployment under domain shift" in (out / "table4.md").read_text()
    assert sheet["deployment"]["n_inputs"] == 128 and "Deployment report" in html
    from auditai.cli import main as cli

    rc = cli(["check", "--sheet", str(out / "shapes_normal.json"), "--model", str(out / "shapes_model.auditai"),
              "--labels", str(out / "shapes_shifted.npz")])
    assert rc in (0, 1) and "deployment report on 128 labelled input(s)" in capsys.readouterr().out
    # a second run into the same folder finds its files up to date and builds nothing
    rc = run.main(["--out", str(out), "--size", "tiny", "--datasets", "shapes", "--jobs", "1",
                   "--no-suites", "--cache-dir", str(cache)])
    assert rc == 0 and "up to date" in capsys.readouterr().out
    # into a fresh folder, the trained weights come from the cache
    rc = run.main(["--out", str(tmp_path / "again"), "--size", "tiny", "--datasets", "shapes",
                   "--jobs", "1", "--no-suites", "--cache-dir", str(cache)])
    assert rc == 0 and "reusing the trained VAE" in capsys.readouterr().out


def _check_black_box_rows(sheet: dict, out, html: str) -> None:
    """The black-box unit test (target: classifier) sits beside the head's test of the same
    direction and ε, with fractions in [0, 1] and, as clean error, the pixel CNN's error on the
    decoded test codes g(z) computed here from the saved model."""
    from auditai.model import load_model

    by_name = {ut["name"]: ut for ut in sheet["unit_tests"]}
    assert {"rotation", "rotation-pixel-cnn"} <= set(by_name)
    ut, head = by_name["rotation-pixel-cnn"], by_name["rotation"]
    assert ut["set"]["value"] == head["set"]["value"]  # the same direction in Z
    rows = ut["rows"]
    assert rows and {r["eps"] for r in rows} <= {r["eps"] for r in head["rows"]}
    for r in rows:
        for name in ("clean_error", "verified_error", "falsified_fraction", "unknown_fraction"):
            assert 0.0 <= r[name] <= 1.0, (name, r)
        # clean mistakes ⊆ falsified ⊆ not verified
        assert r["clean_error"] <= r["falsified_fraction"] + 1e-12 <= r["verified_error"] + 2e-12
    model = load_model(out / "shapes_model.auditai")
    data = np.load(out / "shapes_test.npz")
    with torch.no_grad():
        z = torch.from_numpy(data["z"])
        pred = model.classifier(model.decoder(z)).argmax(1).numpy()
    want = float(np.mean(pred != data["y"]))
    assert [r["clean_error"] for r in rows] == pytest.approx([want] * len(rows), abs=1e-9)
    if max(r["falsified_fraction"] for r in rows) > 0:  # a counterexample, with its image
        assert ut["counterexamples"] and "counterexamples of rotation-pixel-cnn" in html
        assert any(c.get("image") is not None for c in ut["counterexamples"])
