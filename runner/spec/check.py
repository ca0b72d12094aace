"""Check one spec file completely: YAML, fields, cross-field rules, data files and the model.

Every problem is collected; nothing stops at the first one.
"""

from __future__ import annotations

import difflib
import importlib.util
import math
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from pydantic import ValidationError

from runner import confine, quantization, trainable
from runner.errors import RunnerError
from runner.install import pip_install
from runner.methods import registry
from runner.data import sources
from runner.data.files import DataFileError
from runner.evals import rows
from runner.spec import datacheck, jobs, lockfile, modelinfo, rules
from runner.spec.evalcheck import check_evals
from runner.spec.diagnostics import Diagnostic, Span, sort_key
from runner.spec.explain import explain
from runner.rewards import pattern as patterns
from runner.spec.fields import HUB_ID_PATTERN
from runner.spec.models import DataSpec, JobSpec, ModelSource, TrainableSpec, spec_model
from runner.spec.yamlpos import FieldPath, YamlDocument, format_path, load_yaml
from runner.trackers import TRACKERS

if TYPE_CHECKING:  # a spec's reward is validated by its method's model: only RL specs import it
    from runner.rewards.spec import DeclaredReward


@dataclass(frozen=True)
class CodeUse:
    """A setting that runs code other than runner's own: the spec's opt-in is enough for `runner
    run`; the watch daemon refuses it unless it was started with the matching allow option."""

    kind: str
    """reward_function | remote_code"""
    path: FieldPath
    span: Span | None
    what: str
    """The function (`module:function`) or the model whose code runs."""

    def to_json(self) -> dict:
        return {"kind": self.kind, "path": format_path(self.path), "what": self.what,
                "line": self.span.line if self.span else None}


@dataclass
class SpecResult:
    path: Path
    source: Path | None = None
    """The spec as its author knows it, when `path` is a copy of its bytes (the watch daemon's
    snapshot): relative paths, `{job: NAME}` and diagnostics refer to it."""
    spec: JobSpec | None = None
    """The validated spec; None when there is any error."""
    diagnostics: list[Diagnostic] = field(default_factory=list)
    data: dict[str, datacheck.DataReport] = field(default_factory=dict)
    model: modelinfo.ModelFacts | None = None
    runs_code: list[CodeUse] = field(default_factory=list)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.is_error]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if not d.is_error]


def display_path(path: Path) -> str:
    """A path as the user would type it: relative to the current folder when it is inside."""
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return str(path)
    return str(path) if relative.startswith("..") else relative


def check_spec(path: Path, *, check_inputs: bool = True, source: Path | None = None) -> SpecResult:
    """Check the spec in `path`; with `source`, `path` holds a copy of the spec at `source`."""
    result = SpecResult(path, source)
    where = source or path
    document, result.diagnostics = load_yaml(path, display_path(where))
    if document is None:
        return result
    report = _Reporter(document, result.diagnostics)

    broken: set[str] = set()
    spec = None
    method = document.data.get("method") if isinstance(document.data, dict) else None
    model = spec_model(method if method in registry.names() else None)
    try:
        spec = model.model_validate(document.data)
    except ValidationError as error:
        for item in error.errors(include_url=False):
            if item["type"] == "extra_forbidden" and len(item["loc"]) == 1 and item["loc"][0] in registry.names():
                continue  # another method's section: rules.sections_match_method says whose it is
            item["loc"] = _as_written(tuple(item["loc"]), document)
            result.diagnostics.append(explain(item, document, model))
            broken.add(str(item["loc"][0]) if item["loc"] else "")

    view = rules.SpecView.of_spec(document.data, spec) if spec else rules.SpecView.of(document.data, broken)
    for problem in rules.check(view):
        report.add(problem.severity, problem.path, problem.message, problem.hint, at_key=problem.at_key)

    folder = where.parent
    evals = view.sections.get("evals")
    training = rows.TrainingPrompts() if check_inputs and evals is not None and evals.sets else None
    if check_inputs:
        data = view.sections.get("data")
        if data is not None:
            with _unexpected(report, ("data",)):
                _check_data(report, result, folder, data, view.method, training)
        model_source = view.sections.get("base_model")
        if model_source is not None:
            with _unexpected(report, ("base_model",)):
                result.model = _check_model(report, folder, model_source, view.sections.get("trainable"),
                                            view.method)

    if check_inputs:
        with _unexpected(report, ()):
            _check_job_references(report, folder, document.data)
    if evals is not None and evals.any() and view.method and not registry.get(view.method).generates:
        report.add("error", ("evals",), f"a {view.method} model scores text; evals ask a model for answers",
                   "evaluate a policy trained with this model instead (its spec's evals)", at_key=True)
    if check_inputs and evals is not None:
        with _unexpected(report, ("evals",)):
            check_evals(report, folder, evals, training, similar_file)
    if check_inputs and view.sections.get("outputs") is not None:
        _check_trackers(report, view.sections["outputs"].report_to)
    trainable_spec = view.sections.get("trainable")
    if check_inputs and trainable_spec is not None and trainable_spec.quantize is not None:
        _check_quantization_installed(report)
    reward = getattr(view.sections.get(view.method or ""), "reward", None)
    if check_inputs and reward is not None:
        with _unexpected(report, (view.method, "reward")):
            _check_reward(report, result, folder, view.method, reward)

    result.diagnostics.sort(key=lambda d: (d.file != document.file, sort_key(d)))  # the spec's own first
    result.spec = spec if not result.errors else None
    if result.spec is not None:
        result.runs_code = _code_uses(result.spec, document)
    return result


