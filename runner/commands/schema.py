"""`runner schema`: write the JSON Schemas of the spec (and of plans and manifests) from the models."""

from __future__ import annotations

import json
from pathlib import Path

from runner.errors import ExitCode


def schemas() -> dict[str, dict]:
    from runner.launch.slurm import SlurmConfig
    from runner.manifest import Manifest
    from runner.plan.models import Plan
    from runner.spec.fielddocs import describe_schema
    from runner.spec.models import JobSpec

    header = {"$schema": "https://json-schema.org/draft/2020-12/schema"}
    job = {**header, "title": "runner job spec", **describe_schema(JobSpec.model_json_schema(), "JobSpec")}
    plan = {**header, "title": "runner plan", **Plan.model_json_schema()}
    manifest = {**header, "title": "runner result manifest", **Manifest.model_json_schema()}
    slurm = {**header, "title": "runner Slurm settings (~/.config/runner/slurm.yaml)",
             **SlurmConfig.model_json_schema()}
    return {"job.schema.json": job, "plan.schema.json": plan, "manifest.schema.json": manifest,
            "slurm.schema.json": slurm}


def render(schema: dict) -> str:
    return json.dumps(schema, indent=2, sort_keys=False) + "\n"


def write_schemas(folder: str = "schemas", check: bool = False) -> int:
    """Write every schema into `folder`; with `check`, only report the ones that are stale."""
    target = Path(folder)
    stale = []
    for name, schema in schemas().items():
        path = target / name
        text = render(schema)
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            continue
        stale.append(path)
        if not check:
            target.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    verb = "stale" if check else "written"
    for path in stale:
        print(f"{path}: {verb}")
    if check and stale:
        print("run `runner schema` and commit the result")
        return ExitCode.INVALID
    if not stale:
        print(f"schemas in {target} are up to date")
    return ExitCode.OK
