"""A corpus of hostile inputs (issue 10): each found a crash, a hang or an unbounded allocation in
`runner validate` (and the daemon, which ran the same checks in-process). Each case now runs the
real command in a child process under an address-space limit and must end with a clean diagnostic,
exit code 1, no traceback, little CPU time and little memory.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO, llama_shapes, write_jsonl, write_safetensors_header

ADDRESS_SPACE = 1 << 30
"""The child may map at most 1 GiB: an unbounded read or a materialised range fails under it."""
CPU_SECONDS = 4.0
MAX_RSS_MB = 150


@dataclass
class Outcome:
    code: int
    output: str
    cpu_seconds: float
    max_rss_mb: float


_BOUNDED = """
import resource, runpy, sys
resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
sys.argv = ["runner", *{arguments!r}]
try:
    runpy.run_module("runner", run_name="__main__", alter_sys=True)
finally:
    peak = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
    sys.stdout.write("\\n#peak-kib " + peak.split()[1] + "\\n")
"""


def run_bounded(arguments: list[str], cwd: Path, wall: float = 60) -> Outcome:
    """`runner ARGS` in a child under RLIMIT_AS, its CPU time as the kernel counted it, and its peak
    memory as the process itself saw it (VmHWM: a forked child's own figures would count the parent's
    memory from before exec)."""
    code = _BOUNDED.format(limit=ADDRESS_SPACE, arguments=arguments)
    with open(cwd / ".output", "w+b") as output:
        process = subprocess.Popen([sys.executable, "-c", code], cwd=cwd, stdout=output, stderr=subprocess.STDOUT,
                                   env={**os.environ, "PYTHONPATH": str(REPO), "RUNNER_CACHE_DIR": str(cwd / ".cache"),
                                        "HF_HUB_CACHE": str(cwd / ".hub")})
        deadline = time.monotonic() + wall
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                process.kill()
                process.wait()
                pytest.fail(f"runner {' '.join(arguments)} hung for {wall} s")
            time.sleep(0.02)
        process.returncode = os.waitstatus_to_exitcode(status)
        output.seek(0)
        text = output.read().decode("utf-8", errors="replace")
    text, _, peak = text.rpartition("\n#peak-kib ")
    return Outcome(process.returncode, text, usage.ru_utime + usage.ru_stime, int(peak or 0) / 1024)


SPEC = """version: 1
name: hostile
method: sft
base_model: ./model
data:
  train: data/train.jsonl
"""


@pytest.fixture
def folder(tmp_path: Path, model_dir: Path) -> Path:
    (tmp_path / "model").symlink_to(model_dir)
    write_jsonl(tmp_path / "data" / "train.jsonl", [{"prompt": f"q{i}", "completion": "a"} for i in range(4)])
    return tmp_path


def gguf(path: Path, kvs: bytes, kv_count: int, tensor_count: int = 0, size: int | None = None) -> Path:
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, tensor_count, kv_count) + kvs)
    if size is not None:
        with open(path, "r+b") as handle:
            handle.truncate(size)  # sparse: no disk is used
    return path


def gguf_string(text: str) -> bytes:
    return struct.pack("<Q", len(text)) + text.encode()


def gguf_kv(key: str, kind: int, value: bytes) -> bytes:
    return gguf_string(key) + struct.pack("<I", kind) + value


def write_spec(folder: Path, text: str) -> Path:
    (folder / "job.yaml").write_bytes(text.encode("utf-8", errors="surrogatepass"))
    return folder / "job.yaml"


def spec_with(extra: str = "", **replacements: str) -> str:
    text = SPEC
    for old, new in replacements.items():
        text = text.replace(old, new)
    return text + extra


def fifo_data(folder: Path) -> str:
    os.mkfifo(folder / "data" / "pipe.jsonl")
    return spec_with(**{"data/train.jsonl": "data/pipe.jsonl"})


def device_data(device: str):
    def setup(folder: Path) -> str:
        (folder / "data" / "device.jsonl").symlink_to(device)
        return spec_with(**{"data/train.jsonl": "data/device.jsonl"})
    return setup


def deep_row(folder: Path) -> str:
    (folder / "data" / "train.jsonl").write_text('{"text": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    return SPEC


def long_row(folder: Path) -> str:
    """One line of 64 MiB of text (a sparse file of zeros is refused sooner: its NUL bytes are no text)."""
    (folder / "data" / "train.jsonl").write_bytes(b'{"text": "' + b"x" * (64 << 20))
    return SPEC


def model_folder(config, header=None, shapes=None):
    def setup(folder: Path) -> str:
        model = folder / "crafted"
        model.mkdir()
        (model / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
        if header is not None:
            blob = header.encode()
            (model / "model.safetensors").write_bytes(struct.pack("<Q", len(blob)) + blob)
        else:
            write_safetensors_header(model / "model.safetensors", shapes or llama_shapes())
        return spec_with(**{"./model": "./crafted"})
    return setup


def gguf_model(kvs: bytes, kv_count: int, size: int | None = None):
    def setup(folder: Path) -> str:
        gguf(folder / "crafted.gguf", kvs, kv_count, size=size)
        return spec_with(**{"./model": "./crafted.gguf"})
    return setup


def nested_arrays(depth: int) -> bytes:
    return struct.pack("<I", 9) + struct.pack("<IQ", 9, 1) * depth + struct.pack("<IQ", 0, 0)


def data_file(name: str, content: bytes, size: int | None = None):
    """A spec whose training data is `name`, holding `content` (made sparse up to `size`)."""
    def setup(folder: Path) -> str:
        path = folder / "data" / name
        path.write_bytes(content)
        if size is not None:
            with open(path, "r+b") as handle:
                handle.truncate(size)
        return spec_with(**{"data/train.jsonl": f"data/{name}"})
    return setup


def sparse_parquet_with_a_footer(folder: Path) -> str:
    """A terabyte (sparse) whose footer is where a parquet file's is, and says 100 bytes of zeros."""
    path = folder / "data" / "huge.parquet"
    with open(path, "wb") as handle:
        handle.write(b"PAR1")
        handle.seek((1 << 40) - 8)
        handle.write(struct.pack("<I", 100) + b"PAR1")
    return spec_with(**{"data/train.jsonl": "data/huge.parquet"})


