"""A source of rows: what a spec's `data.train` / `data.eval` entry resolves to, and its rows.

Every stage reads data through `RowSource` (the validator checks its rows, the planner measures
them, the executor trains on them, the plan hashes them), so a kind of source or file is added here
and in `runner.data.files`, nowhere else.

| the spec says                    | resolves to                                                       |
|----------------------------------|-------------------------------------------------------------------|
| `path: x.jsonl` (.csv, .parquet, .arrow) | that file                                                 |
| `path: folder` with dataset_dict.json    | a DatasetDict `save_to_disk` folder: the split's arrow files |
| `path: folder` with state.json           | a Dataset `save_to_disk` folder: its arrow files          |
| `path: folder` (anything else)           | the data files in it, split as on the hub (below)          |
| `hub: org/name`                  | the snapshot in the local hub cache, split as on the hub; never downloaded |

Splits of a folder of files follow the datasets library: the `configs` of a README.md front matter
when there is one, else a name or folder that says train / validation / test (`data/train-00000-of-
00002.parquet`, `test.jsonl`, `valid/x.csv`), else every file is `train`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from runner import confine, formats, hubcache
from runner.data.files import SUFFIXES, DataFileError, FileKind, RawRow, RowAt, kind_of, pyarrow_install, \
    pyarrow_missing
from runner.fsutil import file_sha256
from runner.readers import loads_bounded, read_regular
from runner.spec.yamlpos import parse_yaml

if TYPE_CHECKING:
    from runner.spec.models import DataSource

MAX_FILES = 10_000
"""Data files of one folder or hub dataset; real datasets have at most a few thousand shards."""
MAX_DEPTH = 8
MAX_METADATA_BYTES = 2**20
"""dataset_dict.json, state.json and README.md: kilobytes in real datasets."""
SPLIT_KEYWORDS = {"train": ("train", "training"), "validation": ("validation", "valid", "dev", "val"),
                  "test": ("test", "testing", "eval", "evaluation")}
_SHARDED = re.compile(r"^data/(?P<split>\w+)-\d{5}-of-\d{5}[^/]*$")
_WORDS = re.compile(r"[-._ 0-9]+")


@dataclass(frozen=True)
class RowSource:
    """One source, resolved: the files its rows come from, in order, and how a row is taken from them."""

    label: str
    """The source as the spec names it (a path, or hub:org/name), with its split."""
    kind: str
    """file | folder | saved (a save_to_disk folder) | hub"""
    root: Path
    """The file, or the folder its files are in (for hub: the snapshot)."""
    files: tuple[Path, ...]
    split: str | None = None
    config: str | None = None
    revision: str | None = None
    """For hub: the commit of the snapshot read."""
    columns: tuple[tuple[str, str], ...] = ()
    """(row key, column) pairs; empty: every column, under its own name."""
    weight: float = 1.0

    def records(self) -> Iterator[RawRow]:
        """Every row of every file, with the column mapping applied; DataFileError for a file that
        cannot be read as a whole."""
        wanted = [column for _, column in self.columns] if self.columns else None
        for path in self.files:
            kind = kind_of(path)
            try:
                for record in kind.read(path, wanted):
                    yield self._mapped(record) if self.columns and record.problem is None else record
            except OSError as error:  # not a regular file (a FIFO or a device would never end), a permission
                raise _unreadable(error) from None

    def _mapped(self, record: RawRow) -> RawRow:
        value = record.value
        if not isinstance(value, dict):
            return record
        missing = [(key, column) for key, column in self.columns if column not in value]
        if missing:
            key, column = missing[0]
            return RawRow(record.at, problem=f'no "{column}" column (mapped to "{key}" by columns)')
        return RawRow(record.at, {key: value[column] for key, column in self.columns})

    def rows(self, format_name: str | None) -> Iterator[tuple[RowAt, dict | None, str | None]]:
        """(where, row, problem) for every row; rows must all be `format_name` (None: the first usable
        row decides)."""
        return formats.checked(((r.at, r.value, r.problem) for r in self.records()), format_name)

    @property
    def file_kinds(self) -> list[FileKind]:
        return list({kind_of(path).name: kind_of(path) for path in self.files}.values())

    def unreadable_here(self) -> str | None:
        """Why this source's rows cannot be read on this machine (pyarrow missing), with the fix."""
        tabular = [kind.name for kind in self.file_kinds if kind.needs_pyarrow]
        reason = pyarrow_missing() if tabular else None
        return f"{reason}, so its {' and '.join(tabular)} rows could not be read ({pyarrow_install()})" if reason else None

    def fingerprint(self) -> tuple[str, list[tuple[str, str, int]]]:
        """(sha256 of the source, [(file, sha256, size)]): a single file's own sha256; for several, the
        sha256 of their names (relative to the source's folder) and hashes, so a changed, added or
        removed file changes it."""
        files = [(str(path), file_sha256(path), path.stat().st_size) for path in self.files]
        if self.kind == "file":
            return files[0][1], files
        import hashlib  # here, as the file hashes: validate hashes nothing

        listing = "".join(f"{_relative(Path(path), self.root)}\t{sha}\n" for path, sha, _ in files)
        return hashlib.sha256(listing.encode()).hexdigest(), files


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


