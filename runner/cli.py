"""The `runner` command: parse the arguments, dispatch to one command, map errors to exit codes."""

from __future__ import annotations

import argparse
import json
import os
import sys

from runner import __version__
from runner.errors import ExitCode, RunnerError, UsageError

RUN_ROOT_DEFAULT = ("$RUNNER_RUNS_DIR, runs_dir in runner's config (/etc/runner/config.yaml, "
                    "~/.config/runner/config.yaml, $RUNNER_CONFIG), or the current folder")
"""Where runs are written and found when --runs-dir is not given (runner.box)."""
DEFAULT_HTTP = "127.0.0.1:8765"
"""The status page's address when none is given: loopback, so only this machine's users see it."""


class _Parser(argparse.ArgumentParser):
    """Usage errors become UsageError, so that `--format json` can report them as JSON too."""

    def error(self, message: str):
        raise _ArgumentError(message, self)


class _ArgumentError(UsageError):
    def __init__(self, message: str, parser: argparse.ArgumentParser) -> None:
        super().__init__(message, f"see: {parser.prog} --help")
        self.parser = parser


class _Subcommands:
    """The subcommands, of which only the one being run is built (`only`): argparse's add_argument costs a
    formatter each (a terminal-size query and a regex), and the whole tree is a tenth of validate's time.
    The others are accepted and dropped; `runner --help` and a mistyped command build them all."""

    def __init__(self, real, only: str | None) -> None:
        self.real, self.only, self.built = real, only, False

    def add_parser(self, name: str, **options):
        if self.only is not None and name != self.only:
            return _NOT_BUILT
        self.built = True
        return self.real.add_parser(name, **options)


class _NotBuilt:
    """A subcommand's parser that is not built: every call on it (add_argument, groups) does nothing."""

    def __getattr__(self, name: str):
        return lambda *arguments, **options: self


_NOT_BUILT = _NotBuilt()


