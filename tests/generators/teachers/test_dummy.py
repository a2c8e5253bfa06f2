from generators.teachers.contract import Request, cut_at_stop
from generators.teachers.dummy import DummyTeacher


def _requests(n):
    return [Request(f"id{i}", ({"role": "user", "content": f"topic {i}"},)) for i in range(n)]


def test_dummy_is_deterministic_and_keeps_order():
    teacher = DummyTeacher(error_rate=0.1, truncate_rate=0.1, duplicate_rate=0.1)
    a, b = teacher.generate(_requests(200)), teacher.generate(_requests(200))
    assert [c.id for c in a] == [f"id{i}" for i in range(200)]
    assert [c.text for c in a] == [c.text for c in b]
    reasons = {c.finish_reason for c in a}
    assert reasons == {"stop", "length", "error"}
    texts = [c.text for c in a if c.finish_reason == "stop"]
    assert len(texts) - len(set(texts)) >= 5  # planted exact duplicates


def test_cut_at_stop_takes_earliest():
    assert cut_at_stop("a END b STOP c", ["STOP", "END"]) == ("a ", True)
    assert cut_at_stop("abc", ["x"]) == ("abc", False)


def test_sampling_from_config_rejects_unknown_keys():
    import pytest

    from generators.errors import ConfigError
    from generators.teachers.contract import SamplingParams

    assert SamplingParams.from_config({"stop": ["END"], "temperature": 0}).stop == ("END",)
    with pytest.raises(ConfigError, match=r"teacher.sampling: unknown keys \['temprature'\]"):
        SamplingParams.from_config({"temprature": 0.5})