def check_evals_file(path: Path):
    """An evals file of `runner eval --evals`: YAML with one key, `evals`, checked as a spec's section is
    (every mistake with its place). Returns (the EvalsSpec or None, the diagnostics)."""
    from runner.spec.evals import EvalsSpec

    document, diagnostics = load_yaml(path, display_path(path))
    if document is None:
        return None, diagnostics
    report = _Reporter(document, diagnostics)
    data = document.data if isinstance(document.data, dict) else {}
    for key in data:
        if key != "evals":
            report.add("error", (key,), f"unknown key '{key}'", "an evals file holds one key, evals:", at_key=True)
    if "evals" not in data:
        report.add("error", (), "no evals: section", "write the evals as in a spec: evals: {sets: [...]}")
        return None, diagnostics
    evals = None
    try:
        evals = EvalsSpec.model_validate(data["evals"])
    except ValidationError as error:
        for item in error.errors(include_url=False):
            item["loc"] = ("evals", *item["loc"])
            diagnostics.append(explain(item, document, JobSpec))
    if evals is not None:
        with _unexpected(report, ("evals",)):
            check_evals(report, path.parent, evals, None, similar_file)
    diagnostics.sort(key=sort_key)
    return (evals if not any(d.is_error for d in diagnostics) else None), diagnostics


@contextmanager
def _unexpected(report: _Reporter, path: FieldPath):
    """The files a spec names are anyone's: whatever reading them raises (a name too long for the
    filesystem, a permission, a file that changes under us) is a diagnostic on the field, never a
    traceback."""
    try:
        yield
    except OSError as error:
        report.add("error", path, f"cannot check {format_path(path)}: {error.strerror or error}")
    except (ValueError, RunnerError) as error:
        report.add("error", path, f"cannot check {format_path(path)}: {error}")


def _code_uses(spec: JobSpec, document: YamlDocument) -> list[CodeUse]:
    sources: list[tuple[FieldPath, ModelSource]] = [(("base_model",), spec.base_model)]
    uses = []
    reward = spec.reward_source()
    for index, function in reward.functions() if reward is not None else ():
        where = _reward_place(document, spec.method, index, "function")
        uses.append(CodeUse("reward_function", where, document.locate(where), function))
    for index, term in enumerate(reward.terms if reward is not None else ()):
        if term.model is not None:
            sources.append((_reward_place(document, spec.method, index, "model"), term.model))
    if spec.teacher_source() is not None:
        sources.append(((spec.method, "teacher"), spec.teacher_source()))
    for where, model in sources:
        if model.trust_remote_code:
            where = (*where, "trust_remote_code")
            uses.append(CodeUse("remote_code", where, document.locate(where), model.describe()))
    return uses


class _Reporter:
    def __init__(self, document: YamlDocument, diagnostics: list[Diagnostic]) -> None:
        self.document, self.diagnostics = document, diagnostics

    def add(self, severity: str, path: FieldPath, message: str, hint: str | None = None, *,
            at_key: bool = False, detail: str = "") -> None:
        self.diagnostics.append(Diagnostic(severity, message, self.document.file, format_path(path),
                                           self.document.locate(path, key=at_key), detail, hint))


