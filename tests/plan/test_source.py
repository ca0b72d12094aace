"""Where models come from. `{job: NAME}`: the spec called NAME beside this one, and only runs made from it
(issue 10: a spec of the same name in a subfolder shares `<runs>/NAME/`, and its run was taken)."""

import json
from pathlib import Path

import pytest

from runner.errors import RunnerError
from runner.fsutil import file_sha256
from runner.plan.source import latest_succeeded_run, locate
from runner.spec.models import ModelSource

SPEC = "version: 1\nname: g02\nmethod: sft\nbase_model: ./model\ndata: {train: d.jsonl}\n"


def a_run(root: Path, run_id: str, spec: Path, finished_at: str, *, source: Path | None = None) -> Path:
    run = root / "runs" / "g02" / run_id
    (run / "model").mkdir(parents=True)
    inputs = {"spec_path": str(spec.resolve()), "spec_sha256": file_sha256(spec),
              "spec_source": str(source.resolve()) if source else None}
    (run / "manifest.json").write_text(json.dumps({
        "name": "g02", "run_id": run_id, "state": "succeeded", "finished_at": finished_at,
        "timings": {"started_at": finished_at}, "plan": {"inputs": inputs}}))
    return run


def test_a_job_reference_takes_only_runs_of_the_spec_it_names(tmp_path):
    mine, other = tmp_path / "specs" / "g02.yaml", tmp_path / "specs" / "other" / "g02.yaml"
    other.parent.mkdir(parents=True)
    mine.write_text(SPEC)
    other.write_text(SPEC + "# another spec of the same name\n")
    own = a_run(tmp_path, "1-own", mine, "2026-01-01T00:00:00")
    a_run(tmp_path, "2-other", other, "2026-06-01T00:00:00")  # newer, but of the other spec
    assert latest_succeeded_run(mine.parent, "g02", tmp_path) == own
    assert latest_succeeded_run(other.parent, "g02", tmp_path).name == "2-other"


def test_a_daemon_run_counts_through_its_source_and_a_renamed_spec_through_its_bytes(tmp_path):
    spec = tmp_path / "specs" / "g02.yaml"
    spec.parent.mkdir()
    spec.write_text(SPEC)
    snapshot = tmp_path / "state" / "snapshots" / "abc.yaml"
    snapshot.parent.mkdir(parents=True)
    snapshot.write_text(SPEC + "# older content\n")
    daemon_run = a_run(tmp_path, "1-daemon", snapshot, "2026-01-01T00:00:00", source=spec)
    assert latest_succeeded_run(spec.parent, "g02", tmp_path) == daemon_run
    renamed = tmp_path / "specs" / "was-elsewhere.yaml"
    renamed.write_text(SPEC)
    moved = a_run(tmp_path, "2-moved", renamed, "2026-02-01T00:00:00")  # the same bytes as g02.yaml
    renamed.unlink()
    assert latest_succeeded_run(spec.parent, "g02", tmp_path) == moved


def test_no_run_of_the_named_spec_says_so(tmp_path):
    other = tmp_path / "specs" / "other" / "g02.yaml"
    other.parent.mkdir(parents=True)
    other.write_text(SPEC)
    (tmp_path / "specs" / "g02.yaml").write_text(SPEC + "# mine\n")
    a_run(tmp_path, "1-other", other, "2026-01-01T00:00:00")
    with pytest.raises(RunnerError, match="has no succeeded run"):
        latest_succeeded_run(tmp_path / "specs", "g02", tmp_path)


def test_a_hub_model_that_is_nowhere_says_how_to_download_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RunnerError, match="not in the local hub cache") as error:
        locate(ModelSource(hub="someorg/some-model"), tmp_path, tmp_path)
    assert "hf download someorg/some-model" in error.value.hint and "huggingface-cli" not in error.value.hint


def test_a_sparse_terabyte_tokenizer_is_refused_before_it_is_read(tmp_path):
    """A 1 GB sparse tokenizer.json was read whole by plan (5.4 GB, a traceback)."""
    from runner.plan.source import load_tokenizer

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "llama"}')
    with open(model / "tokenizer.json", "wb") as handle:
        handle.truncate(1 << 40)
    with pytest.raises(RunnerError, match="tokenizer.json is 1,099,511,627,776 bytes"):
        load_tokenizer(locate(ModelSource.model_validate("./model"), tmp_path, tmp_path))
