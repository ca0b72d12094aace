"""runner.daemon.wake signals only a `runner watch` that catches SIGUSR1: never a stale pid's new owner, and
never a daemon of an older runner, for which SIGUSR1 would end the process."""

import json
import subprocess
import sys
import time

from runner.daemon.wake import wake_daemon

LOOKS_LIKE_A_DAEMON = "import signal, sys, time\n{catch}print('ready', flush=True)\ntime.sleep(30)\n"


def started(tmp_path, catch: bool) -> subprocess.Popen:
    code = LOOKS_LIKE_A_DAEMON.format(
        catch="signal.signal(signal.SIGUSR1, lambda *_: print('woken', flush=True))\n" if catch else "")
    process = subprocess.Popen([sys.executable, "-c", code, "runner", "watch"], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "ready\n"
    (tmp_path / "daemon.json").write_text(json.dumps({"pid": process.pid}))
    return process


def test_a_daemon_that_catches_the_signal_is_woken(tmp_path):
    process = started(tmp_path, catch=True)
    try:
        assert wake_daemon(tmp_path)
        assert process.stdout.readline() == "woken\n"
    finally:
        process.kill()
        process.wait()


def test_a_process_that_would_die_of_it_is_left_alone(tmp_path):
    process = started(tmp_path, catch=False)
    try:
        assert not wake_daemon(tmp_path)
        time.sleep(0.2)
        assert process.poll() is None
    finally:
        process.kill()
        process.wait()


def test_no_daemon_file_or_another_program_is_no_daemon(tmp_path):
    assert not wake_daemon(tmp_path)
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        (tmp_path / "daemon.json").write_text(json.dumps({"pid": sleeper.pid}))
        assert not wake_daemon(tmp_path) and sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()
