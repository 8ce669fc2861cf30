"""The fixtures, and latent codes cached in pytest's cache across runs."""



def test_model_data_device_fixtures(tiny):
    tiny.makepyfile(test_fx='''
        def test_fx(auditai_model, auditai_data, auditai_device):
            assert auditai_model.latent_dim == 4 and sorted(auditai_model.directions) == ["light", "pose"]
            assert tuple(auditai_data.z.shape) == (8, 4)
            assert auditai_device == "cpu"
    ''')
    tiny.runpytest("--auditai-model=tinymodel:MODEL", "--auditai-data=tinymodel:DATA",
                   "--auditai-device=cpu").assert_outcomes(passed=1)


def test_ini_configuration_and_missing_model(tiny):
    tiny.makeini("[pytest]\nauditai_model = tinymodel:MODEL\nauditai_data = tinymodel:DATA\n"
                 "auditai_device = cpu\n")
    tiny.makepyfile(test_fx="def test_fx(auditai_model):\n    assert auditai_model.latent_dim == 4\n")
    tiny.runpytest().assert_outcomes(passed=1)
    tiny.makeini("[pytest]\n")
    result = tiny.runpytest()
    result.assert_outcomes(errors=1)
    assert "no model: set `model:` in the suite, --auditai-model" in result.stdout.str()


def test_latent_codes_are_cached_across_runs(tiny):
    tiny.makepyfile(test_fx='''
        def test_fx(auditai_data):
            assert tuple(auditai_data.z.shape) == (8, 4)
    ''')
    opts = ("--auditai-model=tinymodel:model_with_encoder", "--auditai-data=tinymodel:DATA_X",
            "--auditai-device=cpu")
    tiny.runpytest(*opts).assert_outcomes(passed=1)
    calls = (tiny.path / "encode_calls.txt").read_text().split()
    assert calls and sum(map(int, calls)) >= 8
    assert list((tiny.path / ".pytest_cache").rglob("auditai-latents/*.pt"))
    tiny.runpytest(*opts).assert_outcomes(passed=1)
    assert (tiny.path / "encode_calls.txt").read_text().split() == calls  # not encoded again


def test_auditai_verify_fixture(tiny):
    tiny.makepyfile(test_fx='''
        def test_imperative(auditai_verify):
            r = auditai_verify("pose_check", direction="pose", eps=[0.5, 1.0])
            assert r.verified_error == [0.25, 0.5]
    ''')
    result = tiny.runpytest("--auditai-model=tinymodel:MODEL", "--auditai-data=tinymodel:DATA",
                            "--auditai-device=cpu")
    result.assert_outcomes(passed=1)
    assert "pose_check" in result.stdout.str()