# --- resolving a spec's source ----------------------------------------------------------------------

def resolve(source: DataSource, folder: Path, role: str) -> RowSource:
    """The rows `source` names, relative to the spec's `folder`; DataFileError (with a hint) when it
    cannot be read here."""
    try:
        return _resolve(source, folder, role)
    except OSError as error:  # a name too long for the filesystem, a folder we may not list, ...
        raise _unreadable(error) from None


def _unreadable(error: OSError) -> DataFileError:
    if error.strerror is None:  # runner's own UnreadableFile: its text names the file and what it is
        return DataFileError(str(error))
    return DataFileError(f"{error.filename}: {error.strerror}" if error.filename else error.strerror)


def _resolve(source: DataSource, folder: Path, role: str) -> RowSource:
    columns = tuple(source.columns.items())
    common = dict(columns=columns, weight=source.weight)
    if source.hub is not None:
        snapshot = hubcache.snapshot(source.hub, source.revision, "dataset")
        if snapshot is None:
            fetch = f"hf download {source.hub} --repo-type dataset" + (
                f" --revision {source.revision}" if source.revision else "")
            raise DataFileError(
                f"dataset {source.describe()} is not in the Hugging Face cache "
                f"({hubcache.repository_folder(source.hub, 'dataset')}); runner never downloads data",
                f"fetch it where the hub is reachable: {fetch} (set HF_HUB_CACHE to use another cache)")
        config, split, files = _split_of_files(snapshot, source, role, source.describe())
        return RowSource(_label(f"hub:{source.hub}", config, split), "hub", snapshot, files, split, config,
                         snapshot.name, **common)
    location = confine.named_path(folder, source.path)
    if not location.is_dir():
        kind = kind_of(location)
        if kind is None:
            raise DataFileError(f"{source.path}: runner reads {_listed(SUFFIXES)} files, a save_to_disk folder, "
                                "or a folder of such files", "convert it, e.g. to JSON Lines (.jsonl)")
        for key in ("split", "config"):
            if getattr(source, key) is not None:
                raise DataFileError(f"{source.path} is one file; {key} applies to folders and hub datasets")
        kind.sniff(location)
        return RowSource(source.path, "file", location, (location,), **common)
    if (location / "dataset_dict.json").is_file() or (location / "state.json").is_file():
        if source.config is not None:
            raise DataFileError(f"{source.path} is a save_to_disk folder; config applies to hub datasets and "
                                "folders whose README.md defines configs")
        split, files = _saved(location, source.split, role, source.path)
        return RowSource(_label(source.path, None, split), "saved", location, files, split, **common)
    config, split, files = _split_of_files(location, source, role, source.path)
    return RowSource(_label(source.path, config, split), "folder", location, files, split, config, **common)


