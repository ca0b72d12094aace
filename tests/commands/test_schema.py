import json

import jsonschema
import yaml

from runner.cli import main
from runner.commands.schema import generated, spec_reference
from tests.helpers import REPO


def test_committed_schemas_and_spec_reference_are_fresh():
    for path, text in generated(str(REPO / "schemas"), str(REPO / "docs")).items():
        assert path.read_text() == text, f"{path.relative_to(REPO)} is stale: run `runner schema` and commit it"


def test_check_mode_reports_stale_files(tmp_path, capsys):
    arguments = ["schema", "--dir", str(tmp_path / "schemas"), "--docs", str(tmp_path / "docs")]
    assert main([*arguments, "--check"]) == 1
    assert main(arguments) == 0
    assert main([*arguments, "--check"]) == 0
    (tmp_path / "docs" / "spec.md").write_text("# edited by hand\n")
    assert main([*arguments, "--check"]) == 1 and "spec.md: stale" in capsys.readouterr().out


def test_the_spec_reference_has_every_key_of_every_section():
    schema = json.loads((REPO / "schemas" / "job.schema.json").read_text())
    reference = spec_reference(schema)
    for name, definition in [("JobSpec", schema), *schema["$defs"].items()]:
        target = next((part for part in definition.get("anyOf", []) if "properties" in part), definition)
        for field in target.get("properties", {}):
            assert f"| `{field}` |" in reference, f"{name}.{field}"
    assert "| `learning_rate` | number (> 0) or `auto` | `auto` | Peak learning rate;" in reference
    assert "## `trainable.lora` (LoraSpec)" in reference and "| `method` | `distill` \\| `dpo` \\| `grpo`" in reference


def test_example_specs_satisfy_the_schema():
    schema = json.loads((REPO / "schemas" / "job.schema.json").read_text())
    for path in (REPO / "specs").rglob("*.yaml"):
        jsonschema.validate(yaml.safe_load(path.read_text()), schema)


def test_schema_rejects_unknown_keys():
    schema = json.loads((REPO / "schemas" / "job.schema.json").read_text())
    spec = yaml.safe_load((REPO / "specs" / "examples" / "chatty-sft.yaml").read_text())
    spec["training"]["lerning_rate"] = 1
    try:
        jsonschema.validate(spec, schema)
    except jsonschema.ValidationError as error:
        assert "lerning_rate" in error.message
    else:
        raise AssertionError("the schema accepted an unknown key")


def test_every_field_of_the_job_schema_has_a_description():
    schema = json.loads((REPO / "schemas" / "job.schema.json").read_text())
    undocumented = []
    for name, definition in [("JobSpec", schema), *schema["$defs"].items()]:
        target = next((part for part in definition.get("anyOf", []) if "properties" in part), definition)
        undocumented += [f"{name}.{field}" for field, prop in target.get("properties", {}).items()
                         if not prop.get("description")]
    assert not undocumented
    for method in ("orpo", "kto", "simpo"):
        assert method in schema["properties"]["method"]["enum"] and method in schema["properties"]
