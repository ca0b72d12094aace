"""A signal only sets flags; every rank stops after the same step, whichever rank the signal reached."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from runner.execute.events import EventLog
from runner.execute.stopping import AgreedStop, StopRequest, on_signals
from runner.rundir import RunDirectory
from tests.helpers import REPO, TINY_SPEC, write_jsonl


def stopping_events(path):
    return [record for record in map(json.loads, path.read_text().splitlines()) if record["event"] == "stopping"]


def _rank(rank: int, world: int, folder: str, results) -> None:
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=world)
    try:
        stop = StopRequest(EventLog(Path(folder) / f"events-{rank}.jsonl", console=False))
        stopping = AgreedStop(stop, world)
        for step in range(1, 10):
            if rank == 1 and step == 3:
                stop.record(signal.SIGTERM)  # the signal reaches rank 1 during step 3, and rank 0 never
            if stopping.after_step():
                results[rank] = (step, stop.asked)
                return
        results[rank] = (None, stop.asked)
    finally:
        dist.destroy_process_group()


def test_a_stop_that_reached_one_rank_stops_every_rank_after_the_same_step(tmp_path):
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_rank, args=(2, str(tmp_path), results), nprocs=2)
        assert dict(results) == {0: (4, True), 1: (4, True)}  # decided on the flags shared after step 3
    (signalled,) = stopping_events(tmp_path / "events-1.jsonl")
    (told,) = stopping_events(tmp_path / "events-0.jsonl")
    assert signalled["signal"] == "SIGTERM" and signalled["message"].startswith("SIGTERM: stopping after this step")
    assert told["signal"] is None and told["message"].startswith("another process of the run was signalled")


def test_one_process_stops_after_the_step_it_was_signalled_in_and_says_so_once(tmp_path):
    stop = StopRequest(EventLog(tmp_path / "events.jsonl", console=False))
    stopping = AgreedStop(stop, world=1)
    assert not stopping.after_step()
    stop.record(signal.SIGINT)
    assert stopping_events(tmp_path / "events.jsonl") == []  # recording writes nothing; the step's end reports it
    assert stopping.after_step() and stopping.after_step()
    (event,) = stopping_events(tmp_path / "events.jsonl")
    assert event["signal"] == "SIGINT" and event["level"] == "warning" and event["since_signal_s"] >= 0


def test_the_handler_only_sets_flags():
    """What the handler and the one method it calls refer to: flags, the clock and the window; no
    logger, no print, no lock (a handler interrupts code that may hold one)."""
    stop = StopRequest(events=None)
    restore = on_signals(stop)
    try:
        handler = signal.getsignal(signal.SIGTERM)
        assert signal.getsignal(signal.SIGINT) is handler
    finally:
        restore()
    names = set(handler.__code__.co_names) | set(StopRequest.record.__code__.co_names)
    assert names == {"at", "time", "monotonic", "SAME_STOP_S", "asked", "KeyboardInterrupt", "record", "signal"}


def test_repeated_signals_within_the_window_are_one_request_and_a_later_one_stops_at_once(monkeypatch):
    from runner.execute import stopping

    clock = [100.0]
    monkeypatch.setattr(stopping.time, "monotonic", lambda: clock[0])
    stop = StopRequest(events=None)
    restore = on_signals(stop)
    try:
        handler = signal.getsignal(signal.SIGTERM)
        handler(signal.SIGTERM, None)
        clock[0] += stopping.SAME_STOP_S / 2
        handler(signal.SIGTERM, None)  # torchrun passing it on: the same request
        assert (stop.asked, stop.signal, stop.at) == (True, signal.SIGTERM, 100.0)
        clock[0] += stopping.SAME_STOP_S
        try:
            handler(signal.SIGINT, None)
            raise AssertionError("a second signal must stop at once")
        except KeyboardInterrupt:
            pass
    finally:
        restore()


# Signals delivered while the main thread writes event lines as fast as it can (to a file and to a pipe):
# a handler that logged would, sooner or later, land inside the logger's lock or the pipe's buffered write
# and hang or raise "reentrant call".
BUSY_LOGGING = textwrap.dedent('''
    import os, signal, sys, threading
    from pathlib import Path
    from runner.execute.events import EventLog
    from runner.execute.stopping import StopRequest, on_signals

    events = EventLog(Path(sys.argv[1]), json_lines=True)
    for attempt in range(int(sys.argv[2])):
        stop = StopRequest(events)
        restore = on_signals(stop)
        threading.Timer(0.0005 * (attempt % 9), os.kill, (os.getpid(), signal.SIGTERM)).start()
        count = 0
        while not stop.requested():
            events.event("busy", attempt=attempt, count=count, padding="x" * 200)
            count += 1
        restore()
    events.close()
''')


def test_signals_in_the_middle_of_logging_are_each_reported_once(tmp_path):
    attempts = 150
    completed = subprocess.run([sys.executable, "-c", BUSY_LOGGING, str(tmp_path / "events.jsonl"), str(attempts)],
                               capture_output=True, text=True, timeout=120, cwd=REPO)
    assert completed.returncode == 0, completed.stderr[-2000:]
    printed = [json.loads(line) for line in completed.stdout.splitlines()]  # every line whole
    written = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    for records in (printed, written):
        stops = [record for record in records if record["event"] == "stopping"]
        assert len(stops) == attempts and all(record["signal"] == "SIGTERM" for record in stops)


def _children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _worker_of_rank(launcher: int, rank: int) -> int | None:
    """The worker process of `rank`: a child of torchrun, itself a child of the launching process."""
    for torchrun in _children(launcher):
        for worker in _children(torchrun):
            environment = Path(f"/proc/{worker}/environ").read_bytes().split(b"\0")
            if f"RANK={rank}".encode() in environment:
                return worker
    return None


@pytest.mark.slow
def test_sigterm_to_one_rank_of_a_trl_run_stops_both_after_the_same_step(tiny_project, tmp_path):
    """DPO (TRL's trainer, runner's callback) on two gloo processes: the signal reaches rank 1 only; both
    ranks leave the loop after the same step, each writes its part of that step's checkpoint, and the run
    ends interrupted instead of leaving rank 0 waiting in a collective."""
    write_jsonl(tmp_path / "data" / "train.jsonl",
                [{"prompt": f"Name {i}?", "chosen": "Chatty.", "rejected": "No name."} for i in range(16)])
    spec = tiny_project(TINY_SPEC.replace("method: sft", "method: dpo") +
                        "training:\n  max_steps: 500\n  batch_size: 4\noutputs:\n  checkpoint_every: 1000\n"
                        "trainable:\n  mode: lora\nhardware:\n  device: cpu\n  gpus: 2\n")
    launcher = subprocess.Popen([sys.executable, "-m", "runner", "run", str(spec), "--runs-dir", str(tmp_path),
                                 "--quiet"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while not list((tmp_path / "runs" / "tiny").glob("*/metrics.jsonl")):
            assert launcher.poll() is None and time.monotonic() < deadline, launcher.stderr.read()[-3000:]
            time.sleep(0.1)
        (run_dir,) = (tmp_path / "runs" / "tiny").iterdir()
        os.kill(_worker_of_rank(launcher.pid, 1), signal.SIGTERM)
        code = launcher.wait(timeout=90)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
    run = RunDirectory(run_dir)
    manifest = run.read_manifest()
    assert (code, manifest.state, manifest.error.kind) == (130, "interrupted", "interrupted"), manifest.error
    (checkpoint,) = run.checkpoints.glob("checkpoint-*")  # none of the plan's own: the stop's
    assert {"rng_state_0.pth", "rng_state_1.pth"} <= {path.name for path in checkpoint.iterdir()}  # both ranks'
    step = int(checkpoint.name.rsplit("-", 1)[1])
    assert 0 < step < 500 and json.loads((checkpoint / "trainer_state.json").read_text())["global_step"] == step
    (signalled,) = stopping_events(run.path / "events-rank1.jsonl")
    (told,) = stopping_events(run.events)
    assert signalled["signal"] == "SIGTERM" and told["signal"] is None