def patched_arrow(offset_of: str, value: int):
    """A valid arrow stream of 3 rows with one int64 of its metadata replaced: the body length (which
    pyarrow then tries to allocate) or the record batch's row count."""
    def setup(folder: Path) -> str:
        import pyarrow as pa
        import pyarrow.ipc as ipc

        table = pa.table({"text": ["abcdefgh"] * 3})
        sink = pa.BufferOutputStream()
        with ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        data = sink.getvalue().to_pybytes()
        known = struct.pack("<q", 40 if offset_of == "body" else 3)  # 40 bytes of body; 3 rows
        offset = data.index(known, data.index(b"\xff\xff\xff\xff", 8))  # inside the record batch's message
        (folder / "data" / "patched.arrow").write_bytes(data[:offset] + struct.pack("<q", value) + data[offset + 8:])
        return spec_with(**{"data/train.jsonl": "data/patched.arrow"})
    return setup


def saved_state(text: str):
    """A save_to_disk folder whose state.json (the list of its arrow files) holds `text`."""
    def setup(folder: Path) -> str:
        (folder / "data" / "saved").mkdir()
        (folder / "data" / "saved" / "state.json").write_text(text)
        return spec_with(**{"data/train.jsonl": "data/saved"})
    return setup


def hub_readme(front_matter: str):
    def setup(folder: Path) -> str:
        snapshot = folder / ".hub" / "datasets--org--qa" / "snapshots" / "abc"
        snapshot.mkdir(parents=True)
        (snapshot.parent.parent / "refs").mkdir()
        (snapshot.parent.parent / "refs" / "main").write_text("abc")
        (snapshot / "README.md").write_text(f"---\n{front_matter}\n---\n")
        (snapshot / "train.jsonl").write_text('{"prompt": "p", "completion": "c"}\n')
        return spec_with(**{"train: data/train.jsonl": "train: {hub: org/qa}"})
    return setup


