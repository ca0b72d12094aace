import argparse
import re

import yaml

from runner.cli import build_parser
from runner.spec.models import spec_model
from tests.helpers import REPO


def test_every_command_has_a_description_in_its_help():
    commands = build_parser()._subparsers._group_actions[0].choices
    assert {"sample", "schema", "runs", "lock", "logs"} <= set(commands)
    for name, parser in commands.items():
        assert parser.description, f"runner {name} --help has no description"
        assert name in parser.format_help().splitlines()[0]


def test_the_readme_spec_example_is_a_valid_spec_with_samples():
    readme = (REPO / "README.md").read_text()
    block = re.search(r"Your own spec:.*?```yaml\n(.*?)```", readme, re.S).group(1)
    written = yaml.safe_load(block)
    spec = spec_model(written['method']).model_validate(written)
    assert spec.samples and spec.outputs.report_to


INTERNAL_OPTIONS = {"--source", "--runner-command"}
"""Options for runner's own processes (the daemon's worker, the tests' stand-in runner): not in --help."""


def test_every_argument_a_person_sees_says_what_it_is_and_internal_ones_are_hidden():
    parser = build_parser()
    top = parser.format_help()
    assert "SUPPRESS" not in top and "worker" not in top  # the daemon's planning worker is not for people
    for name, command in parser._subparsers._group_actions[0].choices.items():
        shown = command.format_help()
        assert "SUPPRESS" not in shown, name
        for action in command._actions:
            flags = set(action.option_strings)
            if flags & INTERNAL_OPTIONS:
                assert action.help == argparse.SUPPRESS and not flags & set(shown.split()), (name, flags)
            elif name != "worker":
                assert action.help, f"runner {name}: {action.metavar or action.dest} has no help"


def test_a_folder_after_watch_s_http_flag_is_named_as_the_mistake_it_is(tmp_path, capsys):
    from runner.cli import main

    assert main(["watch", "--http", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert f"the folder goes before the flag: runner watch {tmp_path} --http" in error
    assert main(["serve", "--http", "localhost"]) == 2
    assert "'localhost' is not an address to listen on (HOST:PORT" in capsys.readouterr().err


def test_a_command_line_builds_only_its_own_command_and_the_same_one():
    from runner.cli import parser_for

    full = build_parser()._subparsers._group_actions[0].choices
    for name, command in full.items():
        built = parser_for([name])._subparsers._group_actions[0].choices
        assert list(built) == [name]  # the others are not built
        assert built[name].format_help() == command.format_help()
    assert set(parser_for(["no-such-command"])._subparsers._group_actions[0].choices) == set(full)
    assert set(parser_for(["--help"])._subparsers._group_actions[0].choices) == set(full)


def test_validate_imports_neither_pydantic_s_plugin_loader_nor_what_it_does_not_use():
    """pydantic's plugin loader would import importlib.metadata (email, zipfile ...) although plugins are off;
    hashing and temporary files are for other commands."""
    import subprocess
    import sys

    code = ("import sys\nfrom runner.cli import main\n"
            f"assert main(['validate', {str(REPO / 'specs' / 'examples' / 'chatty-sft.yaml')!r}]) == 0\n"
            "print(sorted(m for m in ('importlib.metadata', 'email', 'zipfile', 'tempfile') if m in sys.modules))\n"
            "from pydantic.plugin._loader import get_plugins\nassert list(get_plugins()) == []\n")
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.splitlines()[-1] == "[]"
