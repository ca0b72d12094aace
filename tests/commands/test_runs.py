import json

from runner.cli import main
from tests.test_runs import root  # noqa: F401  (a fixture)


def test_runs_lists_name_id_state_steps_loss_evals_when_and_size(root, capsys):  # noqa: F811
    assert main(["runs", "--runs-dir", str(root)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "run", "id", "state", "steps", "loss", "evals", "when", "size", "folder"]
    assert len(lines) == 5 and lines[2].split()[:5] == ["tiny", "20260101-000001-aaaa", "succeeded", "4", "0.5000"]
    assert "KB" in lines[2] and lines[2].endswith("runs/tiny/20260101-000001-aaaa")


def test_runs_of_one_name_as_json(root, capsys):  # noqa: F811
    assert main(["runs", "tiny", "--runs-dir", str(root), "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [run["state"] for run in report["runs"]] == ["succeeded", "succeeded", "failed"]
    assert report["runs"][2]["error"] == "boom" and report["runs"][0]["size_bytes"] > 1000


def test_logs_of_a_spec_name_show_its_latest_run(root, capsys, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("RUNNER_STATE_DIR", str(tmp_path / "no-daemon"))
    (root / "runs" / "tiny" / "20260101-000003-cccc" / "events.jsonl").write_text('{"event": "run_failed"}\n')
    assert main(["logs", "tiny", "--runs-dir", str(root)]) == 0
    assert capsys.readouterr().out == "run failed\n"  # as a person reads it
    assert main(["logs", "tiny", "--runs-dir", str(root), "--format", "json"]) == 0
    assert capsys.readouterr().out == '{"event": "run_failed"}\n'  # as written
    assert not (tmp_path / "no-daemon").exists()  # asking did not create a daemon's state
    assert main(["logs", "absent", "--runs-dir", str(root)]) == 1
