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
from runner.execute.events import EventLog
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