def _listed(names: tuple[str, ...]) -> str:
    return ", ".join(names[:-1]) + " and " + names[-1]


def _label(name: str, config: str | None, split: str | None) -> str:
    qualifiers = [text for text in (config, split) if text]
    return name + (f" ({', '.join(qualifiers)})" if qualifiers else "")


def _choose_split(splits: dict[str, Any], wanted: str | None, role: str, where: str) -> str:
    found = ", ".join(splits) or "none"
    if wanted is not None:
        if wanted not in splits:
            raise DataFileError(f"{where} has no split '{wanted}' (its splits: {found})")
        return wanted
    if len(splits) == 1:
        return next(iter(splits))
    if role == "train" and "train" in splits:
        return "train"
    raise DataFileError(f"{where} has the splits {found}; name one with split:", f"e.g. split: {next(iter(splits))}")


# --- save_to_disk folders ---------------------------------------------------------------------------------

def _saved(location: Path, wanted: str | None, role: str, where: str) -> tuple[str | None, tuple[Path, ...]]:
    """(split, arrow files) of a save_to_disk folder: a DatasetDict (one folder per split) or a Dataset."""
    if (location / "dataset_dict.json").is_file():
        record = _json_file(location / "dataset_dict.json")
        splits = record.get("splits") if isinstance(record, dict) else None
        if not isinstance(splits, list) or not all(isinstance(s, str) and _plain_name(s) for s in splits):
            raise DataFileError(f"{location / 'dataset_dict.json'} does not list its splits")
        split = _choose_split(dict.fromkeys(splits), wanted, role, where)
        return split, _saved_files(location / split)
    if wanted is not None:
        state = _json_file(location / "state.json")
        saved_split = state.get("_split") if isinstance(state, dict) else None
        if saved_split is not None and wanted != saved_split:
            raise DataFileError(f"{where} is one saved split ({saved_split or 'unnamed'}), not '{wanted}'",
                                "remove split:, or name the DatasetDict folder above it")
    return None, _saved_files(location)


def _saved_files(location: Path) -> tuple[Path, ...]:
    state = _json_file(location / "state.json")
    entries = state.get("_data_files") if isinstance(state, dict) else None
    if not isinstance(entries, list) or not entries:
        raise DataFileError(f"{location / 'state.json'} does not list the dataset's arrow files")
    files = []
    for entry in entries:
        name = entry.get("filename") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not _plain_name(name) or not name.endswith(".arrow"):
            raise DataFileError(f"{location / 'state.json'} names {name!r}; expected an arrow file in the folder")
        if not (location / name).exists():
            raise DataFileError(f"{location / name} is missing (named in state.json)")
        files.append(location / name)
    return tuple(files)


def _plain_name(name: str) -> bool:
    return bool(name) and "/" not in name and "\\" not in name and name not in (".", "..")


def _json_file(path: Path) -> Any:
    try:
        return loads_bounded(read_regular(path, MAX_METADATA_BYTES))
    except OSError as error:
        raise _unreadable(error) from None
    except ValueError as error:
        raise DataFileError(f"{path} is not valid JSON: {error}") from None


# --- folders of data files (a hub snapshot, or a local folder) -------------------------------------------

def _split_of_files(root: Path, source: DataSource, role: str, where: str):
    """(config, split, files) of a folder of data files, split the way the datasets library does."""
    names = _data_files(root)
    configs, default = _readme_configs(root)
    if configs:
        config = _choose_config(configs, default, source.config, where)
        splits = {split: _matching(names, patterns) for split, patterns in configs[config].items()}
    else:
        if source.config is not None:
            raise DataFileError(f"{where} defines no configs (no configs: in a README.md front matter)",
                                "remove config:")
        config, splits = None, _inferred_splits(names)
    splits = {split: files for split, files in splits.items() if files}
    if not splits:
        raise DataFileError(f"{where} holds no data files ({_listed(SUFFIXES)})")
    split = _choose_split(splits, source.split, role, where + (f" ({config})" if config else ""))
    return config, split, tuple(root / name for name in splits[split])


