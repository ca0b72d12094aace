import pytest

from runner.errors import RunnerError
from runner.plan.source import locate
from runner.spec.models import ModelSource


def test_a_hub_model_that_is_nowhere_says_how_to_download_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RunnerError, match="not in the local hub cache") as error:
        locate(ModelSource(hub="someorg/some-model"), tmp_path, tmp_path)
    assert "hf download someorg/some-model" in error.value.hint and "huggingface-cli" not in error.value.hint
