"""The console of a run: on a terminal the plan, one progress bar and the summary; JSON event lines
when stdout is not a terminal or when asked; library warnings once each, in events.jsonl only."""

import json
import logging
import os
import pty
import subprocess
import sys
import warnings

import pytest

from runner.cli import main
from runner.execute import library_output
from runner.execute.events import Console, EventLog, guard_console
from tests.conftest import TINY_SPEC
from tests.execute.test_job import FAST


def read_all(fd) -> str:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the other side closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", errors="replace")


@pytest.mark.slow
def test_a_terminal_gets_the_plan_one_progress_bar_and_the_summary(tiny_project, tmp_path):
    spec = tiny_project(TINY_SPEC + FAST + "samples: [What is your name?]\n")
    leader, follower = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "runner", "run", str(spec), "--runs-dir", str(tmp_path)],
                               stdout=follower, stderr=follower, stdin=subprocess.DEVNULL, cwd=tmp_path)
    os.close(follower)
    output = read_all(leader)
    assert process.wait() == 0, output
    assert "What is trained" in output and "tiny: SUCCEEDED" in output and "Q: What is your name?" in output
    # what stays on screen: the last rewrite of each line (the terminal turns \n into \r\n)
    screen = [line.rstrip("\r").rsplit("\r", 1)[-1].replace("\x1b[K", "") for line in output.split("\n")]
    bars = [line for line in screen if line.startswith("[") and "step" in line]
    assert len(bars) == 1 and "step 4/4" in bars[0], bars
    assert '"event"' not in output  # the JSON lines went to events.jsonl only
    for noise in ("Warning", "it/s]", "Loading weights", "INFO"):
        assert noise not in output, noise
    events = [json.loads(line)["event"] for line in next(tmp_path.glob("runs/tiny/*/events.jsonl")).read_text()
              .splitlines()]
    assert events[0] == "run_started" and events[-1] == "run_finished"


def test_stdout_that_is_not_a_terminal_gets_json_lines_and_the_summary_goes_to_stderr(tiny_project, tmp_path,
                                                                                      capsys):
    spec = tiny_project(TINY_SPEC + FAST)
    assert main(["run", str(spec), "--runs-dir", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    events = [json.loads(line) for line in out.splitlines()]
    assert events[0]["event"] == "run_started" and events[-1]["event"] == "run_finished"
    steps = [event for event in events if event["event"] == "progress"]  # what `runner logs -f` shows
    assert steps[-1]["step"] == steps[-1]["total_steps"] == 4 and isinstance(steps[-1]["loss"], float)
    assert "progress" not in next(tmp_path.glob("runs/tiny/*/events.jsonl")).read_text()  # metrics.jsonl has them
    assert "What is trained" in err and "tiny: SUCCEEDED" in err


def test_library_warnings_are_kept_once_in_the_events_and_deprecations_dropped(tmp_path):
    events = EventLog(tmp_path / "events.jsonl", console=False)
    library_output.quiet_libraries()
    try:
        library_output.to_events(events)
        for _ in range(2):
            warnings.warn("padding side is right", UserWarning)
            warnings.warn("this argument is deprecated", FutureWarning)
            logging.getLogger("transformers.modeling_utils").warning("score.weight is newly initialized")
            logging.getLogger("transformers.modeling_utils").info("not a warning")
    finally:
        library_output.detach()
        events.close()
    records = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [(r["event"], r["category"], r["message"]) for r in records] == [
        ("library_warning", "UserWarning", "padding side is right"),
        ("library_warning", "WARNING", "score.weight is newly initialized")]
    assert records[1]["source"] == "transformers.modeling_utils"


# --- a console or a log that cannot be written (issue 20): the line is lost, never the run -------------

def test_a_console_that_cannot_be_written_loses_lines_and_says_so_once(tmp_path, monkeypatch):
    reader, writer = os.pipe()
    os.close(reader)  # the reader left: every write is EPIPE
    with open("/dev/full", "w") as full, open(writer, "w") as pipe:
        monkeypatch.setattr(sys, "stdout", full)
        monkeypatch.setattr(sys, "stderr", pipe)
        guard_console()
        assert isinstance(sys.stdout, Console) and not sys.stdout.isatty()
        events = EventLog(tmp_path / "events.jsonl", json_lines=True)
        for step in range(3):
            events.event("step", step=step)
        print("the summary", file=sys.stderr)
        events.close()
        assert (sys.stdout.lost, sys.stderr.lost) == ("No space left on device", "Broken pipe")
    records = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [r["event"] for r in records] == ["step", "console_lost", "step", "step", "console_lost"]
    assert [r["stream"] for r in records if r["event"] == "console_lost"] == ["stdout", "stderr"]


def test_a_stream_closed_before_the_run_loses_its_lines(monkeypatch):
    monkeypatch.setattr(sys, "stdout", None)  # what Python makes of a descriptor closed at start (runner run >&-)
    guard_console()
    print("into nothing")
    assert not sys.stdout.isatty() and "closed" in sys.stdout.lost


def test_an_event_file_that_cannot_be_written_loses_lines_and_says_so_once(tmp_path, capfd):
    (tmp_path / "events.jsonl").symlink_to("/dev/full")
    events = EventLog(tmp_path / "events.jsonl", console=False)
    for step in range(3):
        events.event("step", step=step)
    events.close()
    err = capfd.readouterr().err
    assert err.count("No space left on device") == 1 and "events.jsonl" in err


@pytest.mark.slow
@pytest.mark.parametrize("stdout", ["/dev/full", "a pipe its reader closed"])
def test_a_run_whose_stdout_fails_goes_on_and_succeeds(tiny_project, tmp_path, stdout):
    spec = tiny_project(TINY_SPEC + FAST)
    command = [sys.executable, "-m", "runner", "run", str(spec), "--runs-dir", str(tmp_path)]
    if stdout == "/dev/full":
        with open("/dev/full", "w") as full:
            done = subprocess.run(command, stdout=full, stderr=subprocess.PIPE, text=True, cwd=tmp_path, timeout=300)
        code, err = done.returncode, done.stderr
    else:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
        process.stdout.close()
        err = process.stderr.read()
        code = process.wait(timeout=300)
    assert code == 0 and "tiny: SUCCEEDED" in err and "Traceback" not in err, err[-3000:]
    run = next(tmp_path.glob("runs/tiny/*/manifest.json")).parent
    assert json.loads((run / "manifest.json").read_text())["state"] == "succeeded"
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    assert [e["stream"] for e in events if e["event"] == "console_lost"] == ["stdout"]
    assert events[-1]["event"] == "run_finished"
