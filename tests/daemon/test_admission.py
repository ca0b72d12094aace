"""Admission: what the daemon makes of a spec's check (a pure function of the check's report), and the
daemon with real processes against poison specs dropped beside a valid job (issue 10)."""

import json
import os
import struct
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runner.daemon.admission import Allowances, verdict
from runner.daemon.states import State
from tests.conftest import write_safetensors_header
from tests.daemon.harness import spec_text, wait_until

VALID = {"valid": True, "name": "job", "depends_on": ["base"], "runs_code": []}
REWARD = {"kind": "reward_function", "path": "grpo.reward.function", "what": "evil:score", "line": 9}
REMOTE = {"kind": "remote_code", "path": "base_model.trust_remote_code", "what": "./model", "line": 4}


def report(files, diagnostics=()):
    """A report as the worker's reply carries it (JSON): `runner validate --format json` of one spec."""
    errors = sum(d["severity"] == "error" for d in diagnostics)
    return json.loads(json.dumps({"format_version": "1.0", "valid": not errors, "error_count": errors,
                                  "warning_count": len(diagnostics) - errors, "diagnostics": list(diagnostics),
                                  "files": [{"file": "job.yaml", "data": {}, **record} for record in files]}))


def test_a_valid_report_admits_with_its_dependencies_and_priority():
    admitted = verdict(report([{**VALID, "priority": 7}]), "", Allowances())
    assert admitted.valid and admitted.name == "job" and admitted.depends_on == ["base"] and admitted.priority == 7
    for odd in (True, 10**9, "7", 1.5, None):  # a report says what validate said; odd values never queue oddly
        assert verdict(report([{**VALID, "priority": odd}]), "", Allowances()).priority == 0


def test_code_is_refused_unless_allowed_and_the_refusal_names_the_option():
    path = report([{**VALID, "file": "g.yaml", "runs_code": [REWARD, REMOTE]}])
    refused = verdict(path, "", Allowances())
    assert not refused.valid and refused.reason.startswith("grpo.reward.function: 'evil:score' runs Python code")
    assert "--allow-reward-functions" in refused.reason
    assert [d["hint"] for d in refused.diagnostics] == ["start runner watch with --allow-reward-functions to allow it",
                                                        "start runner watch with --allow-remote-code to allow it"]
    assert refused.diagnostics[0]["range"] == {"filename": "g.yaml", "start": {"line": 9, "column": 1}}
    only_reward = verdict(path, "", Allowances(reward_functions=True))
    assert not only_reward.valid and "--allow-remote-code" in only_reward.reason
    assert verdict(path, "", Allowances(reward_functions=True, remote_code=True)).valid


def test_a_check_that_failed_or_replied_nonsense_is_an_invalid_spec():
    for nonsense in (None, [], "{", {"files": "x", "diagnostics": []}, {"files": [], "diagnostics": []}):
        crashed = verdict(nonsense, "MemoryError", Allowances())
        assert not crashed.valid and crashed.reason == "the check of this spec failed: MemoryError"
    assert verdict(None, "", Allowances()).reason == "the check of this spec failed: it made no report"


def test_an_invalid_report_keeps_its_diagnostics_in_one_line():
    diagnostic = {"severity": "error", "summary": "unknown key 'lerning_rate'", "path": "training.lerning_rate",
                  "range": {"filename": "sub/job.yaml", "start": {"line": 7, "column": 3}}, "hint": "did you mean x"}
    invalid = verdict(report([{"valid": False}], [diagnostic]), "", Allowances())
    assert invalid.reason == "1 error(s), the first: sub/job.yaml:7: training.lerning_rate: unknown key 'lerning_rate'"
    assert invalid.diagnostics == [diagnostic] and invalid.hint == "did you mean x"


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=20)
KEYS = st.sampled_from(["files", "diagnostics", "valid", "name", "runs_code", "depends_on", "kind", "file", "line",
                        "priority"])


@settings(max_examples=200, deadline=None)
@given(st.one_of(JSON, st.dictionaries(KEYS, st.one_of(JSON, st.lists(st.dictionaries(KEYS, JSON), max_size=3)))))
def test_any_report_is_a_verdict(report):
    made = verdict(report, "", Allowances())
    assert made.valid == (made.reason == "") and "\n" not in made.reason


WARNING = {"severity": "warning", "summary": "few rows", "detail": "", "path": "data.train", "hint": None,
           "range": {"filename": "g.yaml", "start": {"line": 6, "column": 10}, "end": {"line": 6, "column": 26}}}
