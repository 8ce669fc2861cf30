"""One vocabulary (auditai.names): the same spellings of methods, engines, spec kinds and norms
are accepted, and the same ones refused with a suggestion, by the engine, `verify`, the YAML
suite, the `unit_test` decorator, the CLI and the pytest plugin's options."""

from __future__ import annotations

import argparse
import math
import textwrap

import pytest
import torch
from torch import nn

from auditai import names
from auditai.errors import AuditaiError, ChoiceError, SpecError, SuiteError

SUITE = textwrap.dedent(
    """\
    suite: tiny
    model: m.pt
    data: d.pt
    spec: {spec}
    method: {method}
    engine: {engine}
    unit_tests:
      - name: pose
        direction: pose
        norm: {norm}
        eps: 1.0
        max_verified_error: 0.5
    """
)


def _suite(spec="label", method="crown-ibp", engine="auditai", norm="inf"):
    from auditai.suite import parse_suite

    return parse_suite(SUITE.format(spec=spec, method=method, engine=engine, norm=norm), "auditai_v.yaml")


def _head_and_set():
    from auditai.latent import Dims

    head = nn.Sequential(nn.Linear(3, 2)).double()
    return head, Dims([0, 1], "inf").make(torch.zeros(2, 3, dtype=torch.float64), 0.1)


def _cli_parser() -> argparse.ArgumentParser:
    from auditai.commands.verify import add_arguments

    parser = argparse.ArgumentParser(prog="auditai verify", exit_on_error=False)
    add_arguments(parser)
    return parser


# ------------------------------------------------------------------ the one list of each
def test_every_module_names_the_same_lists():
    import pytest_auditai.options as opt
    from auditai import bounds, spec, suite, verify
    from auditai.bounds import engine
    from auditai.sheet import coords

    assert engine.METHODS is names.BOUND_METHODS and bounds.METHODS is names.BOUND_METHODS
    assert suite.METHODS is names.METHODS and verify.VERIFY_METHODS is names.METHODS
    assert opt.METHODS is names.METHODS
    assert bounds.ENGINES is names.ENGINES and suite.ENGINES is names.ENGINES and opt.ENGINES is names.ENGINES
    assert spec.SPEC_KINDS is names.SPEC_KINDS and suite.SPECS is names.SPEC_KINDS
    assert coords.SET_KINDS is names.SET_KINDS and suite.SET_KEYS is names.SET_KINDS
    assert suite.NORMS is names.NORM_NAMES


def test_a_new_bound_method_is_one_line():
    """METHODS is the bound methods plus "complete", so a method added to BOUND_METHODS is taken
    by verify, the suite, the CLI and the plugin too."""
    assert names.METHODS == (*names.BOUND_METHODS, "complete")
    assert names.DEFAULT_METHOD in names.BOUND_METHODS and names.DEFAULT_SPEC in names.SPEC_KINDS


# ------------------------------------------------------------------ the parsers
@pytest.mark.parametrize("value, canonical", [("crown-ibp", "crown-ibp"), (" CROWN ", "crown"),
                                              ("Complete", "complete"), ("ibp", "ibp")])
def test_methods_in_any_case(value, canonical):
    assert names.parse_method(value) == canonical


@pytest.mark.parametrize("value", ["crown_ibp", "crownibp", "backward", "", None, 3])
def test_other_method_spellings_are_refused(value):
    with pytest.raises(ChoiceError) as info:
        names.parse_method(value)
    assert isinstance(info.value, ValueError) and isinstance(info.value, AuditaiError)
    assert "expected one of 'ibp', 'crown-ibp', 'crown', 'alpha-crown', 'complete'" in str(info.value)
    assert "\n" not in str(info.value)


def test_a_near_miss_gets_a_suggestion():
    with pytest.raises(ChoiceError, match="did you mean 'crown-ibp'"):
        names.parse_method("crown_ibp")
    with pytest.raises(ChoiceError, match="did you mean 'auto_lirpa'"):
        names.parse_engine("auto-lirpa")
    with pytest.raises(ChoiceError, match="did you mean 'prediction'"):
        names.parse_spec_kind("predicton")
    with pytest.raises(ChoiceError, match="did you mean 'dims'"):
        names.parse_set_kind("dim")


def test_complete_is_not_a_bound_method():
    with pytest.raises(ChoiceError, match="unknown bound method 'complete'"):
        names.parse_bound_method("complete")


@pytest.mark.parametrize("value, p", [("inf", math.inf), ("linf", math.inf), ("Infinity", math.inf),
                                      (math.inf, math.inf), ("2", 2.0), (2, 2.0),
                                      (2.0, 2.0), ("2.0", 2.0), ("L2", 2.0), ("1", 1.0), ("l1", 1.0)])
def test_norm_spellings(value, p):
    assert names.parse_norm(value) == p
    assert names.canonical_norm(value) == names.norm_name(p) and names.canonical_norm(value) in names.NORM_NAMES


