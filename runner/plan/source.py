"""Where a model comes from, what identifies it, and how to load its config and tokenizer.

The executor loads weights from the same `ModelLocation`, so what is planned is what runs.
transformers is imported inside the functions that need it.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from runner import confine, hubcache
from runner.errors import RunnerError
from runner.fsutil import cache_directory, file_sha256, stat_key
from runner.plan.models import FileIdentity, ModelIdentity
from runner.runs import latest, runs_under
from runner.spec import modelinfo
from runner.spec.check import display_path
from runner.spec.jobs import find_job_spec
from runner.spec.models import ModelSource

IDENTITY_FILES = ("*.safetensors", "*.bin", "*.json", "*.model", "*.txt", "*.gguf", "*.jinja")


@dataclass(frozen=True)
class ModelLocation:
    kind: str
    """local | gguf | hub | offline_copy | job"""
    reference: str
    path: Path | None = None
    """A model folder, or a GGUF file (kinds gguf and offline_copy)."""
    hub_id: str | None = None
    revision: str | None = None
    trust_remote_code: bool = False
    job_run: Path | None = None

    @property
    def is_gguf(self) -> bool:
        return self.kind in ("gguf", "offline_copy")

    def describe(self) -> str:
        if self.kind == "offline_copy":
            return f"{self.reference} (offline copy: {self.path.name}, dequantised)"
        if self.kind == "job":
            return f"{self.reference} (run {self.job_run})"
        if self.kind == "hub":
            return f"{self.hub_id}@{(self.revision or 'main')[:12]}"
        return str(self.path)


def locate(source: ModelSource, spec_folder: Path, run_root: Path) -> ModelLocation:
    trust = source.trust_remote_code
    if source.job is not None:
        run = latest_succeeded_run(spec_folder, source.job, run_root)
        return ModelLocation("job", f"job:{source.job}", run / "model", trust_remote_code=trust, job_run=run)
    if source.path is not None:
        try:
            path = confine.named_path(spec_folder, source.path).resolve()
            if path.is_dir():
                confine.check_tree(path, source.path)  # transformers reads the folder's files itself
        except OSError as error:
            raise RunnerError(f"base model {error}", "paths are relative to the spec file") from None
        return ModelLocation("gguf" if path.is_file() else "local", source.path, path, trust_remote_code=trust)
    snapshot = hubcache.snapshot(source.hub, source.revision)
    if snapshot is not None:
        return ModelLocation("hub", source.hub, snapshot, source.hub, snapshot.name, trust)
    if _hub_reachable(source.hub, source.revision):
        return ModelLocation("hub", source.hub, None, source.hub, source.revision, trust)
    copy = modelinfo.offline_copy(source.hub)
    if copy is not None:
        return ModelLocation("offline_copy", source.hub, copy, source.hub, trust_remote_code=trust)
    raise RunnerError(f"{source.hub} is not in the local hub cache and the hub cannot be reached",
                      f"download it once where the hub is reachable (hf download {source.hub}), "
                      "or point base_model at a local folder")


def _hub_reachable(hub_id: str, revision: str | None) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    try:
        from huggingface_hub import model_info

        model_info(hub_id, revision=revision, timeout=5)
        return True
    except Exception:  # any network or hub error means: not reachable from here, now
        return False


def latest_succeeded_run(spec_folder: Path, name: str, run_root: Path) -> Path:
    """The newest succeeded run of the spec called `name` beside this one. Only runs made from that
    spec file count (its path, or its exact bytes, as the run's plan recorded them): another spec
    with the same name in another folder writes to the same runs folder, and is not this one."""
    from runner.spec.check import check_spec

    named = find_job_spec(spec_folder, name)
    other = check_spec(named, check_inputs=False)
    if other.spec is None:
        raise RunnerError(f"the spec named '{name}' ({other.path}) is invalid",
                          f"run: runner validate {other.path}")
    runs = run_root / other.spec.outputs.dir / name
    named_path, named_sha256 = str(named.resolve()), file_sha256(named)
    made_here = [run for run in runs_under(runs, name) if run.made_from(named_path, named_sha256)]
    succeeded = latest(made_here, succeeded=True)
    if succeeded is None:
        raise RunnerError(f"'{name}' has no succeeded run under {runs} yet (of {display_path(named)})",
                          f"run it first: runner run {other.path}")
    run = succeeded.path
    if not (run / "model").is_dir():
        raise RunnerError(f"run {run} of '{name}' saved no full model (only an adapter)",
                          f"set outputs.save: merged (or full) in {other.path} and run it again")
    return run


def identity(location: ModelLocation) -> ModelIdentity:
    files: list[FileIdentity] = []
    if location.path is not None and location.path.is_file():
        files.append(_file_identity(location.path, location.path.parent))
    elif location.path is not None:
        for pattern in IDENTITY_FILES:
            for path in sorted(location.path.glob(pattern)):
                files.append(_file_identity(path, location.path))
    manifest_hash = None
    if location.job_run is not None:
        manifest_hash = file_sha256(location.job_run / "manifest.json")
    return ModelIdentity(kind=location.kind, reference=location.reference,
                         location=str(location.path or location.hub_id), revision=location.revision,
                         files=sorted(files, key=lambda f: f.path),
                         job_run=str(location.job_run) if location.job_run else None,
                         job_manifest_sha256=manifest_hash, trust_remote_code=location.trust_remote_code)


def _file_identity(path: Path, root: Path) -> FileIdentity:
    return FileIdentity(path=str(path.relative_to(root)), sha256=file_sha256(path), size=path.stat().st_size)


# --- config and tokenizer ----------------------------------------------------------------------

def pretrained_source(location: ModelLocation) -> tuple[str, dict]:
    """What `from_pretrained` takes for the config and tokenizer: a folder or hub id, and kwargs.

    A GGUF file is converted once (config without its quantization_config, and the
    tokenizer) into a cached folder; reading a GGUF through transformers takes seconds.
    """
    kwargs = {"trust_remote_code": location.trust_remote_code}
    if location.is_gguf:
        if location.kind == "gguf":
            confine.check(location.path, location.reference)
        return str(gguf_companion(location.path)), kwargs
    if location.path is not None:
        confine.check_tree(location.path, location.reference)  # the library opens its files itself
        _check_metadata_sizes(location.path)
        return str(location.path), kwargs
    return location.hub_id, {**kwargs, "revision": location.revision}


MAX_METADATA_BYTES = 256 * 2**20
"""A model folder's config and tokenizer files, at most: transformers reads each whole (a real
tokenizer.json is under 40 MB; a sparse terabyte one would be read into memory)."""
METADATA_SUFFIXES = (".json", ".txt", ".jinja", ".model", ".tiktoken")


def _check_metadata_sizes(folder: Path) -> None:
    for entry in os.scandir(folder):
        if entry.name.endswith(METADATA_SUFFIXES) and entry.is_file() and entry.stat().st_size > MAX_METADATA_BYTES:
            raise RunnerError(f"{folder / entry.name} is {entry.stat().st_size:,} bytes; a model's config and "
                              f"tokenizer files are read whole, and at most {MAX_METADATA_BYTES:,} are",
                              "is it the file it should be? (a tokenizer.json is tens of megabytes)")


GGUF_COMPANION_LAYOUT = 2
"""Part of the companion folder's cache key: raised when what the folder holds changes (2: the config
names its architecture)."""


def gguf_companion(gguf_path: Path) -> Path:
    folder = cache_directory() / "gguf-hf" / stat_key(gguf_path, GGUF_COMPANION_LAYOUT)
    if (folder / "config.json").is_file() and (folder / "tokenizer_config.json").is_file():
        return folder
    from transformers import AutoConfig, AutoTokenizer
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    config = AutoConfig.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    # transformers marks GGUF models as quantised even after dequantising them, and the
    # trainers then refuse to train them; the weights we load are plain fp32.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    # A GGUF's config names no architecture; libraries that load the folder by its path (TRL's GRPO
    # reference model) read it from there.
    if config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        config.architectures = [MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[config.model_type]]
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    staging = folder.with_name(folder.name + f".{os.getpid()}.tmp")
    config.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    if folder.exists():  # another process converted it meanwhile
        shutil.rmtree(staging)
    else:
        staging.rename(folder)
    return folder


def load_config(location: ModelLocation):
    from transformers import AutoConfig

    source, kwargs = pretrained_source(location)
    return AutoConfig.from_pretrained(source, **kwargs)


def load_tokenizer(location: ModelLocation):
    from transformers import AutoTokenizer

    source, kwargs = pretrained_source(location)
    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    if not tokenizer.is_fast:
        raise RunnerError(f"{location.describe()} has only a slow (Python) tokenizer",
                          "runner needs a fast tokenizer (tokenizer.json) to map the loss mask to tokens")
    return tokenizer
