"""A real `runner watch` process on a temporary folder, for the daemon tests (fixtures in conftest.py)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path

from runner.daemon.store import Store
from runner.errors import RunnerError
from tests.conftest import REPO, TINY_SPEC

FAKE = [sys.executable, str(REPO / "tests" / "daemon" / "fake_runner.py")]


def spec_text(name: str, extra: str = "") -> str:
    return TINY_SPEC.replace("name: tiny", f"name: {name}").lstrip("\n") + extra


class Daemon:
    def __init__(self, root: Path, command: list[str] | None, env: dict, state: Path | None = None) -> None:
        self.folder, self.state = root / "specs", state or root / "state"
        self.folder.mkdir(exist_ok=True)
        self.command, self.env, self.process = command, env, None

    def start(self, *extra: str, state_flag: bool = True) -> None:
        """`state_flag=False`: no --state-dir; the daemon finds its state dir where runner's config says."""
        self.log = open(self.folder.parent / "daemon.out", "ab")
        self.process = subprocess.Popen(self.command_line(*extra, state_flag=state_flag), stdout=self.log,
                                        stderr=subprocess.STDOUT, env=self.env, cwd=REPO)

    def command_line(self, *extra: str, state_flag: bool = True) -> list[str]:
        """`runner watch` as the tests start it: short timings, the tiny model readable, the fake runner."""
        arguments = [sys.executable, "-m", "runner", "watch", str(self.folder),
                     *(["--state-dir", str(self.state)] if state_flag else []),
                     "--settle", "0.3", "--invalid-grace", "2", "--rescan", "2", *self.grants(), *extra]
        if self.command:
            arguments += ["--runner-command", " ".join(self.command)]
        return arguments

    def grants(self) -> list[str]:
        """The tiny model is a link to a session fixture outside the watched folder: the daemon is told it may
        read it, as an operator lets specs read a shared model folder."""
        model = self.folder / "model"
        return ["--allow-read", str(model.resolve())] if model.is_symlink() else []

    def stop(self, signum=signal.SIGTERM) -> int:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signum)
            return self.process.wait(timeout=60)
        return self.process.returncode if self.process else 0

    def close(self) -> None:
        """After a test: the daemon stopped warm, so that its runs stop too (killed if it will not stop), and
        every run it started that still lives (the test may have killed the daemon) killed with its group:
        a test leaves no process behind."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for job in self.jobs():
            if handle(job, "pid"):
                with suppress(ProcessLookupError, PermissionError):
                    os.killpg(handle(job, "pid"), signal.SIGKILL)

    def jobs(self) -> list:
        try:
            store = Store.existing(self.state, writable=False)
        except RunnerError:  # not made yet
            return []
        try:
            return store.jobs()
        finally:
            store.close()

    def wait_for(self, condition, timeout: float = 60, what: str = "") -> list:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            jobs = self.jobs()
            if condition(jobs):
                return jobs
            assert self.process.poll() is None, (self.folder.parent / "daemon.out").read_text()[-3000:]
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}: {[(j.name, j.state, j.reason) for j in self.jobs()]}")

    def cli(self, *arguments: str) -> tuple[int, str]:
        """A command against this daemon's state dir, as its own process (as a person would run it)."""
        completed = subprocess.run([sys.executable, "-m", "runner", *arguments, "--state-dir", str(self.state)],
                                   capture_output=True, text=True, env=self.env, cwd=REPO, timeout=60)
        return completed.returncode, completed.stdout + completed.stderr

    def events(self) -> list[dict]:
        path = self.state / "daemon.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []

    def all_terminal(self, count: int, timeout: float = 60) -> list:
        return self.wait_for(lambda jobs: len(jobs) == count and all(j.state.terminal for j in jobs), timeout,
                             f"{count} terminal jobs")


def handle(job, key: str):
    """What the job's latest start holds under `key` in its executor's handle (a pid, a Slurm job id), or None."""
    return job.execution.handle.get(key) if job.execution else None


def fake_daemon(root: Path, plan_template: Path, tiny_model_dir: Path) -> Daemon:
    """A daemon (not started) whose children are the fake runner, with a model and data beside its specs."""
    env = {**os.environ, "FAKE_PLAN_TEMPLATE": str(plan_template), "FAKE_LEDGER": str(root / "ledger.jsonl"),
           "PYTHONPATH": str(REPO)}
    created = Daemon(root, FAKE, env)
    (created.folder / "model").symlink_to(tiny_model_dir)
    (created.folder / "data").mkdir()
    (created.folder / "data" / "train.jsonl").write_text('{"prompt": "q", "completion": "a"}\n' * 4)
    return created


def ledger(tmp_path: Path) -> list[dict]:
    path = tmp_path / "ledger.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def wait_until(condition, timeout: float = 60, what: str = ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")
