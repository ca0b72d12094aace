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

    schema = commands.add_parser("schema", help="write the JSON Schemas from the models")
    schema.add_argument("--dir", default="schemas", help="folder to write into (default: schemas)")
    schema.add_argument("--check", action="store_true", help="only report stale schemas (exit 1)")
    return parser


def dispatch(args: argparse.Namespace) -> int:
    if args.command == "validate":
        from runner.commands.validate import validate

        return validate(args.paths, args.output_format)
    if args.command == "plan":
        from runner.commands.plan import plan

        return plan(args.spec, args.out, args.output_format, args.runs_dir)
    if args.command == "run":
        from runner.commands.run import run

        return run(args.spec, args.plan_file, args.runs_dir, args.quiet)
    if args.command == "sample":
        from runner.commands.sample import sample

        return sample(args.run_dir, args.prompts, args.max_new_tokens)
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
