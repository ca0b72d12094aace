"""The `runner` command: parse the arguments, dispatch to one command, map errors to exit codes."""

from __future__ import annotations

import argparse
import sys

from runner import __version__
from runner.errors import ExitCode, RunnerError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="runner", description="Declarative fine-tuning jobs: validate -> plan -> run.")
    parser.add_argument("--version", action="version", version=f"runner {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    validate = commands.add_parser("validate", help="check specs (fast, no torch)",
                                   description="Check job specs: fields, rules, data files and model.")
    validate.add_argument("paths", nargs="+", metavar="PATH", help="spec files, or folders to search")
    validate.add_argument("--format", choices=("text", "json"), default="text", dest="output_format")

    plan = commands.add_parser("plan", help="resolve a spec into a plan and show it",
                               description="Show what will be trained, which tokens count, the steps and memory.")
    plan.add_argument("spec", metavar="SPEC")
    plan.add_argument("--out", metavar="PLAN_JSON", help="save the plan (run it with: runner run --plan FILE)")
    plan.add_argument("--format", choices=("text", "json"), default="text", dest="output_format")
    plan.add_argument("--runs-dir", help="run root, where runs of other specs are found (default: .)")
    plan.add_argument("--machine", metavar="gpus=N,gpu_gb=G[,ram_gb=R]",
                      help="plan for this machine instead of the one it runs on (what-if; the plan cannot be run)")

    run = commands.add_parser("run", help="train: a spec (validate + plan + run) or a saved plan",
                              description="Run a spec, or exactly a saved plan (refused when stale).")
    target = run.add_mutually_exclusive_group(required=True)
    target.add_argument("spec", nargs="?", metavar="SPEC")
    target.add_argument("--plan", dest="plan_file", metavar="PLAN_JSON", help="a plan saved by runner plan --out")
    run.add_argument("--runs-dir", help="run root: runs go to <run root>/<outputs.dir>/<name>/<run-id> (default: .)")
    run.add_argument("--quiet", action="store_true", help="do not print the plan before running")

    sample = commands.add_parser("sample", help="answer prompts with a finished run's model")
    sample.add_argument("run_dir", metavar="RUN_DIR")
    sample.add_argument("prompts", nargs="+", metavar="PROMPT")
    sample.add_argument("--max-new-tokens", type=int, default=64)

    watch = commands.add_parser("watch", help="run the specs dropped into a folder (daemon)",
                                description="Watch a folder of specs and run each new or changed one exactly once.")
    watch.add_argument("folder", metavar="DIR")
    _state_dir(watch)
    watch.add_argument("--runs-dir", help="run root for the jobs (default: the state dir)")
    watch.add_argument("--settle", type=float, default=0.5, help="seconds a file must stay unchanged (default 0.5)")
    watch.add_argument("--invalid-grace", type=float, default=5.0,
                       help="seconds an invalid spec may still change before it is recorded invalid (default 5)")
    watch.add_argument("--rescan", type=float, default=30.0, help="seconds between full rescans (default 30)")
    watch.add_argument("--poll", action="store_true", help="poll instead of inotify (network filesystems)")
    watch.add_argument("--max-attempts", type=int, default=3, help="starts of one job at most (default 3)")
    watch.add_argument("--job-timeout", type=float, help="seconds a job may run before it is stopped")
    watch.add_argument("--runner-command", help="command that starts runner children (default: this python -m runner)")

    status = commands.add_parser("status", help="queued, running and recent jobs of the daemon")
    _state_dir(status)
    status.add_argument("--format", choices=("text", "json"), default="text", dest="output_format")
    for name, text in (("cancel", "cancel a queued or running job"), ("retry", "run a failed or cancelled job again")):
        command = commands.add_parser(name, help=text)
        command.add_argument("name", metavar="NAME", help="the spec's name (or its path)")
        _state_dir(command)
    logs = commands.add_parser("logs", help="a job's output")
    logs.add_argument("name", metavar="NAME")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing until the job ends")
    _state_dir(logs)

    schema = commands.add_parser("schema", help="write the JSON Schemas from the models")
    schema.add_argument("--dir", default="schemas", help="folder to write into (default: schemas)")
    schema.add_argument("--check", action="store_true", help="only report stale schemas (exit 1)")
    return parser


def _state_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state-dir", help="the daemon's state (default: $RUNNER_STATE_DIR or ~/.local/state/runner)")


def dispatch(args: argparse.Namespace) -> int:
    if args.command == "validate":
        from runner.commands.validate import validate

        return validate(args.paths, args.output_format)
    if args.command == "plan":
        from runner.commands.plan import plan

        return plan(args.spec, args.out, args.output_format, args.runs_dir, args.machine)
    if args.command == "run":
        from runner.commands.run import run

        return run(args.spec, args.plan_file, args.runs_dir, args.quiet)
    if args.command == "sample":
        from runner.commands.sample import sample

        return sample(args.run_dir, args.prompts, args.max_new_tokens)
    if args.command == "watch":
        from runner.commands.watch import watch

        return watch(args.folder, args.state_dir, args.runs_dir, settle=args.settle,
                     invalid_grace=args.invalid_grace, rescan=args.rescan,
                     poll=args.poll, max_attempts=args.max_attempts, job_timeout=args.job_timeout,
                     runner_command=args.runner_command)
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

        return logs(args.name, args.state_dir, args.follow)
    if args.command == "schema":
        from runner.commands.schema import write_schemas

        return write_schemas(args.dir, args.check)
    raise AssertionError(f"unhandled command {args.command}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(dispatch(args))
    except RunnerError as error:
        print(f"runner {args.command}: error: {error.message}", file=sys.stderr)
        if error.hint:
            print(f"  hint: {error.hint}", file=sys.stderr)
        return int(error.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
    except BrokenPipeError:  # `runner status | head`: the reader left; nothing is wrong
        sys.stderr.close()
        return int(ExitCode.OK)
