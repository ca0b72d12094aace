"""Validate's checks of a spec's `evals`, with the place of every mistake: test sets exist and every row
has what its metrics need (and is not a training prompt), schema files can be applied, task files
declare their task and their data is here, gates name evals and metrics that exist.

Torch-free and lm-eval-free: tasks are read from their YAML files (runner.evals.tasks).
"""

from __future__ import annotations

import difflib
import importlib.util
from pathlib import Path

from runner.data import sources
from runner.data.files import DataFileError
from runner.evals import metrics, rows, schema, tasks
from runner.evals.gates import parse_gate
from runner.install import pip_install
from runner.spec.diagnostics import Diagnostic, Span
from runner.spec.evals import EvalSet, EvalsSpec, EvalTask
from runner.spec.yamlpos import FieldPath, format_path

SHOWN = 5


def check_evals(report, folder: Path, evals: EvalsSpec, training: rows.TrainingPrompts | None,
                similar_file) -> dict[str, tasks.TaskFile]:
    """Report every problem of `evals` through `report` (runner.spec.check's reporter); returns the task
    files found, by eval name. `similar_file(path, as_written)` suggests a file for a missing one."""
    for index, item in enumerate(evals.sets):
        _check_set(report, folder, index, item, training, similar_file)
    found = {}
    for index, task in enumerate(evals.tasks):
        task_file = _check_task(report, folder, index, task)
        if task_file is not None:
            found[task.label] = task_file
    if evals.tasks and importlib.util.find_spec("lm_eval") is None:
        report.add("warning", ("evals", "tasks"), "lm-eval is not installed here; a run on this machine would "
                   "fail at its start", f"where jobs run: {pip_install(tasks.EXTRA)}")
    _check_gates(report, evals, found)
    _check_schedule(report, evals)
    return found


def _check_set(report, folder: Path, index: int, item: EvalSet, training: rows.TrainingPrompts | None,
               similar_file) -> None:
    place: FieldPath = ("evals", "sets", index, "data")
    try:
        source = sources.resolve(item.data, folder, "eval")
    except DataFileError as error:
        message = error.message.replace(str(folder / item.data.path), item.data.path) if item.data.path else \
            error.message
        hint = error.hint or (similar_file(folder / item.data.path, item.data.path) if item.data.path else None)
        report.add("error", place, message, hint)
        return
    for position, metric in enumerate(item.metrics):
        _check_metric(report, folder, ("evals", "sets", index, "metrics", position), metric)
    unreadable = source.unreadable_here()
    if unreadable:
        report.add("warning", place, f"{source.label}: {unreadable}", "the rows are checked where pyarrow is installed")
        return
    needs_reference = [metric.name for metric in item.metrics if metric.name in metrics.NEEDS_REFERENCE]
    count, bad, leaks, near = 0, [], [], []
    try:
        for at, row, problem in rows.read(source, bool(needs_reference), item.limit):
            count += 1
            if problem is not None:
                bad.append((at, problem))
            elif training is not None:
                overlap = training.overlap(row.prompt)
                if overlap is not None:
                    (leaks if overlap == "exact" else near).append((at, row))
    except DataFileError as error:
        report.add("error", place, error.message, error.hint)
        return
    if count == 0:
        report.add("error", place, f"{source.label} has no rows")
        return
    if bad:
        for at, problem in bad[:SHOWN]:
            _row_diagnostic(report, "error", at, problem, place)
        verb = "compares" if len(needs_reference) == 1 else "compare"
        needs = f" ({', '.join(needs_reference)} {verb} answers with a reference)" if needs_reference else ""
        report.add("error", place, f"{len(bad)} of {count} rows in {source.label} cannot be used{needs}",
                   'each row needs a "prompt" and a "reference" (or a "completion"); map other columns with '
                   "columns: {prompt: ..., reference: ...}")
    if leaks:
        for at, row in leaks[:SHOWN]:
            _row_diagnostic(report, "error", at, f"this prompt is also a training prompt: "
                            f"{_shorten(rows.prompt_text(row.prompt))!r}", place)
        report.add("error", place, f"{len(leaks)} of {count} prompts of {item.name} are training prompts too (the "
                   "same text as a row of data.train)", "a test set measures what training did not show: remove "
                   "those rows from the test set or from the training data")
    if near:
        report.add("warning", place, f"{len(near)} of {count} prompts of {item.name} match training prompts once "
                   f"case, punctuation and spacing are ignored (first: {_where(near[0][0])}: "
                   f"{_shorten(rows.prompt_text(near[0][1].prompt))!r})",
                   "near-duplicates of training rows measure memory more than skill")


def _check_metric(report, folder: Path, where: FieldPath, metric) -> None:
    if metric.name != "json_schema":
        return
    settings = metric.settings
    if settings.file is not None:
        path_place = (*where, "json_schema", "file")
        try:
            loaded = metrics.load_schema(folder / settings.file)
        except OSError as error:
            report.add("error", path_place, f"{settings.file}: {error.strerror or error}",
                       "paths are relative to the spec file")
            return
        except ValueError as error:
            report.add("error", path_place, f"{settings.file} is not JSON: {error}")
            return
    else:
        path_place, loaded = (*where, "json_schema", "inline"), settings.inline
    for problem in schema.problems(loaded)[:SHOWN]:
        report.add("error", path_place, f"schema: {problem}")