def _data_files(root: Path) -> list[str]:
    """The data files under `root` (relative POSIX paths, sorted), hidden ones and deep ones left out."""
    found = []
    for folder, subfolders, files in os.walk(root):
        depth = len(Path(folder).relative_to(root).parts)
        subfolders[:] = sorted(name for name in subfolders if not name.startswith(".") and depth < MAX_DEPTH)
        for name in files:
            if not name.startswith(".") and kind_of(Path(name)) is not None:
                found.append((Path(folder) / name).relative_to(root).as_posix())
                if len(found) > MAX_FILES:
                    raise DataFileError(f"{root} holds more than {MAX_FILES:,} data files")
    return sorted(found)


def _inferred_splits(names: list[str]) -> dict[str, list[str]]:
    """The first rule that finds a split decides: sharded names (data/train-00000-of-00002.parquet), then a
    folder named after a split, then a file named after one; otherwise every file is train."""
    sharded: dict[str, list[str]] = {}
    for name in names:
        match = _SHARDED.match(name)
        if match:
            sharded.setdefault(match["split"], []).append(name)
    if sharded:
        return sharded
    for words_of in (lambda name: [w for part in PurePosixPath(name).parts[:-1] for w in _WORDS.split(part)],
                     lambda name: _WORDS.split(PurePosixPath(name).name)[:-1]):
        found: dict[str, list[str]] = {}
        for name in names:
            words = set(words_of(name))
            split = next((split for split, keywords in SPLIT_KEYWORDS.items() if words & set(keywords)), None)
            if split is not None:
                found.setdefault(split, []).append(name)
        if found:
            return found
    return {"train": names}


def _readme_configs(root: Path) -> tuple[dict[str, dict[str, list[str]]], str | None]:
    """({config: {split: [glob]}}, the default config) from a README.md front matter's `configs`."""
    readme = root / "README.md"
    try:
        text = read_regular(readme, MAX_METADATA_BYTES).decode("utf-8", errors="replace") if readme.is_file() else ""
    except OSError:
        text = ""
    if not text.startswith("---"):
        return {}, None
    front, _, _ = text[3:].partition("\n---")
    document, diagnostics = parse_yaml(front, str(readme))  # the spec's own bounds: aliases, depth, size, tags
    errors = [diagnostic for diagnostic in diagnostics if diagnostic.is_error]
    if document is None or errors:
        first = errors[0]
        where = f" (line {first.span.line + 1})" if first.span else ""
        raise DataFileError(f"{readme}: its front matter cannot be read{where}: {first.summary}")
    header = document.data
    entries = header.get("configs") if isinstance(header, dict) else None
    if not isinstance(entries, list):
        return {}, None
    configs, default = {}, None
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("config_name"), str):
            raise DataFileError(f"{readme}: each entry of configs needs a config_name")
        configs[entry["config_name"]] = _config_splits(entry.get("data_files"), readme)
        if entry.get("default") is True:
            default = entry["config_name"]
    return configs, default


def _config_splits(data_files: Any, readme: Path) -> dict[str, list[str]]:
    if isinstance(data_files, str):
        return {"train": [data_files]}
    if isinstance(data_files, list) and all(isinstance(item, str) for item in data_files):
        return {"train": list(data_files)}
    if isinstance(data_files, list):
        splits = {}
        for item in data_files:
            paths = item.get("path") if isinstance(item, dict) else None
            paths = [paths] if isinstance(paths, str) else paths
            if not isinstance(item.get("split") if isinstance(item, dict) else None, str) or not isinstance(paths, list):
                raise DataFileError(f"{readme}: data_files entries need a split and a path")
            splits[item["split"]] = [str(path) for path in paths]
        return splits
    raise DataFileError(f"{readme}: a config's data_files must be a path, a list of paths, or splits with paths")