def _check_data(report: _Reporter, result: SpecResult, folder: Path, data: DataSpec, method: str | None,
                training: rows.TrainingPrompts | None = None) -> None:
    for role in ("train", "eval"):
        checked = datacheck.DataReport(role)
        places: list[FieldPath] = []
        for index, source in enumerate(data.sources(role)):
            place = _source_place(report.document, role, index)
            try:
                resolved = sources.resolve(source, folder, role)
                checked.sources.append(datacheck.check_source(resolved, data.format, method,
                                                              training.add if training and role == "train" else None))
            except DataFileError as error:
                message = error.message
                if source.path is not None:
                    message = message.replace(str(folder / source.path), source.path)
                hint = error.hint or (similar_file(folder / source.path, source.path) if source.path else None)
                report.add("error", place, message, hint)
                continue
            places.append(place)
        if not checked.sources:
            continue
        result.data[role] = checked
        for place, source_report in zip(places, checked.sources):
            if source_report.unchecked:
                report.add("warning", place, f"{source_report.source.label}: {source_report.unchecked}",
                           "the files, their kind and the hub cache were checked; the rows are checked where "
                           "pyarrow is installed (runner plan needs it)")
        if checked.bad_count:
            _report_bad_rows(report, checked, data.max_rejected)
        found = {source_report.format for source_report in checked.sources if source_report.format}
        if len(found) > 1:
            shown = ", ".join(f"{r.source.label}: {r.format}" for r in checked.sources if r.format)
            report.add("error", ("data", role), f"the sources of data.{role} hold different formats ({shown})",
                       "every source of a role must hold one format (map columns with columns:)")
        train_format = result.data["train"].format if "train" in result.data else None
        if role == "eval" and train_format not in (None, checked.format) and checked.format is not None:
            report.add("error", ("data", "eval"), f"eval rows are {checked.format}, train rows are {train_format}",
                       "use the same format for both")


def _source_place(document: YamlDocument, role: str, index: int) -> FieldPath:
    """Where a source is written: data.train, or data.train[i] when the spec lists several."""
    data = document.data.get("data") if isinstance(document.data, dict) else None
    listed = isinstance(data, dict) and isinstance(data.get(role), list)
    return ("data", role, index) if listed else ("data", role)


def _as_written(loc: tuple, document: YamlDocument) -> tuple:
    """A validation error's place as the spec writes it: a field that takes one item or a list of them
    (data.train, data.eval, a method's reward) validates one item as a list of one, and `data.train[0].path`
    of `train: {path: x}` is `data.train.path`."""
    if len(loc) > 2 and loc[2] == 0 and isinstance(document.data, dict):
        section = document.data.get(loc[0])
        written = section.get(loc[1]) if isinstance(section, dict) else None
        if written is not None and not isinstance(written, list):
            return loc[:2] + loc[3:]
    return loc


def _reward_place(document: YamlDocument, method: str, index: int, *rest: str) -> FieldPath:
    """Where a reward term's field is written: method.reward[i].x, or method.reward.x for a single term."""
    section = document.data.get(method) if isinstance(document.data, dict) else None
    listed = isinstance(section, dict) and isinstance(section.get("reward"), list)
    return (method, "reward", *((index,) if listed else ()), *rest)


def similar_file(path: Path, relative: str) -> str | None:
    """For a missing file: a file beside it with a close name, written as the spec would write it; or,
    for what looks like a hub id, how to name a hub dataset."""
    try:
        if path.exists():
            return None
        confine.check(path.parent, folder=True)  # no listing of a folder the spec may not read
        names = sorted(entry.name for entry in path.parent.iterdir() if entry.is_file()) if path.parent.is_dir() else []
    except OSError:  # a name too long for the filesystem, a folder we may not list: no suggestion
        return None
    close = difflib.get_close_matches(path.name, names, n=1, cutoff=0.75)  # a shared suffix alone scores 0.6
    if close:
        return f"did you mean '{PurePosixPath(relative).with_name(close[0])}'?"
    if HUB_ID_PATTERN.match(relative) and "/" in relative and not PurePosixPath(relative).suffix:
        return f"for a dataset on the Hugging Face hub write {{hub: {relative}}}"
    return None


