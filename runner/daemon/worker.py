"""The planning worker: one process per daemon that checks and plans specs, one request at a time.

A child per check and per plan paid for its imports every time (validate about 0.4 s, `runner
plan` about 5 s of torch and transformers); the worker imports once and answers in milliseconds.
It is still a child of the daemon, and still all that reads what a spec controls:

- its address space is limited (RLIMIT_AS, set by itself once its imports are done: the imports'
  footprint plus WORKER_MEMORY_BYTES), so a spec that makes it allocate gets a MemoryError;
- each request has a deadline: past it the daemon kills the worker's process group and starts a
  new one; a worker that dies is started again;
- a request that fails becomes the job's `invalid` (a check) or `failed` (a plan) with a one-line
  reason; after an unexpected error, or after planning a spec whose own code ran (an allowed
  `trust_remote_code`), the worker exits after its reply and a fresh one takes over;
- it never touches a GPU: the daemon describes the GPUs it read with nvidia-smi, and the worker plans
  for that machine (no CUDA context, so no GPU memory held while idle).

Protocol: one JSON line per request on its stdin, one JSON line per reply on its stdout. While it
works for a job, its own stdout and stderr (fds 1 and 2: Python's, the libraries', C code's) go to
that job's log, so `runner logs` shows the planning output and the reason can quote it.

    check: {"id", "kind": "check", "snapshot", "source"} -> {"id", "ok", "report"}
           the report is `runner validate --format json` of the snapshot (runner.spec.report), read back by
           runner.daemon.admission
    plan:  {"id", "kind": "plan", "snapshot", "source", "out", "runs_dir", "log"} -> {"id", "ok"}
           the plan is written to `out`; a failure: {"id", "ok": false, "reason", "hint"}
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from runner import confine
from runner.confine import Confinement
from runner.daemon import children
from runner.readers import MAX_JSON_DEPTH, loads_bounded

WORKER_MEMORY_BYTES = 4 * 2**30
"""Address space a request may add to the worker's imports: planning reads a tokenizer and up to
20,000 rows; validate streams its inputs in bounded memory."""
CHECK_TIMEOUT_SECONDS = 3600.0
"""At most, for a check that keeps working: validate reads every row (about 4 MB/s of tiny JSONL rows,
100 MB/s of large ones), and checks have a worker of their own, so a long one holds only other checks."""
STALL_SECONDS = 60.0
"""A worker that used no CPU for this long while answering is stalled (stopped, or blocked on a hung
filesystem): it is killed, and the request tried again later (Stalls)."""
MAX_STALLS = 3
"""Stalled checks or plans of one job (a hung filesystem) before it is given up on; the n-th is tried
again after n times the stall window."""
MAX_REPLY_BYTES = 8 * 2**20
ROLE_VARIABLE = "RUNNER_WORKER_ROLE"
"""check | plan: a checking worker imports only what validate needs."""
MACHINE_VARIABLE = "RUNNER_WORKER_MACHINE"
"""The daemon's description of this box's GPUs (JSON), so that the worker never initialises CUDA."""


# --- the worker process ------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanRequest:
    snapshot: Path
    source: Path
    out: Path
    runs_dir: Path
    machine: object
    """runner.plan.machine.Machine"""


Planner = Callable[[PlanRequest], object]
"""Makes the plan of a request and returns it (a runner Plan), or writes `out` itself and returns None."""


def serve(planner: Planner) -> int:
    """The worker's loop: answer requests from stdin until it closes."""
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # from now on fd 1 is the worker's log: nothing but replies goes down the pipe
    warm_up(os.environ.get(ROLE_VARIABLE, "plan"))
    _limit_memory(WORKER_MEMORY_BYTES)
    for line in sys.stdin:
        request = json.loads(line)
        with _output_to(request.get("log")), _inside(request.get("cwd")):
            reply = _answer(request, planner)
        replies.write(json.dumps(reply) + "\n")
        if reply.get("restart"):
            return 0
    return 0


