from __future__ import annotations

import pytest

from tests.helpers.random_models import write_random_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny random Llama checkpoint with its tokenizer (a test module may override it)."""
    return str(write_random_model(tmp_path_factory.mktemp("tiny"), "tiny-llama"))