def _report_bad_rows(report: _Reporter, checked: datacheck.DataReport, max_rejected: float) -> None:
    share = checked.bad_count / max(checked.rows, 1)
    tolerated = share <= max_rejected
    severity = "warning" if tolerated else "error"
    shown = 0
    for source_report in checked.sources:
        for at, reason in source_report.bad_rows:
            summary = reason if at.index is None else f"row index {at.index}: {reason}"
            span = Span(at.line, 1, at.line, 1) if at.line is not None else None
            report.diagnostics.append(Diagnostic(
                severity, summary, display_path(at.file), f"data.{checked.role}", span))
            shown += 1
    verdict = (f"within data.max_rejected ({max_rejected:.0%}); they will be skipped and listed in rejected.jsonl"
               if tolerated else "fix them, or allow a share with data.max_rejected")
    more = f" (first {shown} shown)" if checked.bad_count > shown else ""
    bad_sources = [r for r in checked.sources if r.bad_count]
    if len(checked.sources) == 1:
        where = f"rows in {bad_sources[0].source.label}"
    else:  # the share is the role's (data.max_rejected applies to it), and each source says its own count
        where = "rows (" + ", ".join(
            f"{r.bad_count} of {r.rows} in {r.source.label}" for r in bad_sources) + ")"
    report.add(severity, ("data", checked.role),
               f"{checked.bad_count} of {checked.rows} {where} cannot be used{more}", verdict)


def _check_model(report: _Reporter, folder: Path, source: ModelSource, trainable_spec: TrainableSpec | None,
                 method: str | None) -> modelinfo.ModelFacts | None:
    if source.job is not None:
        return None  # the spec it names is checked with every {job:} reference (_check_job_references)
    if source.hub is not None and (folder / source.hub).is_dir():
        report.add("warning", ("base_model",),
                   f"'{source.hub}' is read as a hub id, but a local folder of that name exists",
                   f"for the local folder write ./{source.hub}")
    facts = _model_facts(report, folder, source)
    if facts is None:
        return None
    descriptor = registry.get(method) if method else None
    if descriptor and descriptor.head == registry.SCORE:
        facts = modelinfo.with_score_head(facts)
    if trainable_spec is not None:
        _check_selection(report, facts, trainable_spec, descriptor.new_heads if descriptor else ())
    return facts


def _model_facts(report: _Reporter, folder: Path, source: ModelSource) -> modelinfo.ModelFacts | None:
    """The model's facts: read from the model on this machine (and the folder's runner.lock reported
    when it disagrees), or from runner.lock when the model is not here."""
    try:
        locked = lockfile.read_lock(folder).get(source.describe())
    except lockfile.LockfileError as error:
        report.add("error", ("base_model",), f"{display_path(lockfile.lock_path(folder))} {error}",
                   f"write it again: runner lock {display_path(folder)}")
        locked = None
    if locked is not None and source.path is not None and not (folder / Path(source.path).expanduser()).exists():
        report.add("warning", ("base_model",),
                   f"{source.path} is not on this machine; checked against {lockfile.LOCK_NAME}")
        return locked.facts
    try:
        facts = modelinfo.read_facts(source, folder)
    except modelinfo.ModelFileError as error:
        report.add("error", ("base_model",), str(error), "paths are relative to the spec file")
        return None
    if facts is None and locked is not None:
        return locked.facts
    if facts is None:
        report.add("warning", ("base_model",),
                   f"{source.describe()} is not on this machine; its layers and parameter names could not "
                   "be checked", f"where the model is, run `runner lock {display_path(folder)}` and commit "
                   f"{lockfile.LOCK_NAME}; runner plan checks them once the model is reachable")
        return None
    if locked is not None:
        for reason in lockfile.stale_reasons(locked, facts, lockfile.identity_of(source, facts)):
            report.add("warning", ("base_model",), f"{lockfile.LOCK_NAME} is stale for {source.describe()}: {reason}",
                       f"refresh it: runner lock {display_path(folder)}")
    return facts


def _check_job_references(report: _Reporter, folder: Path, data) -> None:
    """Each `{job: NAME}` names one spec beside this one, and no chain of them leads back here (it would
    wait for itself forever)."""
    own = data.get("name") if isinstance(data, dict) else None
    for path, name in jobs.job_references(data):
        where = (*path, "job")
        if name == own:
            report.add("error", where, f"'{name}' is this spec: a job cannot build on its own result",
                       "name the spec whose result this one starts from")
            continue
        try:
            jobs.find_job_spec(folder, name)
        except RunnerError as error:
            report.add("error", where, error.message, error.hint)
            continue
        cycle = jobs.cycle_through(folder, own, name) if isinstance(own, str) else None
        if cycle:
            report.add("error", where, f"{{job: {name}}} makes a cycle: {' -> '.join(cycle)}; none of them could "
                       "ever start", "a chain of {job:} references must end at a spec with a model of its own")