@pytest.mark.parametrize("value", [3, "3", "l3", "euclid", True, None, 0.5])
def test_other_norms_are_refused(value):
    with pytest.raises(ChoiceError, match="unknown norm"):
        names.parse_norm(value)


# ------------------------------------------------------------------ the same spellings everywhere
def test_yaml_takes_the_same_spellings():
    s = _suite(spec="Band", method=" CROWN", engine="AUTO_LIRPA", norm="infinity")
    (ut,) = s.unit_tests
    assert (ut.spec, ut.method, ut.norm, s.engine) == ("band", "crown", "inf", "auto_lirpa")
    assert _suite(norm="linf").unit_tests[0].norm == "inf" and _suite(norm="2.0").unit_tests[0].norm == "2"


@pytest.mark.parametrize("key, kwargs, hint", [
    ("method", {"method": "crown_ibp"}, "did you mean 'crown-ibp'"),
    ("engine", {"engine": "auto-lirpa"}, "did you mean 'auto_lirpa'"),
    ("spec", {"spec": "predicton"}, "did you mean 'prediction'"),
    ("norm", {"norm": "l3"}, "expected a norm"),
])
def test_yaml_refuses_the_same_spellings(key, kwargs, hint):
    with pytest.raises(SuiteError) as info:
        _suite(**kwargs)
    assert info.value.key == key and hint in str(info.value)
    assert str(info.value).startswith(f"auditai_v.yaml:{info.value.line} key '{key}'")


def test_the_decorator_takes_the_same_spellings():
    from auditai.suite import TAG, unit_test

    ut = getattr(unit_test(dims=[0], norm="Infinity", eps=1.0, method="CROWN-IBP", spec="Label")(lambda: None), TAG)
    assert (ut.norm, ut.method, ut.spec) == ("inf", "crown-ibp", "label")
    with pytest.raises(SuiteError, match="did you mean 'crown-ibp'"):
        unit_test(dims=[0], eps=1.0, method="crown_ibp")


def test_the_engine_takes_the_same_spellings():
    from auditai.bounds import bound

    head, s = _head_and_set()
    lo, up = bound(head, s, method="CROWN-IBP", engine=" auditai ")
    lo2, up2 = bound(head, s, method="crown-ibp", engine="auditai")
    assert torch.equal(lo, lo2) and torch.equal(up, up2)
    for kwargs, hint in (({"method": "crown_ibp"}, "did you mean 'crown-ibp'"),
                         ({"method": "complete"}, "unknown bound method"),
                         ({"engine": "auto-lirpa"}, "did you mean 'auto_lirpa'")):
        with pytest.raises(ChoiceError, match=hint):
            bound(head, s, **kwargs)


def test_verify_takes_the_same_spellings():
    from auditai.latent import Dims
    from auditai.verify import verify

    head = nn.Sequential(nn.Linear(3, 2)).double()
    z0, y = torch.zeros(2, 3, dtype=torch.float64), torch.tensor([0, 1])
    r = verify(head, z0, y, Dims([0], "Infinity"), [0.1], spec="LABEL", method="IBP", attack=False, radius=False)
    assert r.method == "ibp"
    with pytest.raises(ChoiceError, match="did you mean 'crown-ibp'"):
        verify(head, z0, y, Dims([0]), [0.1], method="crown_ibp", attack=False, radius=False)
    with pytest.raises(SpecError, match="spec must be one of"):
        verify(head, z0, y, Dims([0]), [0.1], spec="lable", method="ibp", attack=False, radius=False)


def test_the_cli_takes_the_same_spellings():
    args = _cli_parser().parse_args(["--method", "CROWN", "--engine", "AUTO_LIRPA", "--norm", "infinity",
                                     "--spec", "Binary"])
    assert (args.method, args.engine, args.norm, args.spec) == ("crown", "auto_lirpa", "inf", "binary")


@pytest.mark.parametrize("argv, hint", [(["--method", "crown_ibp"], "did you mean 'crown-ibp'"),
                                        (["--norm", "l3"], "invalid norm 'l3'"),
                                        (["--spec", "predicton"], "did you mean 'prediction'"),
                                        (["--engine", "lirpa"], "invalid choice: 'lirpa'")])
def test_the_cli_refuses_the_same_spellings(argv, hint, capsys):
    from auditai.cli import main

    with pytest.raises(SystemExit) as e:
        main(["verify", *argv])
    assert e.value.code == 2
    assert hint in capsys.readouterr().err


def test_the_plugin_options_take_the_same_spellings():
    import pytest_auditai.options as opt

    assert opt.parse_method(" Crown-IBP") == "crown-ibp" and opt.parse_engine("Auto_LiRPA") == "auto_lirpa"
    with pytest.raises(argparse.ArgumentTypeError, match="invalid method 'crown_ibp'.*did you mean 'crown-ibp'"):
        opt.parse_method("crown_ibp")
    with pytest.raises(argparse.ArgumentTypeError, match="invalid engine 'auto-lirpa'.*did you mean 'auto_lirpa'"):
        opt.parse_engine("auto-lirpa")
