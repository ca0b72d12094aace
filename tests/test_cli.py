import re

import yaml

from runner.cli import build_parser
from runner.spec.models import JobSpec
from tests.conftest import REPO


def test_every_command_has_a_description_in_its_help():
    commands = build_parser()._subparsers._group_actions[0].choices
    assert {"sample", "schema", "runs", "lock", "logs"} <= set(commands)
    for name, parser in commands.items():
        assert parser.description, f"runner {name} --help has no description"
        assert name in parser.format_help().splitlines()[0]


def test_the_readme_spec_example_is_a_valid_spec_with_samples():
    readme = (REPO / "README.md").read_text()
    block = re.search(r"## A spec\n\n```yaml\n(.*?)```", readme, re.S).group(1)
    spec = JobSpec.model_validate(yaml.safe_load(block))
    assert spec.samples and spec.outputs.report_to
