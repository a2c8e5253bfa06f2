import pytest

from generators.teachers.models import ModelSpecError, resolve


def test_embedded_teacher_is_found_without_importing_its_package():
    path = resolve("embedded:smollm2")
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000


@pytest.mark.parametrize("spec", ["/no/such/model", "org/some-model"])
def test_missing_model_names_key_and_fix(spec):
    with pytest.raises(ModelSpecError, match=r"^teacher\.model=.*(local model directory|hub ids need)"):
        resolve(spec, "teacher.model")


def test_directory_without_config_is_rejected(tmp_path):
    with pytest.raises(ModelSpecError, match="no config.json"):
        resolve(str(tmp_path), "teacher.model")


def test_hub_id_allowed_only_when_network_opted_in():
    assert resolve("org/some-model", allow_network=True) == "org/some-model"
