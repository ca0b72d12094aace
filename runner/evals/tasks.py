"""lm-eval-harness task files, read without lm-eval: which YAML declares a task, what data it reads,
what it asks of the model. Validate and the planner check and cost a task here; only a run imports
lm-eval (runner.evals.harness).

A task YAML may use lm-eval's `!function module.name` tags: they are read as text here, never run.
`include:` files are merged as lm-eval merges them (the including file's keys win). Data files a task
names (`dataset_kwargs.data_files`) are relative to the task YAML's folder: the run evaluates each task
from that folder, as lm-eval's own CLI reads them when started there.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from runner.fsutil import cache_directory, cached_record
from runner.readers import MAX_JSON_DEPTH, nested_deeper_than, read_regular

MAX_TASK_FILES = 20_000
"""YAML files under one include_path (lm-eval's own task folder holds about 14,000)."""
MAX_ENTRIES = 50_000
"""Files and folders looked at below one include_path (lm-eval's own tasks are 17,600; one that names / is refused
in seconds, not walked for hours)."""
MAX_DEPTH = 16
MAX_TASK_BYTES = 1024 * 1024
MAX_INCLUDES = 8
BUILDERS = ("json", "csv", "parquet", "text", "arrow")
"""dataset_path values that read local files (dataset_kwargs.data_files) rather than a hub dataset."""
DEFAULT_GEN_TOKENS = 256
"""lm-eval's max_gen_toks when a generate_until task does not set it."""
ASSUMED_CHOICES = 4
"""Choices per multiple-choice question, for the cost estimate (the doc decides; 4 is the common case)."""
_TASK_LINE = re.compile(rb"^(?:task|group):\s*['\"]?([A-Za-z0-9_.-]+)['\"]?\s*$", re.MULTILINE)
EXTRA = "evals"
"""The extra that installs lm-eval-harness."""


class _TaskLoader(yaml.SafeLoader):
    """Safe loading that reads lm-eval's `!function x.y` tags as the text `!function x.y`."""


_TaskLoader.add_multi_constructor("!", lambda loader, suffix, node: f"!{suffix} {getattr(node, 'value', '')}")


class TaskFileError(ValueError):
    """A task file that cannot be read."""


@dataclass(frozen=True)
class TaskFile:
    name: str
    path: Path
    """The YAML that declares the task (or group)."""
    config: dict
    """Its keys, with its `include:` files merged in."""

    @property
    def is_group(self) -> bool:
        return ("group" in self.config and "task" not in self.config) or isinstance(self.config.get("task"), list)

    @property
    def output_type(self) -> str:
        return str(self.config.get("output_type", "generate_until"))

    @property
    def max_gen_tokens(self) -> int:
        kwargs = self.config.get("generation_kwargs") or {}
        value = kwargs.get("max_gen_toks") if isinstance(kwargs, dict) else None
        return value if isinstance(value, int) and value > 0 else DEFAULT_GEN_TOKENS

    @property
    def metrics(self) -> list[str]:
        listed = self.config.get("metric_list") or []
        return [item["metric"] for item in listed if isinstance(item, dict) and isinstance(item.get("metric"), str)]

    @property
    def dataset(self) -> str | None:
        """The hub dataset it reads, or None for local files (a builder with data_files)."""
        path = self.config.get("dataset_path")
        return path if isinstance(path, str) and path not in BUILDERS else None

    @property
    def split(self) -> str | None:
        for key in ("test_split", "validation_split", "training_split"):
            if isinstance(self.config.get(key), str):
                return self.config[key]
        return None

    def data_files(self) -> dict[str, list[Path]]:
        """{split: files} of a task that reads local files, resolved relative to its YAML's folder."""
        if self.dataset is not None:
            return {}
        files = (self.config.get("dataset_kwargs") or {}).get("data_files") if isinstance(
            self.config.get("dataset_kwargs"), dict) else None
        if isinstance(files, (str, list)):
            files = {"train": files}
        if not isinstance(files, dict):
            return {}
        return {str(split): [self.path.parent / name for name in ([names] if isinstance(names, str) else names)
                             if isinstance(name, str)] for split, names in files.items()}


def read_task_yaml(path: Path, depth: int = 0) -> dict:
    """A task YAML's keys with its `include:` merged in (the file's own keys win)."""
    try:
        text = read_regular(path, MAX_TASK_BYTES)
        if nested_deeper_than(text, MAX_JSON_DEPTH):  # PyYAML's parser recurses: refuse before parsing
            raise TaskFileError(f"{path}: nested more than {MAX_JSON_DEPTH} levels")
        loaded = yaml.load(text, Loader=_TaskLoader)  # noqa: S506 (a safe loader)
    except (OSError, yaml.YAMLError, RecursionError) as error:
        raise TaskFileError(f"{path}: {str(error).splitlines()[0] if str(error) else error}") from None
    if not isinstance(loaded, dict):
        raise TaskFileError(f"{path}: a task file is a mapping of keys")
    included = loaded.pop("include", None)
    if isinstance(included, str):
        if depth >= MAX_INCLUDES:
            raise TaskFileError(f"{path}: includes nest more than {MAX_INCLUDES} levels")
        loaded = {**read_task_yaml(path.parent / included, depth + 1), **loaded}
    return loaded


def yaml_files(include_path: Path) -> list[Path]:
    """The YAML files of an include_path: the file itself, or every .yaml/.yml below the folder."""
    if include_path.is_file():
        return [include_path]
    found, seen, base = [], 0, len(include_path.parts)
    for root, folders, files in os.walk(include_path):
        deep = len(Path(root).parts) - base >= MAX_DEPTH
        folders[:] = [] if deep else sorted(name for name in folders if not name.startswith("."))
        found += [Path(root) / name for name in sorted(files) if name.endswith((".yaml", ".yml"))]
        seen += len(files) + len(folders)
        if len(found) > MAX_TASK_FILES or seen > MAX_ENTRIES:
            raise TaskFileError(f"{include_path} holds more than {MAX_TASK_FILES:,} YAML files or {MAX_ENTRIES:,} "
                                "entries; an include_path is a folder of task files")
    return found


def declared(paths: list[Path]) -> dict[str, Path]:
    """{task or group name: the YAML that declares it}, read from each file's `task:` / `group:` line
    (a quick scan: the whole YAML is read only for the task that is asked for)."""
    names: dict[str, Path] = {}
    for path in paths:
        try:
            text = read_regular(path, MAX_TASK_BYTES)
        except OSError:
            continue
        for match in _TASK_LINE.finditer(text):
            names.setdefault(match.group(1).decode(), path)
    return names


def find_task(task: str, include_path: Path | None) -> tuple[TaskFile | None, list[str]]:
    """(the task's file, or None; the names that were found instead, for a hint). Without include_path the
    task is looked for among lm-eval's own tasks (when lm-eval is installed)."""
    if include_path is not None:
        names = declared(yaml_files(include_path))
    else:
        names = _builtin_index()
    path = names.get(task)
    if path is None:
        return None, sorted(names)
    return TaskFile(task, Path(path), read_task_yaml(Path(path))), []


def lm_eval_folder() -> Path | None:
    """lm-eval's own tasks folder, found without importing lm-eval; None when it is not installed."""
    spec = importlib.util.find_spec("lm_eval")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "tasks"
    return folder if folder.is_dir() else None


def _builtin_index() -> dict[str, str]:
    """{name: YAML} of lm-eval's own tasks, kept in runner's cache per lm-eval install (scanning its
    ~14,000 files takes about a second)."""
    folder = lm_eval_folder()
    if folder is None:
        return {}
    key = hashlib.sha256(f"{folder}|{folder.stat().st_mtime_ns}".encode()).hexdigest()[:32]
    return cached_record(cache_directory() / "lm-eval-tasks" / f"{key}.json", lambda: {"tasks": {
        name: str(path) for name, path in declared(yaml_files(folder)).items()}}, "tasks")["tasks"]


def datasets_cache() -> Path:
    """The datasets library's cache ($HF_DATASETS_CACHE, else $HF_HOME/datasets), where lm-eval's hub
    datasets are read from offline."""
    return Path(os.environ.get("HF_DATASETS_CACHE") or os.path.join(
        os.environ.get("HF_HOME", os.path.join(os.path.expanduser("~"), ".cache", "huggingface")), "datasets"))


def dataset_cached(dataset: str) -> bool:
    """Whether the datasets library has prepared this hub dataset here (it reads it offline from there)."""
    return (datasets_cache() / dataset.replace("/", "___")).is_dir()


def fetch_command(task: TaskFile) -> str:
    """The command that puts a task's hub dataset into the datasets cache, where the hub is reachable."""
    name = task.config.get("dataset_name")
    arguments = json.dumps(task.dataset) + (f", {json.dumps(name)}" if isinstance(name, str) else "")
    return f"python -c 'import datasets; datasets.load_dataset({arguments})'"


def documents(task: TaskFile, limit: int | None) -> int | None:
    """Documents the task evaluates: its local split's rows (at most `limit`), `limit` for a hub dataset,
    None when that is unknown before running."""
    files = task.data_files().get(task.split or "", [])
    if not files:
        return limit
    total = 0
    for path in files:
        total += _rows_in(path)
        if limit is not None and total >= limit:
            return limit
    return total


def _rows_in(path: Path) -> int:
    from runner.data.files import kind_of

    kind = kind_of(path)
    if kind is None:
        return 0
    try:
        return sum(1 for record in kind.read(path, None) if record.problem is None)
    except (OSError, ValueError):
        return 0