def alias_chain(levels: int) -> str:
    """`a0: &a0 [x, x, ...]`, then each level a list of 9 aliases of the one before: 9**levels values."""
    lines = ["a0: &a0 [" + ", ".join(["xxxxxxxx"] * 9) + "]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(lines)


def evals_with(files: dict[str, bytes | str | None], evals: str):
    """A spec with `evals: {evals}`, and files beside it (None: a FIFO)."""
    def setup(folder: Path) -> str:
        for name, content in files.items():
            path = folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if content is None:
                os.mkfifo(path)
            else:
                path.write_bytes(content.encode() if isinstance(content, str) else content)
        return spec_with(f"evals: {evals}\n")
    return setup


CASES = {
    # YAML
    "recursive alias": (lambda f: spec_with("x: &a [*a]\n"), "alias *a is used inside the value it names"),
    "500-deep flow nesting": (lambda f: spec_with("x: " + "[" * 500 + "]" * 500 + "\n"), "nested more than"),
    "10,000-deep flow nesting": (lambda f: spec_with("x: " + "[" * 10_000 + "]" * 10_000 + "\n"),
                                 "exceeded maximum nesting depth"),
    "block nesting": (lambda f: spec_with("x:\n  " + "- " * 900 + "1\n"), "nested more than"),
    "syntax error": (lambda f: spec_with("training: [1, 2\n"), "YAML syntax error"),
    # numbers
    "epochs .inf": (lambda f: spec_with("training: {epochs: .inf}\n"), "training.epochs"),
    "max_memory_gb .inf": (lambda f: spec_with("hardware: {max_memory_gb: .inf}\n"), "finite number"),
    "learning_rate 1e309": (lambda f: spec_with("training: {learning_rate: 1e309}\n"), "training.learning_rate"),
    "learning_rate .nan": (lambda f: spec_with("training: {learning_rate: .nan}\n"), "training.learning_rate"),
    "100,000-digit hex max_steps": (lambda f: spec_with("training: {max_steps: 0x" + "f" * 100_000 + "}\n"),
                                    "too large"),
    # paths
    "NUL in outputs.dir": (lambda f: spec_with('outputs: {dir: "runs\\0x"}\n'), "control character U+0000"),
    "300-character outputs.dir": (lambda f: spec_with(f"outputs: {{dir: {'d' * 300}}}\n"), "at most 120"),
    "data path too long for the filesystem": (lambda f: spec_with(**{"data/train.jsonl": "d" * 5000 + ".jsonl"}),
                                              "data.train"),
    # layers
    "layer range 0-99999999999": (lambda f: spec_with("trainable: {mode: freeze, layers: '0-99999999999'}\n"),
                                  "layer 4 does not exist"),
    # data files
    "data file is a FIFO": (fifo_data, "FIFO (named pipe), not a regular file"),
    "data file is /dev/urandom": (device_data("/dev/urandom"), "character device, not a regular file"),
    "data file is /dev/zero": (device_data("/dev/zero"), "character device, not a regular file"),
    "100,000-deep JSON row": (deep_row, "nested more than 64 levels deep"),
    "a 64 MiB single-line row": (long_row, "longer than 16 MiB"),
    # tabular data files, folders and hub datasets
    "parquet file is a FIFO": (lambda f: os.mkfifo(f / "data" / "pipe.parquet")
                               or spec_with(**{"data/train.jsonl": "data/pipe.parquet"}), "FIFO (named pipe)"),
    "parquet footer claims 4 GB": (data_file("x.parquet", b"PAR1" + b"\0" * 16 + struct.pack("<I", 2**32 - 1)
                                             + b"PAR1"), "its metadata claims 4,294,967,295 bytes"),
    "sparse 1 TB parquet": (sparse_parquet_with_a_footer, "is not a readable parquet file"),
    "a .parquet file that is JSON": (data_file("x.parquet", b'{"text": "a"}\n'), "is not a parquet file"),
    "arrow body of 2**60 bytes": (patched_arrow("body", 2**60), "is not a readable arrow file"),
    "arrow batch of 2**40 rows": (patched_arrow("rows", 2**40), "is not a readable arrow file"),
    "a 64 MiB single-line CSV row": (data_file("x.csv", b"prompt,completion\n\"" + b"x" * (64 << 20)),
                                     "longer than 16 MiB"),
    "state.json names a file outside": (saved_state('{"_data_files": [{"filename": "../../etc/passwd"}]}'),
                                        "expected an arrow file in the folder"),
    "state.json nested 100,000 deep": (saved_state("[" * 100_000 + "]" * 100_000), "nested more than"),
    "hub README 10,000-deep front matter": (hub_readme("configs: " + "[" * 10_000 + "]" * 10_000),
                                            "front matter cannot be read"),
    "hub README 9x9 alias chain": (hub_readme(alias_chain(9)), "aliases expand to more than"),
    "900 KB string aliased in samples": (lambda f: spec_with(f"description: &s {'x' * 900_000}\n"
                                                             "samples: [*s, *s, *s, *s, *s, *s, *s, *s]\n"),
                                         "aliases expand to more than 2,097,152 characters"),
    "JSONL row with a lone surrogate": (data_file("x.jsonl", b'{"prompt": "\\ud800", "completion": "a"}\n'),
                                        "lone surrogate \\ud800"),
    "sparse 1 TB JSONL": (data_file("x.jsonl", b'{"text": "a"}\n', size=1 << 40), "holds a NUL byte at offset 14"),
    "sparse 1 TB CSV": (data_file("x.csv", b"prompt,completion\n", size=1 << 40), "holds a NUL byte"),
    # model files
    "config.json is a list": (model_folder([]), "not a model config"),
    "config.json is a string": (model_folder('"llama"'), "not a model config"),
    "config.json says 10**12 layers": (model_folder({"num_hidden_layers": 10**12}), "not a plausible layer count"),
    "safetensors header is a list": (model_folder({}, header="[]"), "a JSON object was expected"),
    "safetensors entry without shape": (model_folder({}, header='{"w": {}}'), "has no shape"),
    "safetensors shape is a number": (model_folder({}, header='{"w": {"shape": 5}}'), "has no shape"),
    "safetensors header 100,000 deep": (model_folder({}, header='{"w": ' + "[" * 100_000 + "]" * 100_000 + "}"),
                                        "nested more than"),
    "GGUF block_count 10**15": (gguf_model(gguf_kv("general.architecture", 8, gguf_string("llama"))
                                           + gguf_kv("llama.block_count", 10, struct.pack("<Q", 10**15)), 2),
                                "not a plausible layer count"),
    "GGUF array of 2**63 items": (gguf_model(gguf_kv("x", 9, struct.pack("<IQ", 0, 2**63)), 1), "not a model file"),
    "GGUF 5,000 nested arrays": (gguf_model(gguf_string("x") + nested_arrays(5000), 1), "nests arrays more than"),
    "sparse 1 TB GGUF with kv_count 2**62": (gguf_model(b"", 2**62, size=1 << 40), "metadata keys"),
    # evals
    "test set is a FIFO": (evals_with({"data/test.jsonl": None}, "{sets: [{name: t, data: data/test.jsonl, "
                                      "metrics: [exact_match]}]}"), "FIFO (named pipe)"),
    "json schema 100,000 deep": (evals_with({"data/test.jsonl": '{"prompt": "p"}\n', "s.json": "[" * 100_000},
                                            "{sets: [{name: t, data: data/test.jsonl, metrics: [{json_schema: "
                                            "s.json}]}]}"), "nested more than"),
    "task YAML 10,000 deep": (evals_with({"tasks/t.yaml": "task: t\nx: " + "[" * 10_000 + "]" * 10_000},
                                         "{tasks: [{task: t, include_path: tasks}]}"), "evals.tasks[0]"),
    "task YAML that includes itself": (evals_with({"tasks/t.yaml": "task: t\ninclude: t.yaml\n"},
                                                  "{tasks: [{task: t, include_path: tasks}]}"),
                                       "includes nest more than 8 levels"),
    "include_path is /": (lambda f: spec_with("evals: {tasks: [{task: t, include_path: /}]}\n"), "entries", 15.0),
}


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_input_gets_a_diagnostic_in_bounded_time_and_memory(folder, case):
    setup, expected, *cpu_budget = CASES[case]
    write_spec(folder, setup(folder))
    outcome = run_bounded(["validate", "job.yaml"], folder)
    assert outcome.code == 1, outcome.output
    assert "Traceback" not in outcome.output and expected in outcome.output, outcome.output
    assert "job.yaml:" in outcome.output and "error:" in outcome.output, outcome.output
    assert outcome.cpu_seconds < (cpu_budget or [CPU_SECONDS])[0], outcome
    assert 0 < outcome.max_rss_mb < MAX_RSS_MB, outcome


def test_plan_and_run_refuse_what_validate_refuses(folder):
    """`plan` crashed on .inf epochs and a huge max_steps; `run` on a NUL in outputs.dir."""
    for extra, command in (("training: {epochs: .inf}\n", "plan"),
                           ("training: {max_steps: 0x" + "f" * 100_000 + "}\n", "plan"),
                           ('outputs: {dir: "runs\\0x"}\n', "run")):
        write_spec(folder, spec_with(extra))
        outcome = run_bounded([command, "job.yaml"], folder)
        assert outcome.code == 1 and "Traceback" not in outcome.output and "error:" in outcome.output, outcome.output


def test_a_syntax_error_reads_once(folder):
    write_spec(folder, spec_with("training: [1, 2\n"))
    outcome = run_bounded(["validate", "job.yaml"], folder)
    assert "while parsing a flow sequence" in outcome.output and "while while" not in outcome.output


def test_a_spec_that_is_a_fifo_is_refused_without_blocking(folder):
    os.mkfifo(folder / "pipe.yaml")
    for arguments in (["validate", "pipe.yaml"], ["validate", "."]):
        outcome = run_bounded(arguments, folder)
        assert outcome.code in (1, 2) and "Traceback" not in outcome.output, outcome.output