def _check_trackers(report: _Reporter, names: list[str]) -> None:
    """A warning, not an error: validate often runs where jobs do not (a pre-commit hook, CI); a run
    without the package fails at its start, before loading anything."""
    for index, name in enumerate(names):
        tracker = TRACKERS[name]
        if not tracker.installed():
            report.add("warning", ("outputs", "report_to", index),
                       f"{name} is not installed here; a run on this machine would fail at its start",
                       f"where jobs run: {tracker.install}")


def _check_reward(report: _Reporter, result: SpecResult, folder: Path, method: str, reward: DeclaredReward) -> None:
    """What a reward names outside the spec (a reward model's `{job:}` is checked with every other one): the
    functions' modules, the columns its checks read in every data row, and whether its patterns could be
    checked here."""
    for index, term in enumerate(reward.terms):
        if term.function is not None and term.function_file(folder) is None:
            module = term.function.split(":")[0]
            if importlib.util.find_spec(module.split(".")[0]) is None:
                report.add("error", _reward_place(report.document, method, index, "function"),
                           f"module '{module}' is neither beside the spec ({Path(*module.split('.'))}.py) nor installed",
                           "put the module next to the spec file, or install the package that has it")
    if not patterns.available():
        for index, kind, _ in reward.patterns():
            report.add("warning", _reward_place(report.document, method, index, kind),
                       "google-re2 is not installed here: this pattern was not checked, and a run on this machine "
                       "would fail at its start", f"where jobs run: {patterns.re2_install()}")
    if reward.columns():
        _check_reward_columns(report, result, method, reward)


def _check_reward_columns(report: _Reporter, result: SpecResult, method: str, reward: DeclaredReward) -> None:
    """Every usable row of every source holds the columns the reward's checks read: the first row that does
    not is an error on the check, naming the row."""
    for role, checked in result.data.items():
        for source_report in checked.sources:
            if source_report.unchecked:
                continue
            for at, row, problem in source_report.source.rows(source_report.format):
                found = reward.row_problem(row) if problem is None else None
                if found is not None:
                    index, why = found
                    term = reward.terms[index]
                    report.add("error", _reward_place(report.document, method, index, term.kind, "column"),
                               f"data.{role} {display_path(at.file)} {at.describe()} {why}",
                               "give every row that column, or map one with data.*.columns")
                    return


def _check_quantization_installed(report: _Reporter) -> None:
    """An error where jobs run (torch is here) and bitsandbytes is not: the run would fail at loading. Where
    only specs are checked (a pre-commit hook without torch) a warning, like a tracker's."""
    if quantization.installed():
        return
    where_jobs_run = quantization.runs_jobs()
    report.add("error" if where_jobs_run else "warning", ("trainable", "quantize"),
               "a quantized base needs bitsandbytes, which is not installed here"
               + ("" if where_jobs_run else "; a run on this machine would fail at its start"),
               f"{'install it' if where_jobs_run else 'where jobs run'}: {pip_install(quantization.EXTRA)}")


def _check_selection(report: _Reporter, facts: modelinfo.ModelFacts, spec: TrainableSpec,
                     new: tuple[str, ...]) -> None:
    policy = spec.policy()
    num_layers = facts.num_layers
    if not facts.shapes:
        if num_layers:
            try:
                policy.layers.indices(num_layers)
            except trainable.SelectionError as error:
                report.add("error", ("trainable", "layers"), str(error))
        return
    try:
        selection = trainable.select(facts.shapes, policy, num_layers=num_layers, tied=facts.tied, new=new)
    except trainable.SelectionError as error:
        report.add("error", ("trainable", "layers"), str(error))
        return
    for field_name, pattern in selection.unmatched:
        patterns = getattr(spec, field_name)
        index = patterns.index(pattern) if pattern in patterns else None
        where = ("trainable", field_name) + ((index,) if index is not None else ())
        report.add("error", where, f"'{pattern}' matches no parameter",
                   "parameters look like: " + trainable.describe_names(list(facts.shapes)))
    if not selection.trains_anything and not selection.unmatched:
        report.add("error", ("trainable",), "this selection trains no parameter",
                   "widen layers or modules, or add parameters with also")
    for alias, canonical in selection.tied:
        size = math.prod(facts.shapes.get(canonical, ()))
        report.add("warning", ("trainable", "also"),
                   f"{alias} is tied to {canonical} ({size / 1e6:.1f}M parameters): training it trains the "
                   "input embedding too, and gradients flow through every layer")