FULL = report([{**VALID, "file": "g.yaml", "priority": 3, "runs_code": [REWARD], "data": {"train": {
    "rows": 4, "usable_rows": 4, "format": "prompt_completion", "variant": None, "checked": True,
    "sources": [{"source": "data/train.jsonl", "kind": "file", "rows": 4, "usable_rows": 4,
                 "format": "prompt_completion", "variant": None, "weight": 1.0, "unchecked": None}]}}}], [WARNING])


def places(value, path=()):
    """Every place in a JSON value, as the keys and indexes that lead to it."""
    yield path
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, inner in items:
        yield from places(inner, (*path, key))


def test_the_full_report_admits():
    admitted = verdict(FULL, "", Allowances(reward_functions=True))
    assert admitted.valid and admitted.priority == 3 and admitted.depends_on == ["base"]


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_a_report_changed_anywhere_is_still_a_verdict(data):
    """Totality near the valid reports too: any one place of a full report replaced by any JSON value."""
    changed = json.loads(json.dumps(FULL))
    *above, last = data.draw(st.sampled_from(list(places(changed))[1:]))
    container = changed
    for key in above:
        container = container[key]
    container[last] = data.draw(JSON)
    made = verdict(changed, "", Allowances(reward_functions=True))
    assert made.valid == (made.reason == "") and "\n" not in made.reason


def poison_folder(folder):
    """Specs that crashed, hung or ran code in the daemon before, each with what its reason must say."""
    (folder / "data" / "pipe.jsonl").parent.mkdir(exist_ok=True)
    os.mkfifo(folder / "data" / "pipe.jsonl")
    (folder / "data" / "zero.jsonl").symlink_to("/dev/zero")
    crafted = folder / "crafted"
    crafted.mkdir()
    (crafted / "config.json").write_text(json.dumps({"num_hidden_layers": 10**12}))
    write_safetensors_header(crafted / "model.safetensors", {"w": (2, 2)})
    (folder / "evil.py").write_text(f"open({str(folder / 'PWNED')!r}, 'w').write('x')\n"
                                    "def score(prompts, completions):\n    return [0.0] * len(completions)\n")
    grpo = spec_text("reward").replace("method: sft", "method: grpo") + "grpo: {reward: {function: 'evil:score'}}\n"
    specs = {
        "alias.yaml": (spec_text("alias", "x: &a [*a]\n"), "used inside the value it names"),
        "deep.yaml": (spec_text("deep", "x: " + "[" * 500 + "]" * 500 + "\n"), "nested more than"),
        "fifo-data.yaml": (spec_text("fifo-data").replace("train.jsonl", "pipe.jsonl"), "FIFO"),
        "zero-data.yaml": (spec_text("zero-data").replace("train.jsonl", "zero.jsonl"), "outside the watched folder"),
        "layers.yaml": (spec_text("layers", "trainable: {mode: freeze, layers: '0-99999999999'}\n"), "does not exist"),
        "nul.yaml": (spec_text("nul", 'outputs: {dir: "runs\\0x"}\n'), "control character"),
        "huge.yaml": (spec_text("huge", "# " + "x" * 2**20 + "\n"), "larger than"),
        "model.yaml": (spec_text("model").replace("./model", "./crafted"), "not a plausible layer count"),
        "reward.yaml": (grpo, "--allow-reward-functions"),
        "remote.yaml": (spec_text("remote").replace("base_model: ./model",
                                                    "base_model: {path: ./model, trust_remote_code: true}"),
                        "--allow-remote-code"),
        "hex.yaml": (spec_text("hex", "training: {max_steps: 0x" + "f" * 100_000 + "}\n"), "too large"),
    }
    for name, (text, _) in specs.items():
        (folder / name).write_bytes(text.encode())
    os.mkfifo(folder / "pipe.yaml")  # a FIFO named like a spec
    (folder / "crash.yaml").write_bytes(struct.pack("<Q", 0))  # not a spec at all: ignored
    return {name: reason for name, (_, reason) in specs.items()}


def test_poison_specs_beside_a_valid_job(daemon):
    daemon.start()
    expected = poison_folder(daemon.folder)
    (daemon.folder / "valid.yaml").write_text(spec_text("valid"))
    jobs = {os.path.basename(job.path): job for job in daemon.all_terminal(len(expected) + 1, timeout=180)}
    assert jobs["valid.yaml"].state == State.SUCCEEDED
    for name, reason in expected.items():
        job = jobs[name]
        assert job.state == State.INVALID and reason in job.reason, (name, job.reason)
        assert "\n" not in job.reason and "Traceback" not in job.reason
    assert not (daemon.folder / "PWNED").exists()
    assert any(e["event"] == "spec_ignored" and e["path"].endswith("pipe.yaml") for e in daemon.events())
    code, output = daemon.cli("status")
    assert code == 0 and "--allow-remote-code" in output
    started = time.monotonic()
    assert daemon.stop() == 0 and time.monotonic() - started < 10  # SIGTERM honoured, FIFO or not