def plan_job(request: PlanRequest):
    from runner.plan.planner import PlanError, make_plan

    try:
        return make_plan(request.snapshot, run_root=request.runs_dir, machine=request.machine,
                         spec_source=request.source)
    except PlanError as error:
        if error.result is not None and error.result.errors:  # invalid now (its data changed since the check)
            first = error.result.errors[0]
            raise PlanError(first.format_text(), first.hint) from None
        raise


def warm_up(role: str) -> None:
    """What checking (or planning) imports, imported before the first request (and before the memory
    limit). Without the training extra installed, checks still work and plans fail with the reason."""
    import runner.spec.check  # noqa: F401
    import runner.spec.report  # noqa: F401

    if role == "check":
        return
    with contextlib.suppress(ImportError):
        import torch  # noqa: F401
        import transformers  # noqa: F401

        import runner.plan.planner  # noqa: F401


def _answer(request: dict, planner: Planner) -> dict:
    from runner.errors import RunnerError

    answer: dict = {"id": request.get("id")}
    try:
        with confine.applied(_confinement(request)):
            if request["kind"] == "check":
                answer.update(ok=True, report=_check(request))
            else:
                made = planner(PlanRequest(Path(request["snapshot"]), Path(request["source"]), Path(request["out"]),
                                           Path(request["runs_dir"]), _machine()))
                if made is not None:
                    from runner.fsutil import write_atomically

                    write_atomically(Path(request["out"]), made.model_dump_json(indent=2) + "\n")
                    answer["restart"] = _ran_spec_code(made)
                answer["ok"] = True
    except RunnerError as error:
        answer.update(ok=False, reason=children.one_line(error.message), hint=error.hint)
    except MemoryError:
        answer.update(ok=False, reason=f"it needed more than the worker's {WORKER_MEMORY_BYTES / 2**30:.0f} GiB of "
                                       "memory", restart=True)
    except Exception as error:  # anything a spec provokes: its job fails, the worker starts afresh
        traceback.print_exc()
        answer.update(ok=False, reason=children.one_line(f"{type(error).__name__}: {error}"), restart=True)
    return answer


def _confinement(request: dict) -> Confinement | None:
    """What the request's spec may read: the daemon always says (a request without it is from a test)."""
    return Confinement.from_json(json.loads(request["confine"])) if request.get("confine") else None


def _check(request: dict) -> dict:
    from runner.spec.check import check_spec
    from runner.spec.report import ValidationReport

    return ValidationReport.of([check_spec(Path(request["snapshot"]), source=Path(request["source"]))]).to_json()


def _ran_spec_code(plan) -> bool:
    """Whether planning ran code that came with the spec (an allowed trust_remote_code): such code
    may have changed this process, so the next request gets a fresh one."""
    models = [plan.inputs.base_model, plan.inputs.reward_model, plan.inputs.teacher_model]
    return any(model is not None and model.trust_remote_code for model in models)


def _machine():
    from runner.plan.machine import Machine, available_ram, detect

    described = os.environ.get(MACHINE_VARIABLE)
    if not described:
        return detect()
    gpus = json.loads(described)
    return Machine(len(gpus), tuple(gpu["name"] for gpu in gpus), gpus[0]["memory_bytes"] if gpus else 0,
                   bool(gpus) and all(gpu["bf16"] for gpu in gpus), available_ram())


def _limit_memory(extra: int) -> None:
    """RLIMIT_AS: what the imports mapped, plus `extra`."""
    with open("/proc/self/statm") as handle:
        mapped = int(handle.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = mapped + extra
    resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))


@contextlib.contextmanager
def _inside(folder: str | None):
    """Work in the watched folder for one request (diagnostics name files relative to it), entered afresh
    each time: a folder replaced by a redeploy leaves a worker that stayed in it in a deleted folder."""
    if folder:
        with contextlib.suppress(OSError):  # gone: the request's own reads say what is missing
            os.chdir(folder)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.chdir("/")