def parser_for(argv: list[str]) -> argparse.ArgumentParser:
    """The parser of the command line: with only its command built, when its first word names one."""
    if argv and not argv[0].startswith("-"):
        parser = build_parser(only=argv[0])
        if parser.subcommands.built:
            return parser
    return build_parser()


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; with `only`, that command alone (see _Subcommands)."""
    parser = _Parser(prog="runner", description="Declarative fine-tuning jobs: validate -> plan -> run.")
    parser.add_argument("--version", action="version", version=f"runner {__version__}")
    commands = parser.subcommands = _Subcommands(
        parser.add_subparsers(dest="command", required=True, metavar="COMMAND"), only)

    validate = commands.add_parser(
        "validate", help="check specs (fast, no torch)",
        description="Check job specs: fields, rules, data files and model. A data file (not a spec) checks the "
                    "specs that use it: every spec in its git repository (without one: in its folder and the "
                    "folder above). A model not on this machine is checked against the runner.lock beside "
                    "the spec (see: runner lock).")
    validate.add_argument("paths", nargs="+", metavar="PATH",
                          help="spec files, folders to search for specs, or data files")
    _output_format(validate, "json: a report shaped like terraform validate -json")
    _source(validate)

    lock = commands.add_parser(
        "lock", help="record model facts for checks without the model (runner.lock)",
        description="Write runner.lock beside the specs: for each model they train, its layer count, parameter "
                    "names and shapes, config facts and identity (hub revision or file sha256), read from the "
                    "model on this machine. Commit it: runner validate (and the pre-commit hook) then checks "
                    "trainable selections on machines without the model, and reports facts gone stale.")
    lock.add_argument("paths", nargs="+", metavar="PATH", help="spec files, or folders to search for specs")
    lock.add_argument("--check", action="store_true", help="only report lockfiles that would change (exit 1)")

    plan = commands.add_parser("plan", help="resolve a spec into a plan and show it",
                               description="Show what will be trained, which tokens count, the steps and memory.")
    plan.add_argument("spec", metavar="SPEC", help="a spec file")
    plan.add_argument("--out", metavar="PLAN_JSON", help="save the plan (run it with: runner run --plan FILE)")
    _output_format(plan, "json: the whole plan (schemas/plan.schema.json)")
    plan.add_argument("--runs-dir", help=f"run root, where runs of other specs are found (default: {RUN_ROOT_DEFAULT})")
    plan.add_argument("--machine", metavar="gpus=N,gpu_gb=G[,ram_gb=R]",
                      help="plan for this machine instead of the one it runs on (what-if; the plan cannot be run)")
    _source(plan)

    run = commands.add_parser("run", help="train: a spec (validate + plan + run) or a saved plan",
                              description="Run a spec, or exactly a saved plan (refused when stale).")
    target = run.add_mutually_exclusive_group(required=True)
    target.add_argument("spec", nargs="?", metavar="SPEC", help="a spec file: validated, planned and run")
    target.add_argument("--plan", dest="plan_file", metavar="PLAN_JSON", help="a plan saved by runner plan --out")
    run.add_argument("--runs-dir", help="run root: runs go to <run root>/<outputs.dir>/<name>/<run-id> "
                     f"(default: {RUN_ROOT_DEFAULT})")
    run.add_argument("--quiet", action="store_true", help="do not print the plan before running")
    run.add_argument("--events", action="store_true",
                     help="print the JSON event lines on stdout (the default when stdout is not a terminal)")
    nodes = run.add_argument_group("several nodes (hardware.nodes > 1): run the same plan on every node")
    nodes.add_argument("--rendezvous", metavar="HOST:PORT", help="node 0's address and a free port "
                       "(default: $RUNNER_RENDEZVOUS)")
    nodes.add_argument("--node-rank", type=int, metavar="K", help="this node: 0 .. nodes-1; node 0 hosts the "
                       "rendezvous and writes the manifest (default: $RUNNER_NODE_RANK or $SLURM_NODEID)")
    nodes.add_argument("--launch-id", metavar="ID", help="the same on every node, new for every launch "
                       "(default: $RUNNER_LAUNCH_ID)")

    submit = commands.add_parser("submit", help="run a spec on a Slurm cluster and follow it",
                                 description="Plan here, write an sbatch script beside the runs, sbatch it, and "
                                 "follow the job (Ctrl-C asks whether to cancel it). Set-up: docs/slurm.md.")
    target = submit.add_mutually_exclusive_group(required=True)
    target.add_argument("spec", nargs="?", metavar="SPEC", help="a spec file: planned here, run as a Slurm job")
    target.add_argument("--attach", metavar="JOB_ID", help="follow a job submitted earlier")
    submit.add_argument("--runs-dir", help=f"run root, on storage the compute nodes see (default: {RUN_ROOT_DEFAULT})")
    _executor_options(submit, "slurm", {"config_file": "--config"})
    submit.add_argument("--detach", action="store_true", help="submit and return; do not follow")
    submit.add_argument("--dry-run", action="store_true",
                        help="write the plan and the script, print the script, submit nothing")
    submit.add_argument("--quiet", action="store_true", help="do not print the plan")

    sample = _on_a_run(
        commands, "sample", "answer prompts with a finished run's model",
        "Answer prompts (greedy) with the model of a succeeded run: a run folder, or the latest succeeded run of a "
        "spec file, spec name or folder of runs. An adapter run loads its base model where it was trained from, or "
        "the same hub model found on this machine.")
    sample.add_argument("prompts", nargs="+", metavar="PROMPT", help="a prompt, answered greedily (quote it)")
    sample.add_argument("--max-new-tokens", type=_positive_int, default=64, metavar="N",
                        help="the longest answer, in tokens (default 64)")

    export = _on_a_run(
        commands, "export", "write a LoRA run's adapter merged into its base, as a plain transformers folder",
        "Merge a succeeded LoRA run's adapter into its base model and write a folder that "
        "AutoModelForCausalLM.from_pretrained loads alone, with the tokenizer and a model card. A quantized base is "
        "merged dequantised: the weights the run computed with. Runs on the CPU.")
    export.add_argument("--out", metavar="DIR", help="the folder to write (default: RUN/merged); it must not exist")

    evaluate = commands.add_parser(
        "eval", help="evaluate a run, a model folder or a hub id (the spec's evals, or an evals file)",
        description="Run evals on a model: a run (a run folder, or the latest run of a spec file or name: its "
                    "saved model, beside its base), a model folder, or a hub id in the local cache. The evals are "
                    "the run's spec's, or an evals file's (YAML with an evals: section). Exit code 1 when a gate "
                    "is missed. See docs/evals.md.")
    evaluate.add_argument("target", metavar="TARGET", help="a run folder, a spec file or name, a model folder, "
                          "or a hub id")
    evaluate.add_argument("--evals", dest="evals_file", metavar="FILE", help="an evals file (default: the run's)")
    evaluate.add_argument("--base", metavar="MODEL", help="a model folder or hub id to compare a model with (a "
                          "run is compared with its own base)")
    evaluate.add_argument("--out", metavar="DIR", help="where the results go (default: a new folder under the "
                          "run's evals/, or ./evals/)")
    _runs_dir(evaluate)
    _output_format(evaluate, "json: the results record, scores and gates")

    runs = commands.add_parser(
        "runs", help="list runs: name, run id, state, steps, final loss, when, size",
        description="List the runs under the run root, oldest first: all, or those of a spec file, a spec "
                    "name, or a folder of runs.")
    runs.add_argument("target", nargs="?", metavar="SPEC|NAME", help="a spec file, a spec name, or a folder")
    _runs_dir(runs)
    _output_format(runs, "json: every run's record, with its path")

    watch = commands.add_parser("watch", help="run the specs dropped into a folder (daemon)",
                                description="Watch a folder of specs and run each new or changed one exactly once.")
    watch.add_argument("folder", metavar="DIR", help="the folder of specs (searched recursively; never modified)")
    _state_dir(watch)
    watch.add_argument("--runs-dir", help="run root for the jobs (default: $RUNNER_RUNS_DIR, runs_dir in "
                       "runner's config, or the state dir)")
    watch.add_argument("--settle", type=float, default=0.5, help="seconds a file must stay unchanged (default 0.5)")
    watch.add_argument("--invalid-grace", type=float, default=5.0,
                       help="seconds an invalid spec may still change before it is recorded invalid (default 5)")
    watch.add_argument("--rescan", type=float, default=30.0, help="seconds between full rescans (default 30)")
    watch.add_argument("--poll", action="store_true", help="poll instead of inotify (network filesystems)")
    watch.add_argument("--max-attempts", type=int, default=3, help="starts of one job at most (default 3)")
    watch.add_argument("--job-timeout", type=float, help="seconds a job may run before it is stopped")
    watch.add_argument("--plan-timeout", type=float, default=300.0,
                       help="seconds planning one job may take before it fails (default 300; planning that uses "
                            "no CPU for a minute is stopped sooner and tried again later)")
    watch.add_argument("--stall-seconds", type=float, default=60.0,
                       help="seconds a checking or planning worker may use no CPU before it is stopped and the "
                            "request tried again later (a hung network filesystem; default 60)")
    watch.add_argument("--max-jobs", type=_positive_int, help="jobs that may run at once (default: as many as "
                       "the devices hold)")
    watch.add_argument("--http", nargs="?", const=DEFAULT_HTTP, metavar="HOST:PORT", type=_http_address,
                       help=f"serve the read-only status page and JSON API (default {DEFAULT_HTTP}; an address "
                            "other than loopback only when given)")
    watch.add_argument("--runner-command", help=argparse.SUPPRESS)  # the tests' stand-in runner
    _executors(watch)
    watch.add_argument("--allow-reward-functions", action="store_true",
                       help="run specs whose reward is a Python function (it runs as the daemon's user); refused "
                            "otherwise")
    watch.add_argument("--allow-remote-code", action="store_true",
                       help="run specs that set trust_remote_code (model code runs as the daemon's user); refused "
                            "otherwise")
    watch.add_argument("--allow-read", action="append", default=[], metavar="DIR",
                       help="a folder every spec may read, besides the watched folder (as the spec file's owner "
                            "could), the hub cache and the run root; repeat for more")

    serve = commands.add_parser("serve", help="the daemon's status page and JSON API (read-only)",
                                description="Serve the read-only status page and JSON API of a daemon's state dir "
                                            "(what runner watch --http serves), without being the daemon.")
    _state_dir(serve)
    serve.add_argument("--http", default=DEFAULT_HTTP, metavar="HOST:PORT", type=_http_address,
                       help=f"address to listen on (default {DEFAULT_HTTP}: this machine only)")
    commands.add_parser("worker",  # no help: not listed (a subcommand's help=SUPPRESS would print "==SUPPRESS==")
                        description="The watch daemon's planning worker: started by runner watch, it answers "
                                    "check and plan requests on stdin (runner.daemon.worker); not for people.")

    status = commands.add_parser("status", help="queued, running and recent jobs of the daemon",
                                 description="The daemon's jobs: running (with progress), queued, and recent results "
                                             "and failures, read from its state dir.")
    _state_dir(status)
    _output_format(status, "json: what the status page's /api/jobs answers")
    for name, text, description in (
            ("cancel", "cancel a queued or running job",
             "Cancel a daemon job: a queued one at once; a running one writes a checkpoint and stops."),
            ("retry", "run a failed or cancelled job again",
             "Queue a failed or cancelled daemon job again; an invalid spec is validated again.")):
        command = commands.add_parser(name, help=text, description=description)
        command.add_argument("name", metavar="NAME", help="the spec's name (or its path)")
        _state_dir(command)
    logs = commands.add_parser(
        "logs", help="a job's or a run's output",
        description="The output of a daemon job, or the events.jsonl of a run: a run folder, or the latest run "
                    "(any state) of a spec file or spec name under the run root.")
    logs.add_argument("name", metavar="NAME", help="a daemon job or spec name, a spec file, or a run folder")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing until the job ends")
    _output_format(logs, "json: the lines as written (JSON events, and what else the job printed)")
    _state_dir(logs)
    _runs_dir(logs)

    schema = commands.add_parser(
        "schema", help="write the JSON Schemas from the models",
        description="Write the JSON Schemas of the job spec, the plan and the result manifest, generated from "
                    "the models (editors use job.schema.json for completion and inline errors), and the spec "
                    "reference (docs/spec.md) generated from the job spec's schema.")
    schema.add_argument("--dir", default="schemas", help="folder to write the schemas into (default: schemas)")
    schema.add_argument("--docs", default="docs", help="folder to write spec.md into (default: docs)")
    schema.add_argument("--check", action="store_true", help="only report stale files (exit 1)")
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def _source(parser: argparse.ArgumentParser) -> None:
    # SPEC is a copy of the spec at PATH: its relative paths, {job: NAME} and diagnostics refer to PATH (the
    # watch daemon's planning worker checks and plans snapshots); not for people, so not in --help
    parser.add_argument("--source", metavar="PATH", help=argparse.SUPPRESS)


def _output_format(parser: argparse.ArgumentParser, json_is: str) -> None:
    parser.add_argument("--format", choices=("text", "json"), default="text", dest="output_format",
                        help=f"text (default) or {json_is}")


def _http_address(text: str) -> str:
    """--http's value is an address: a folder there is the command's DIR, written after the flag."""
    from runner.daemon.web import parse_address

    try:
        parse_address(text)
    except UsageError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an address to listen on (HOST:PORT, e.g. {DEFAULT_HTTP}); "
            + (f"the folder goes before the flag: runner watch {text} --http" if os.path.isdir(text) else
               "leave the value out for the default")) from None
    return text


def _executors(watch) -> None:
    """`--executor` and each executor's options, from the table (read only when `runner watch` is parsed)."""
    if watch is _NOT_BUILT:
        return
    from runner.daemon.executor import EXECUTORS

    watch.add_argument("--executor", choices=tuple(EXECUTORS), default="local",
                       help="where jobs run: " + "; ".join(f"{kind.name}: {kind.help}" for kind in EXECUTORS.values()))
    for kind in EXECUTORS.values():
        if kind.options:
            _executor_options(watch.add_argument_group(f"{kind.title} (--executor {kind.name})"), kind.name)


