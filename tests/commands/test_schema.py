import json

import jsonschema
import yaml

from runner.cli import main
from runner.commands.schema import render, schemas
from tests.conftest import REPO


def test_committed_schemas_are_fresh():
    for name, schema in schemas().items():
        committed = (REPO / "schemas" / name).read_text()
        assert committed == render(schema), f"schemas/{name} is stale: run `runner schema` and commit it"


def test_check_mode_reports_stale_schemas(tmp_path, capsys):
    assert main(["schema", "--dir", str(tmp_path), "--check"]) == 1
    assert main(["schema", "--dir", str(tmp_path)]) == 0
    assert main(["schema", "--dir", str(tmp_path), "--check"]) == 0


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