def _check_task(report, folder: Path, index: int, task: EvalTask) -> tasks.TaskFile | None:
    place: FieldPath = ("evals", "tasks", index)
    include = None
    if task.include_path is not None:
        include = folder / task.include_path
        if not include.exists():
            report.add("error", (*place, "include_path"), f"{task.include_path} does not exist",
                       "a folder of task YAML files (or one file), relative to the spec file")
            return None
    elif tasks.lm_eval_folder() is None:
        return None  # lm-eval's own tasks cannot be listed here; check_evals warns that it is missing
    try:
        found, names = tasks.find_task(task.task, include)
    except (tasks.TaskFileError, OSError) as error:
        report.add("error", (*place, "include_path" if include else "task"), str(error))
        return None
    if found is None:
        where = task.include_path if include is not None else "lm-eval's tasks"
        close = difflib.get_close_matches(task.task, names, n=1, cutoff=0.6)
        shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
        report.add("error", (*place, "task"), f"no task '{task.task}' in {where}",
                   f"did you mean '{close[0]}'?" if close else (f"tasks declared there: {shown}" if names else
                                                               "a task YAML declares it with `task: NAME`"))
        return None
    for split, paths in found.data_files().items():
        for path in paths:
            if not path.is_file():
                report.add("error", (*place, "include_path" if include else "task"),
                           f"task {task.task} reads {path.name} ({split}), which is not in {path.parent}",
                           "data files of a task are relative to its YAML's folder")
    if found.dataset is not None and not tasks.dataset_cached(found.dataset):
        report.add("warning", (*place, "task"), f"task {task.task} reads the hub dataset {found.dataset}, which is "
                   f"not in the datasets cache here ({tasks.datasets_cache()}); a run on this machine would fail",
                   f"runner never downloads: fetch it where the hub is reachable: {tasks.fetch_command(found)}")
    return found


def _check_gates(report, evals: EvalsSpec, found: dict[str, tasks.TaskFile]) -> None:
    sets = {item.name: item for item in evals.sets}
    for index, text in enumerate(evals.require):
        gate = parse_gate(text)
        where = ("evals", "require", index)
        if gate.eval not in evals.names:
            close = difflib.get_close_matches(gate.eval, evals.names, n=1, cutoff=0.6)
            report.add("error", where, f"no eval named '{gate.eval}'", f"did you mean '{close[0]}'?" if close else
                       f"evals: {', '.join(evals.names) or 'none (add sets or tasks)'}")
        elif gate.eval in sets:
            named = [metric.name for metric in sets[gate.eval].metrics]
            if gate.metric not in named:
                report.add("error", where, f"{gate.eval} has no metric '{gate.metric}'",
                           f"its metrics: {', '.join(named)} (add the metric to the set to gate on it)")
        elif gate.eval in found and found[gate.eval].metrics:
            metric = gate.metric.split(",")[0]
            if metric not in found[gate.eval].metrics:
                report.add("error", where, f"task {found[gate.eval].name} has no metric '{metric}'",
                           f"its metrics: {', '.join(found[gate.eval].metrics)}")


def _check_schedule(report, evals: EvalsSpec) -> None:
    during = [item for item in evals.sets if item.during]
    if evals.every is not None and not during:
        report.add("warning", ("evals", "every"), "every: no test set is evaluated while training",
                   "add a set (tasks run before and after only), or set during: true on one")
    if evals.keep_best is None:
        return
    name, _, metric = evals.keep_best.partition(".")
    item = next((s for s in evals.sets if s.name == name), None)
    if evals.every is None:
        report.add("error", ("evals", "keep_best"), "keep_best chooses among the evaluations made while training",
                   "set evals.every")
    elif item is None or not item.during or metric not in [m.name for m in item.metrics]:
        candidates = [f"{s.name}.{m.name}" for s in during for m in s.metrics if m.name not in metrics.LOWER_IS_BETTER]
        report.add("error", ("evals", "keep_best"), f"'{evals.keep_best}' is not a metric of a set evaluated "
                   "while training", f"one of: {', '.join(candidates) or 'none'}")
    elif metric in metrics.LOWER_IS_BETTER:
        report.add("error", ("evals", "keep_best"), f"{metric} has no better direction to keep the best by",
                   "choose a score, like exact_match")


def _row_diagnostic(report, severity: str, at, message: str, place: FieldPath) -> None:
    from runner.spec.check import display_path

    summary = message if at.index is None else f"row index {at.index}: {message}"
    span = Span(at.line, 1, at.line, 1) if at.line is not None else None
    report.diagnostics.append(Diagnostic(severity, summary, display_path(at.file), format_path(place), span))


def _where(at) -> str:
    return f"line {at.line}" if at.index is None else f"row index {at.index}"


def _shorten(text: str) -> str:
    return text if len(text) <= 60 else text[:57] + "..."
