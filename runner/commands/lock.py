"""`runner lock PATH...`: write runner.lock beside the specs, from the models on this machine."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from runner.errors import ExitCode
from runner.fsutil import write_atomically
from runner.spec import lockfile, modelinfo
from runner.spec.check import check_spec, display_path


def lock(paths: list[str], check: bool = False) -> int:
    from runner.commands.validate import find_specs

    by_folder: dict[Path, list[Path]] = defaultdict(list)
    for spec in find_specs(paths):
        by_folder[spec.parent].append(spec)
    failed = False
    for folder, specs in sorted(by_folder.items()):
        failed |= _lock_folder(folder, specs, check)
    return ExitCode.INVALID if failed else ExitCode.OK


def _lock_folder(folder: Path, specs: list[Path], check: bool) -> bool:
    """Write (or check) one folder's lockfile; True when something is wrong."""
    path = lockfile.lock_path(folder)
    shown = display_path(path)
    try:
        previous = lockfile.read_lock(folder)
    except lockfile.LockfileError as error:
        print(f"{shown}: {error}; writing it anew")
        previous = {}
    models: dict[str, dict] = {}
    failed = False
    for spec_path in specs:
        checked = check_spec(spec_path, check_inputs=False)
        if checked.spec is None:
            print(f"{display_path(spec_path)}: skipped: not a valid spec (see: runner validate {display_path(spec_path)})")
            failed = True
            continue
        source = checked.spec.base_model
        reference = source.describe()
        if source.job is not None or reference in models:  # another spec's output is checked through that spec
            continue
        try:
            facts = modelinfo.read_facts(source, folder)
        except modelinfo.ModelFileError as error:
            print(f"{display_path(spec_path)}: {reference}: {error}")
            failed = True
            continue
        if facts is None:
            if reference in previous:
                print(f"{shown}: {reference} is not on this machine; its entry is kept as it was")
                models[reference] = _unchanged(path, reference)
            else:
                print(f"{display_path(spec_path)}: {reference} is not on this machine; lock it where it is "
                      f"(hf download {source.hub})")
                failed = True
            continue
        if not facts.shapes:
            facts = _skeleton(source, folder, facts)
        models[reference] = lockfile.entry(source, facts)
    if not models:
        return failed
    text = lockfile.render(models)
    current = path.read_text(encoding="utf-8") if path.is_file() else None
    if text == current:
        print(f"{shown}: up to date ({len(models)} model{'s' * (len(models) != 1)})")
    elif check:
        print(f"{shown}: stale; run: runner lock {display_path(folder)}")
        failed = True
    else:
        write_atomically(path, text)
        print(f"{shown}: written ({', '.join(sorted(models))})")
    return failed


def _unchanged(path: Path, reference: str) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))["models"][reference]


def _skeleton(source, folder: Path, facts: modelinfo.ModelFacts) -> modelinfo.ModelFacts:
    """Parameter names and shapes from the meta-device skeleton, when the weight files do not carry them
    (pytorch .bin files, GGUF architectures runner cannot map); needs the [train] extra."""
    from runner.model.skeleton import build
    from runner.model.source import load_config, locate

    try:
        built = build(load_config(locate(source, folder, folder)), "sft")
    except ImportError:  # no torch or transformers here: the names are checked at plan time
        return facts
    return modelinfo.ModelFacts(facts.source, facts.config, built.shapes, built.tied, [])