def _choose_config(configs: dict[str, Any], default: str | None, wanted: str | None, where: str) -> str:
    if wanted is not None:
        if wanted not in configs:
            raise DataFileError(f"{where} has no config '{wanted}' (its configs: {', '.join(configs)})")
        return wanted
    if default is None and len(configs) == 1:
        default = next(iter(configs))
    if default is None and "default" in configs:
        default = "default"
    if default is None:
        raise DataFileError(f"{where} has the configs {', '.join(configs)}; name one with config:",
                            f"e.g. config: {next(iter(configs))}")
    return default


def _matching(names: list[str], patterns: list[str]) -> list[str]:
    globs = [Glob(pattern) for pattern in patterns]
    return [name for name in names if any(glob.matches(name) for glob in globs)]


class Glob:
    """A hub data_files pattern: `**/` any folders (or none), `**` anything, `*` and `?` within one name,
    `[...]` a class. Matched by stepping every place the pattern can be at once (a Thompson NFA), so a
    README's pattern costs at most len(name) x len(pattern) steps: a regex built from `*a*a*a*a*b`
    backtracks exponentially, and a dataset README is anyone's."""

    LITERAL, ONE, CLASS, STAR, ANYTHING, FOLDERS = range(6)

    def __init__(self, pattern: str) -> None:
        self.tokens: list[tuple[int, str]] = []
        pattern, i = pattern.removeprefix("./"), 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                token, i = (self.FOLDERS, ""), i + 3
            elif pattern.startswith("**", i):
                token, i = (self.ANYTHING, ""), i + 2
            elif pattern[i] == "*":
                token, i = (self.STAR, ""), i + 1
            elif pattern[i] == "?":
                token, i = (self.ONE, ""), i + 1
            elif pattern[i] == "[" and "]" in pattern[i + 1:]:
                end = pattern.index("]", i + 1)
                token, i = (self.CLASS, _class_members(pattern[i + 1:end])), end + 1
            else:
                token, i = (self.LITERAL, pattern[i]), i + 1
            self.tokens.append(token)

    def matches(self, name: str) -> bool:
        places = self._closure({(0, False)})
        for character in name:
            places = self._closure({after for place in places for after in self._step(place, character)})
            if not places:
                return False
        return (len(self.tokens), False) in places

    def _step(self, place: tuple[int, bool], character: str) -> list[tuple[int, bool]]:
        """Where the pattern can be after `character`, from `place` ((token index, inside a `**/`))."""
        index, inside = place
        if index == len(self.tokens):
            return []
        kind, value = self.tokens[index]
        if kind == self.FOLDERS:  # (?:.*/)?: anything up to and including a slash
            return [(index, True)] + ([(index + 1, False)] if character == "/" else [])
        if kind == self.ANYTHING:
            return [place]
        if kind == self.STAR:
            return [place] if character != "/" else []
        if kind == self.ONE:
            return [(index + 1, False)] if character != "/" else []
        if kind == self.CLASS:
            return [(index + 1, False)] if character in value else []
        return [(index + 1, False)] if character == value else []

    def _closure(self, places: set[tuple[int, bool]]) -> set[tuple[int, bool]]:
        """`places` and where each can go without reading anything (past a `*`, `**`, or an empty `**/`)."""
        found, todo = set(places), list(places)
        while todo:
            index, inside = todo.pop()
            if index < len(self.tokens) and not inside and self.tokens[index][0] in (
                    self.STAR, self.ANYTHING, self.FOLDERS) and (index + 1, False) not in found:
                found.add((index + 1, False))
                todo.append((index + 1, False))
        return found


def _class_members(text: str) -> str:
    """The characters of a `[...]` class (ranges like a-z expanded; at most a few hundred)."""
    members, i = set(), 0
    while i < len(text):
        if i + 2 < len(text) and text[i + 1] == "-":
            low, high = ord(text[i]), ord(text[i + 2])
            members.update(chr(code) for code in range(low, min(high, low + 512) + 1))
            i += 3
        else:
            members.add(text[i])
            i += 1
    return "".join(sorted(members))