def test_allowed_reward_functions_run(daemon, tmp_path):
    daemon.start("--allow-reward-functions")
    (daemon.folder / "evil.py").write_text("def score(prompts, completions):\n    return [0.0] * len(completions)\n")
    (daemon.folder / "reward.yaml").write_text(
        spec_text("reward").replace("method: sft", "method: grpo") + "grpo: {reward: {function: 'evil:score'}}\n")
    (job,) = daemon.all_terminal(1)
    assert job.state == State.SUCCEEDED
    wait_until(lambda: any(e["event"] == "daemon_started" and e["allow_reward_functions"] for e in daemon.events()))


def test_a_spec_reads_nothing_outside_its_folder_nor_quotes_what_it_reads(daemon, tmp_path):
    """The confused deputy (issue 20): data that is a link out of the folder, an absolute path, or `~/...`
    names a file the daemon can read and the author cannot; the job is invalid without a byte of it shown
    in `runner status`, the JSON API or the daemon's log. A file inside the folder is checked, not quoted."""
    home = tmp_path / "home"
    home.mkdir()
    secret = "hf_s3cr3tT0k3n"
    (home / "token.csv").write_text(f"{secret},q\n1,2\n")
    daemon.env["HOME"] = str(home)
    (daemon.folder / "data" / "link.csv").symlink_to(home / "token.csv")
    (daemon.folder / "data" / "mine.csv").write_text(f"{secret},q\n1,2\n")
    columns = "columns: {prompt: question}}\n"
    specs = {"link.yaml": "data/link.csv", "absolute.yaml": str(home / "token.csv"), "tilde.yaml": "~/token.csv"}
    daemon.start()
    for file, data in specs.items():
        name = file.removesuffix(".yaml")
        (daemon.folder / file).write_text(spec_text(name).replace("train: data/train.jsonl",
                                                                  f"train: {{path: {data}, {columns}"))
    (daemon.folder / "mine.yaml").write_text(spec_text("mine").replace("train: data/train.jsonl",
                                                                         f"train: {{path: data/mine.csv, {columns}"))
    jobs = {os.path.basename(job.path): job for job in daemon.all_terminal(4)}
    for file in specs:
        assert jobs[file].state == State.INVALID and "outside the watched folder" in jobs[file].reason, jobs[file]
    assert jobs["mine.yaml"].state == State.INVALID and "has no column 'question'" in jobs["mine.yaml"].reason
    code, text = daemon.cli("status", "--format", "json")
    code_text, human = daemon.cli("status")
    shown = text + human + (daemon.state / "daemon.jsonl").read_text() + "".join(
        path.read_text() for path in (daemon.state / "logs").glob("*.log"))
    assert code == code_text == 0 and "outside the watched folder" in shown and secret not in shown


@pytest.mark.skipif(os.geteuid() != 0, reason="a spec of another owner needs root to make")
def test_a_spec_reads_only_what_its_author_could(daemon):
    """Inside the folder, a file its author may not read (a colleague's private folder) is refused; the same
    spec owned by someone who may read it is valid."""
    private = daemon.folder / "team-a"
    private.mkdir(mode=0o700)
    (private / "train.jsonl").write_text('{"prompt": "q", "completion": "a"}\n' * 4)
    os.chmod(daemon.folder, 0o755)
    daemon.start()
    text = spec_text("theirs").replace("data/train.jsonl", "team-a/train.jsonl")
    (daemon.folder / "theirs.yaml.tmp").write_text(text)
    os.chown(daemon.folder / "theirs.yaml.tmp", 65534, -1)  # nobody's spec
    os.rename(daemon.folder / "theirs.yaml.tmp", daemon.folder / "theirs.yaml")
    (job,) = daemon.all_terminal(1)
    assert job.state == State.INVALID and "its author (uid 65534) may not read" in job.reason, job.reason
    (daemon.folder / "own.yaml").write_text(text.replace("name: theirs", "name: own"))  # root's: it may
    jobs = {os.path.basename(job.path): job for job in daemon.all_terminal(2)}
    assert jobs["own.yaml"].state == State.SUCCEEDED
