import json

from runner.cli import main
from tests.helpers import TINY_SPEC


def test_plan_text_json_and_saved_file(tiny_project, tmp_path, capsys):
    spec = tiny_project(TINY_SPEC)
    out = tmp_path / "plan.json"
    assert main(["plan", str(spec), "--out", str(out), "--runs-dir", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "What is trained:" in text and "Which tokens the loss covers:" in text and "Memory per device" in text
    assert "  objective    next-token cross-entropy on the trained tokens" in text
    assert f"runner run --plan {out}" in text
    saved = json.loads(out.read_text())
    assert saved["name"] == "tiny" and saved["settings"]["training"]["batch_size"]["value"] == 8
    assert main(["plan", str(spec), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["trainable"]["mode"] == "full"


def test_plan_of_an_invalid_spec_prints_the_diagnostics(tiny_project, capsys):
    spec = tiny_project(TINY_SPEC + "training:\n  epochs: many\n")
    assert main(["plan", str(spec)]) == 1
    assert "training.epochs: expected a number > 0 or 'auto', got 'many'" in capsys.readouterr().out


def test_plan_usage_errors(tmp_path, capsys):
    assert main(["plan", str(tmp_path / "absent.yaml")]) == 2
