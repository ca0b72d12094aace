"""The table of executors (runner.daemon.executor.EXECUTORS): an executor is a module and a line in the table;
`runner watch` takes its choices and each executor's options from there."""

import pytest

from runner.cli import build_parser
from runner.commands.watch import configured_executor
from runner.daemon.executor import EXECUTORS, ExecutorKind, Option
from runner.daemon.local_executor import Local
from runner.errors import UsageError


class Elsewhere(Local):
    """A test's executor: a local one under another name, with an option of its own."""

    name = "elsewhere"

    def __init__(self, command, queue) -> None:
        super().__init__(command)
        self.queue = queue

    @classmethod
    def configured(cls, options, command):
        return cls(command, options.get("queue"))


def test_a_new_executor_is_a_line_in_the_table(monkeypatch, capsys):
    monkeypatch.setitem(EXECUTORS, "elsewhere", ExecutorKind(
        "elsewhere", "a test's", "tests.daemon.test_executor:Elsewhere", "Elsewhere", (Option("--queue", "queue",
                                                                                              "its queue"),)))
    args = build_parser(only="watch").parse_args(["watch", "specs", "--executor", "elsewhere", "--queue", "q1"])
    options = {option.dest: getattr(args, option.dest) for kind in EXECUTORS.values() for option in kind.options}
    made = configured_executor(args.executor, options, ["runner"])
    assert isinstance(made, Elsewhere) and (made.name, made.queue, made.command) == ("elsewhere", "q1", ["runner"])
    with pytest.raises(UsageError, match="--queue: for --executor elsewhere only"):
        configured_executor("local", {**options, "queue": "q1"}, ["runner"])
    with pytest.raises(SystemExit):
        build_parser(only="watch").parse_args(["watch", "--help"])
    shown = capsys.readouterr().out
    assert "elsewhere: a test's" in shown and "Elsewhere (--executor elsewhere):" in shown and "--queue" in shown


def test_every_executor_in_the_table_is_one():
    for name, kind in EXECUTORS.items():
        made = kind.configured({}, ["runner"])
        assert made.name == name and callable(made.handle) and callable(made.adopt) and callable(made.devices)
