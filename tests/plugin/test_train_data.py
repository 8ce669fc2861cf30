"""Deployment ranges come from the training data's codes when a suite (`train_data:`) or
--auditai-train-data names them (paper §2.4), else from the evaluation data, and say which."""

import json

import numpy as np

from .conftest import PASSING_SUITE


def _deployment(report_path) -> dict:
    sheet = json.loads(report_path.read_text())
    return {u["name"]: u["deployment"] for u in sheet["unit_tests"]}


def _write_train(path, shift: float) -> np.ndarray:
    z = np.zeros((6, 4), dtype=np.float32)
    z[:, 0] = shift + np.arange(6, dtype=np.float32)  # the 'pose' coordinate
    np.savez(path, z=z, y=np.zeros(6, dtype=np.int64))
    return z[:, 0]


def test_suite_train_data_gives_the_ranges(tiny):
    t = _write_train(tiny.path / "train.npz", 10.0)
    tiny.makefile(".yaml", auditai_tiny=PASSING_SUITE.replace(
        "data: tinymodel:DATA\n", "data: tinymodel:DATA\ntrain_data: train.npz\n"))
    # --auditai-data replaces the evaluation data only, never the training data
    tiny.runpytest("--auditai-device=cpu", "--auditai-data=tinymodel:DATA",
                   "--auditai-report=r.json").assert_outcomes(passed=3)
    dep = _deployment(tiny.path / "r.json")["pose"]
    assert dep["source"].startswith("training data") and dep["n_codes"] == 6
    assert abs(dep["mean"][0] - float(t.mean())) < 1e-5
    assert abs(dep["std"][0] - float(t.std())) < 1e-5


def test_option_overrides_and_default_is_the_evaluation_data(tiny):
    tiny.makefile(".yaml", auditai_tiny=PASSING_SUITE)
    tiny.runpytest("--auditai-device=cpu", "--auditai-report=eval.json").assert_outcomes(passed=3)
    dep = _deployment(tiny.path / "eval.json")["pose"]
    assert dep["source"].startswith("evaluation data") and dep["n_codes"] == 8
    t = _write_train(tiny.path / "other.npz", -3.0)
    tiny.runpytest("--auditai-device=cpu", "--auditai-train-data=other.npz",
                   "--auditai-report=train.json").assert_outcomes(passed=3)
    dep = _deployment(tiny.path / "train.json")["pose"]
    assert dep["source"].startswith("training data") and abs(dep["mean"][0] - float(t.mean())) < 1e-5