def _executor_options(parser, executor: str, renamed: dict[str, str] | None = None) -> None:
    """An executor's options (runner.daemon.executor.Option); `renamed`: dest -> the flag it has here."""
    if parser is _NOT_BUILT:
        return
    from runner.daemon.executor import EXECUTORS

    for option in EXECUTORS[executor].options:
        parser.add_argument((renamed or {}).get(option.dest, option.flag), dest=option.dest, metavar=option.metavar,
                            help=option.help)


def _state_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state-dir", help="the daemon's state (default: $RUNNER_STATE_DIR, state_dir in runner's "
                        "config, or ~/.local/state/runner)")


def _on_a_run(commands, name: str, summary: str, description: str) -> argparse.ArgumentParser:
    """A subcommand on a finished run: RUN (a run folder, or the latest succeeded run of a spec), and the run root
    to find it in."""
    parser = commands.add_parser(name, help=summary, description=description)
    parser.add_argument("run_dir", metavar="RUN", help="a run folder, a spec file, or a spec name")
    _runs_dir(parser)
    return parser


def _runs_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs-dir", help=f"the run root (default: {RUN_ROOT_DEFAULT})")


def dispatch(args: argparse.Namespace) -> int:
    if args.command == "validate":
        from runner.commands.validate import validate

        return validate(args.paths, args.output_format, args.source)
    if args.command == "lock":
        from runner.commands.lock import lock

        return lock(args.paths, args.check)
    if args.command == "plan":
        from runner.commands.plan import plan

        return plan(args.spec, args.out, args.output_format, args.runs_dir, args.source, args.machine)
    if args.command == "run":
        from runner.commands.run import run

        return run(args.spec, args.plan_file, args.runs_dir, args.quiet, args.events, rendezvous=args.rendezvous,
                   node_rank=args.node_rank, launch_id=args.launch_id)
    if args.command == "submit":
        from runner.commands.submit import attach, submit

        if args.attach:
            return attach(args.attach)
        return submit(args.spec, args.runs_dir, partition=args.partition, account=args.account,
                      time_limit=args.time_limit, config_file=args.config_file, detach=args.detach,
                      dry_run=args.dry_run, quiet=args.quiet)
    if args.command == "sample":
        from runner.commands.sample import sample

        return sample(args.run_dir, args.prompts, args.max_new_tokens, args.runs_dir)
    if args.command == "export":
        from runner.commands.export import export

        return export(args.run_dir, args.out, args.runs_dir)
    if args.command == "eval":
        from runner.commands.eval import evaluate

        return evaluate(args.target, args.evals_file, args.base, args.out, args.runs_dir, args.output_format)
    if args.command == "runs":
        from runner.commands.runs import runs

        return runs(args.target, args.runs_dir, args.output_format)
    if args.command == "watch":
        from runner.commands.watch import watch
        from runner.daemon.executor import EXECUTORS

        return watch(args.folder, args.state_dir, args.runs_dir, settle=args.settle,
                     invalid_grace=args.invalid_grace, rescan=args.rescan,
                     poll=args.poll, max_attempts=args.max_attempts, job_timeout=args.job_timeout,
                     runner_command=args.runner_command, allow_reward_functions=args.allow_reward_functions,
                     allow_remote_code=args.allow_remote_code, allow_read=args.allow_read,
                     plan_timeout=args.plan_timeout, stall_seconds=args.stall_seconds,
                     max_jobs=args.max_jobs, http=args.http, executor=args.executor,
                     executor_options={option.dest: getattr(args, option.dest)
                                       for kind in EXECUTORS.values() for option in kind.options})
    if args.command == "serve":
        from runner.commands.serve import serve

        return serve(args.state_dir, args.http)
    if args.command == "worker":
        from runner.commands.worker import worker

        return worker()
    if args.command == "status":
        from runner.commands.status import status

        return status(args.state_dir, args.output_format)
    if args.command == "cancel":
        from runner.commands.cancel import cancel

        return cancel(args.name, args.state_dir)
    if args.command == "retry":
        from runner.commands.retry import retry

        return retry(args.name, args.state_dir)
    if args.command == "logs":
        from runner.commands.logs import logs

        return logs(args.name, args.state_dir, args.follow, args.runs_dir, args.output_format)
    if args.command == "schema":
        from runner.commands.schema import write_schemas

        return write_schemas(args.dir, args.check, args.docs)
    raise AssertionError(f"unhandled command {args.command}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # pydantic looks for plugins in the entry points of every installed distribution when it builds
    # the first model: ~10 ms of validate's ~0.2 s here, more in a large training environment. The
    # spec models are runner's own and want no plugin; a value the user set is kept (and then the
    # plugin loader is not even imported: see _no_pydantic_plugin_loader).
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    _no_pydantic_plugin_loader()
    command = "runner"
    try:
        args = parser_for(argv).parse_args(argv)
        command = f"runner {args.command}"
        return int(dispatch(args))
    except RunnerError as error:
        if _wants_json(argv):
            print(json.dumps(error_report(error), indent=2))
        else:
            if isinstance(error, _ArgumentError):  # as argparse prints it
                error.parser.print_usage(sys.stderr)
                command = error.parser.prog
            print(f"{command}: error: {error.message}", file=sys.stderr)
            if error.hint:
                print(f"  hint: {error.hint}", file=sys.stderr)
        return int(error.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
    except BrokenPipeError:  # `runner status | head`: the reader left; nothing is wrong
        sys.stderr.close()
        return int(ExitCode.OK)


PYDANTIC_LOADER = "pydantic.plugin._loader"


def _no_pydantic_plugin_loader() -> None:
    """pydantic imports its plugin loader when it builds the first model, plugins disabled or not, and the
    loader imports importlib.metadata (email, zipfile, csv, shutil, socket ...): about half of what building
    the spec models costs, a tenth of validate. With plugins disabled there is nothing for it to find, so it
    gets a loader that finds none; any other name it asks the loader for comes from the real one."""
    if os.environ.get("PYDANTIC_DISABLE_PLUGINS") not in ("__all__", "1", "true") or PYDANTIC_LOADER in sys.modules:
        return
    import types

    def real(name: str):
        if name.startswith("__"):  # what the import system asks of any module (__path__, ...): not there
            raise AttributeError(name)
        del sys.modules[PYDANTIC_LOADER]
        import importlib

        return getattr(importlib.import_module(PYDANTIC_LOADER), name)

    loader = types.ModuleType(PYDANTIC_LOADER, "pydantic's plugin loader, with plugins disabled: none to load")
    loader.get_plugins = lambda: ()
    loader.__getattr__ = real
    sys.modules[PYDANTIC_LOADER] = loader


def _wants_json(argv: list[str]) -> bool:
    """Whether the command line asks for JSON output, read from the words themselves: when parsing fails,
    there are no parsed arguments to ask."""
    return "--format=json" in argv or any(a == "--format" and b == "json" for a, b in zip(argv, argv[1:]))


def error_report(error: RunnerError) -> dict:
    """An error as a JSON report shaped like `runner validate --format json` (terraform's -json)."""
    return {"format_version": "1.0", "valid": False, "error_count": 1, "warning_count": 0,
            "diagnostics": [{"severity": "error", "summary": error.message, "detail": "", "range": None,
                             "path": "", "hint": error.hint}],
            "exit_code": int(error.exit_code)}