@contextlib.contextmanager
def _output_to(log: str | None):
    """Point fds 1 and 2 at a job's log for one request."""
    if not log:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    try:
        os.dup2(descriptor, 1)
        os.dup2(descriptor, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for kept in (descriptor, *saved):
            os.close(kept)


# --- the daemon's side ---------------------------------------------------------------------------


@dataclass
class Request:
    kind: str
    """check | plan"""
    key: str | int
    """The spec content's sha256 (a check) or the job id (a plan)."""
    body: dict
    timeout: float
    sent: float = 0.0
    abandoned: bool = False
    """Its job was withdrawn meanwhile: the reply is dropped."""
    busy_at: float = 0.0
    """When the worker was last seen using CPU for it."""
    cpu: int | None = None
    """The worker's CPU ticks then."""


@dataclass
class Reply:
    request: Request
    ok: bool
    report: dict | None = None
    reason: str = ""
    hint: str | None = None
    timed_out: bool = False
    stalled: bool = False
    """The worker used no CPU for STALL_SECONDS: nothing about the spec is known; ask again later."""


@dataclass
class Worker:
    """The daemon's handle on its worker, one request in flight at a time. The daemon starts it at once
    (so that it is warm) and again after it died or was killed, later each time when it keeps dying.
    Never blocks: replies are read from a non-blocking pipe whose descriptor the loop's select() watches."""

    command: list[str]
    role: str
    """check | plan"""
    log_path: Path
    machine: list[dict]
    stall_seconds: float = STALL_SECONDS
    process: subprocess.Popen | None = None
    current: Request | None = None
    started: float = 0.0
    failures: int = 0
    """Deaths in a row without a reply: the next start waits longer."""
    _buffer: bytearray = field(default_factory=bytearray)
    _next_id: int = 0

    def ready_in(self) -> float:
        """Seconds before a worker that keeps dying is started again (0 when it may start now)."""
        if self.process is not None or self.failures < 2:  # one death (a spec's doing, often): at once
            return 0.0
        return max(0.0, self.started + min(60.0, 2.0 ** (self.failures - 1)) - time.monotonic())

    def fileno(self) -> int | None:
        return self.process.stdout.fileno() if self.process is not None else None

    def start(self) -> None:
        """Start it, unless it runs, or keeps dying and must wait (ready_in)."""
        if self.process is not None or self.ready_in():
            return
        env = {**os.environ, MACHINE_VARIABLE: json.dumps(self.machine), ROLE_VARIABLE: self.role,
               "CUDA_VISIBLE_DEVICES": "", "MALLOC_ARENA_MAX": "2", "TOKENIZERS_PARALLELISM": "false"}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([*self.command, "worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            stderr=log, start_new_session=True, env=env, cwd="/")
        os.set_blocking(self.process.stdout.fileno(), False)
        self.started = time.monotonic()
        self._buffer.clear()

    def send(self, kind: str, key: str | int, timeout: float, **body) -> Request:
        self.start()
        self._next_id += 1
        now = time.monotonic()
        request = Request(kind, key, {"id": self._next_id, "kind": kind, **{k: str(v) for k, v in body.items()}},
                          timeout, now, busy_at=now, cpu=_cpu_ticks(self.process.pid))
        self.current = request
        try:
            self.process.stdin.write((json.dumps(request.body) + "\n").encode())
            self.process.stdin.flush()
        except OSError:  # it died before reading: poll() reports the death for this request
            pass
        return request

    def poll(self) -> Reply | None:
        """The reply to the request in flight, once there is one (a failed one when the worker died or
        ran past the deadline)."""
        if self.process is None:
            return None
        line = self._read_line()
        if line is not None:
            return self._replied(line)
        code = self.process.poll()
        if code is not None:
            return self._died(code)
        request = self.current
        if request is None:
            return None
        now = time.monotonic()
        if now - request.sent > request.timeout:
            self.stop()
            self.current = None
            return Reply(request, False, timed_out=True)
        cpu = _cpu_ticks(self.process.pid)
        if cpu is None or cpu != request.cpu:
            request.busy_at, request.cpu = now, cpu
        elif now - request.busy_at > self.stall_seconds:
            self.stop()
            self.current = None
            return Reply(request, False, stalled=True, reason=f"the worker used no CPU for {self.stall_seconds:g} s")
        return None

    def stop(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            with contextlib.suppress(OSError):
                stream.close()
        self.process = None

    def _read_line(self) -> bytes | None:
        while b"\n" not in self._buffer:
            try:
                chunk = os.read(self.process.stdout.fileno(), 65536)
            except BlockingIOError:
                return None
            if not chunk:
                return None
            self._buffer += chunk
            if len(self._buffer) > MAX_REPLY_BYTES:
                self._buffer.clear()
                return b"{}"
        line, _, rest = bytes(self._buffer).partition(b"\n")
        self._buffer[:] = rest
        return line

    def _replied(self, line: bytes) -> Reply | None:
        request, self.current = self.current, None
        try:
            answer = loads_bounded(line, MAX_JSON_DEPTH)
        except ValueError:
            answer = None
        if not isinstance(answer, dict) or request is None or answer.get("id") != request.body["id"]:
            self.stop()  # a worker that says something else is not trusted with the next request
            return Reply(request, False, reason="the worker's reply could not be read") if request else None
        self.failures = 0
        if answer.get("restart"):
            self.stop()
        report = answer.get("report")
        hint = answer.get("hint")
        return Reply(request, answer.get("ok") is True, report if isinstance(report, dict) else None,
                     children.one_line(str(answer.get("reason") or "")), children.one_line(hint) if isinstance(
                         hint, str) else None)

    def _died(self, code: int) -> Reply | None:
        request, self.current = self.current, None
        self.stop()
        self.failures += 1
        if request is None:
            return None
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
        words = children.last_words(Path(request.body.get("log") or self.log_path))
        return Reply(request, False, reason=f"the planning worker {how}" + (f": {words}" if words else ""))


@dataclass
class Workers:
    """The daemon's two workers: checks and plans each have one, so a plan that takes long never holds a
    check back."""

    checker: Worker
    planner: Worker

    @classmethod
    def for_daemon(cls, command: list[str], logs: Path, machine: list[dict], stall_seconds: float) -> Workers:
        return cls(*(Worker(command, role, logs / f"worker-{role}.log", machine, stall_seconds)
                     for role in ("check", "plan")))

    def replies(self) -> list[Reply]:
        """The replies that came, the check's first."""
        return [reply for reply in (self.checker.poll(), self.planner.poll()) if reply is not None]

    def abandon(self, job) -> None:
        """Their answer for this job (a runner.daemon.store.Job) no longer matters: it was withdrawn, moved or
        failed."""
        for worker in (self.checker, self.planner):
            if worker.current is not None and worker.current.key in (job.id, job.sha256):
                worker.current.abandoned = True

    def start(self) -> None:
        self.checker.start()
        self.planner.start()

    def stop(self) -> None:
        self.checker.stop()
        self.planner.stop()

    def filenos(self) -> list[int | None]:
        return [self.checker.fileno(), self.planner.fileno()]

    def ready_in(self) -> list[float]:
        return [self.checker.ready_in(), self.planner.ready_in()]


@dataclass
class Stalls:
    """Stalled requests of each job (its check, or its plan): counted, and tried again after as many stall
    windows as it stalled, up to MAX_STALLS."""

    window: float
    counts: dict[str | int, int] = field(default_factory=dict)
    """A spec's sha256 (its check) or a job id (its plan) -> its stalls so far."""

    def again_in(self, key: str | int) -> float | None:
        """Count a stall: the seconds after which it is tried again, or None when it stalled too often."""
        self.counts[key] = self.counts.get(key, 0) + 1
        return self.window * self.counts[key] if self.counts[key] < MAX_STALLS else None

    def clear(self, key: str | int) -> None:
        self.counts.pop(key, None)


def _cpu_ticks(pid: int) -> int | None:
    """CPU time (user + system, in clock ticks) a process has used; None where /proc cannot say."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[11]) + int(fields[12])  # utime and stime: fields 14 and 15 of the line
