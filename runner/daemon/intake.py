"""Intake: the watched folder as desired state, and the checks that admit its specs.

Each scan makes the store agree with the folder: new content is snapshotted and queued to be checked;
deleted or changed queued specs are withdrawn; moved ones followed. A job is its spec's content
(sha256): the bytes hashed are the bytes snapshotted, checked, planned and run, so a file that changes
later is a new job, never a swap, and the same content anywhere in the folder is one job. The checking
worker checks one spec at a time, in order of arrival; its report becomes the job's admission
(runner.daemon.admission): on to its dependencies or its planning, or invalid.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from runner.daemon import admission, states
from runner.daemon.admission import Verdict
from runner.daemon.config import DaemonConfig
from runner.daemon.executor import Run
from runner.daemon.jobs import Jobs, one_line
from runner.daemon.paths import disk_full_error
from runner.daemon.scanner import Scanner, SpecFile
from runner.daemon.states import State, Step
from runner.daemon.store import Job
from runner.daemon.worker import CHECK_TIMEOUT_SECONDS, MAX_STALLS, Reply, Stalls, Workers
from runner.fsutil import write_atomically
from runner.spec.jobs import MAX_SPEC_BYTES

RETRY_SECONDS = 2.0
"""After a spec that could not be handled (or while admission is paused), it is looked at again this soon."""


class Intake:
    def __init__(self, config: DaemonConfig, jobs: Jobs, workers: Workers, runs: dict[int, Run]) -> None:
        self.config, self.jobs, self.store, self.log = config, jobs, jobs.store, jobs.log
        self.workers, self.runs = workers, runs
        self.scanner = Scanner(config.folder, config.settle)
        self.stalls = Stalls(config.stall)
        self.pending: dict[str, SpecFile] = {}
        """spec sha256 -> the settled file of content waiting to be checked"""
        self.recheck_at: dict[str, float] = {}
        """spec sha256 -> when an invalid result inside the invalid grace, or a stalled check, is checked again"""
        self.present: set[str] = set()
        """Every spec path in the folder, as of the last scan."""
        self._said: set[tuple[str, str]] = set()

    def scan(self, paused: str | None, stopping: bool) -> float | None:
        """Make the store agree with the folder; returns the seconds until a file being written may have
        settled (None: none is)."""
        files, self.present, wait = self.scanner.scan()
        for path, why in self.scanner.ignored.items():
            self._say_once("spec_ignored", path, path=path, reason=why)
        for spec in files:
            try:
                retry_in = self._consider(spec, paused, stopping)
            except Exception as error:
                if disk_full_error(error):
                    raise
                self.log.msg("spec_error", path=spec.path, error=one_line(error))
                retry_in = RETRY_SECONDS
            if retry_in is not None:
                wait = retry_in if wait is None else min(wait, retry_in)
        settled = {spec.sha256: spec for spec in files}
        at_path = {spec.path: spec.sha256 for spec in files}
        self.pending = {}
        for job in self.store.jobs(State.QUEUED):
            if job.step == Step.CHECKING:
                if job.sha256 in settled:
                    self.pending[job.sha256] = settled[job.sha256]
                elif job.path not in self.present or at_path.get(job.path, job.sha256) != job.sha256:
                    self._forget(job)  # gone or changed before it was admitted: it never was a job
            elif job.path not in self.present and job.path.startswith(str(self.config.folder)):
                self._withdraw(job, "the spec file was deleted")
        return wait

    def _consider(self, spec: SpecFile, paused: str | None, stopping: bool) -> float | None:
        """A settled spec file: the job of its content, or a new one to check. Returns the seconds to
        wait when it must wait."""
        job = self.store.find(spec.sha256)
        if job is not None:
            self._seen_again(job, spec)
            return None
        if stopping:
            return None
        if paused:
            return RETRY_SECONDS
        if spec.oversized:
            summary = f"file is larger than {MAX_SPEC_BYTES:,} bytes, the most a spec may be"
            job = self.store.add(spec.path, spec.sha256, None, states.INVALID, reason=summary,
                                 diagnostics=[admission.diagnostic(os.path.relpath(spec.path, self.config.folder), "",
                                                                   None, summary, "a spec names its data files")],
                                 finished_at=time.time())
            self.log.msg("job_invalid", job=job.id, path=spec.path, reason=summary)
            return None
        self._snapshot(spec)
        job = self.store.add(spec.path, spec.sha256, None, states.CHECKING, reason="waiting to be checked",
                             author=spec.author)
        self.jobs.logged(job, None, states.CHECKING)
        self._supersede(spec.path, job.id)  # the content that was here has not started: it never will
        return None

    def _seen_again(self, job: Job, spec: SpecFile) -> None:
        """Content the store knows: where it is now decides nothing new, except that a job withdrawn
        because its file went away or changed comes back when the content does (a rename, an undo)."""
        if job.path != spec.path and job.path in self.present:
            self._say_once("spec_duplicate", spec.path, path=spec.path, job=job.id, name=job.name,
                           detail=f"the same content as {job.path}: one job per content")
            return
        revive = job.state == State.CANCELLED and job.withdrawn
        if job.path == spec.path and not revive:
            return
        moved_folder = Path(job.path).parent != Path(spec.path).parent
        replan = {"plan_path": None, "estimate_bytes": None, "reason": "waiting to be planned"}
        if revive:
            changed = self.jobs.move(job, states.PLANNING, path=spec.path, withdrawn=0, finished_at=None, **replan)
        elif job.state == State.QUEUED and moved_folder:
            # relative paths resolve beside the spec: checked or planned again from its new folder
            self.workers.abandon(job)
            if job.step in (Step.DEPENDENCY, Step.RESOURCES):
                changed = self.jobs.move(job, states.PLANNING, path=spec.path, **replan)
            else:
                changed = self.store.update(job.id, expect=State.QUEUED, path=spec.path)
        else:
            changed = self.store.update(job.id, expect=job.state, path=spec.path)
        if changed:
            self.log.msg("job_revived" if revive else "job_moved", job=job.id, name=job.name, path=spec.path,
                         was=job.path)
            if revive:
                self._supersede(spec.path, job.id)

    def _snapshot(self, spec: SpecFile) -> Path:
        """The bytes that were hashed, kept: they are what is checked, planned and run."""
        path = self.config.snapshot_path(spec.sha256)
        if not path.is_file() or path.stat().st_size != len(spec.content):
            write_atomically(path, spec.content)
        return path

    # --- the checks ---------------------------------------------------------------------------------

    def feed_checker(self) -> None:
        """Give the checking worker its next check, in order of arrival (they take milliseconds to minutes)."""
        checker = self.workers.checker
        if checker.current is not None or checker.ready_in():
            return
        checker.start()  # again, after it died or was stopped: warm for the next request
        for job in self.store.jobs(State.QUEUED):
            spec = self.pending.get(job.sha256)
            if job.step != Step.CHECKING or spec is None or self.recheck_at.get(job.sha256, 0) > time.monotonic():
                continue
            checker.send("check", job.sha256, CHECK_TIMEOUT_SECONDS, snapshot=self._snapshot(spec),
                         source=job.path, cwd=self.config.folder, confine=self.config.confinement(job.author))
            self.store.update(job.id, reason="being checked")
            return

    def checked(self, sha256: str, reply: Reply) -> None:
        """The checking worker's reply: the job's admission, or a check again later."""
        job = self.store.find(sha256)
        if job is None or job.status != states.CHECKING:
            return
        if reply.stalled:
            again_in = self.stalls.again_in(sha256)
            if again_in is not None:
                self.recheck_at[sha256] = time.monotonic() + again_in
                self.store.update(job.id, reason=f"its check stalled ({reply.reason}: a hung filesystem?); checked "
                                                 f"again in {again_in:.0f} s")
                return
        self.stalls.clear(sha256)
        if reply.stalled:
            verdict = Verdict(False, reason=f"its check stalled {MAX_STALLS} times ({reply.reason}); are its data or "
                                            "model files on a hung filesystem?")
        elif reply.timed_out:
            verdict = Verdict(False, reason=f"checking this spec took longer than {CHECK_TIMEOUT_SECONDS:.0f} s "
                                            "(are its data or model files on a slow or hung filesystem?)")
        else:
            verdict = admission.verdict(reply.report if reply.ok else None, reply.reason, self.config.allow)
        spec = self.pending.get(sha256)
        age = (spec.stable_for if spec else 0.0) + time.monotonic() - reply.request.sent
        if not verdict.valid and age < self.config.invalid_grace and sha256 not in self.recheck_at:
            wait = self.config.invalid_grace - age  # written in parts? look again
            self.recheck_at[sha256] = time.monotonic() + wait
            self.store.update(job.id, reason=f"looks invalid; checked again in {wait:.0f} s in case it is still "
                                             "being written")
            return
        self.recheck_at.pop(sha256, None)
        self._admit(job, verdict)

    def _admit(self, job: Job, verdict: Verdict) -> None:
        if verdict.valid:
            owner = self._name_owner(verdict.name, job.path)
            if owner is not None:
                verdict = admission.name_taken(verdict.name, job.path, owner.path, owner.id, self.config.folder)
        if verdict.valid:
            waiting = self.jobs.unmet(verdict.depends_on, job.path)
            to = states.DEPENDENCY if waiting else states.PLANNING
            reason = self.jobs.waiting_for(waiting, job.path) if waiting else "waiting to be planned"
            if self.jobs.move(job, to, name=verdict.name, depends_on=verdict.depends_on, priority=verdict.priority,
                              reason=reason):
                self.log.msg("job_queued", job=job.id, name=verdict.name, path=job.path,
                             depends_on=verdict.depends_on, priority=verdict.priority)
        elif self.jobs.move(job, states.INVALID, diagnostics=verdict.diagnostics, reason=one_line(verdict.reason),
                            hint=verdict.hint, finished_at=time.time()):
            self.log.msg("job_invalid", job=job.id, path=job.path, reason=verdict.reason)

    def _name_owner(self, name: str | None, path: str) -> Job | None:
        """The spec that already has this name in the folder: a present file whose newest job bears it."""
        for job in self.store.named(name or ""):
            if job.path != path and job.path in self.present:
                newest = self.store.newest_at(job.path)
                if newest is not None and newest.name == name:
                    return job
        return None

    # --- content that went away -------------------------------------------------------------------------

    def _supersede(self, path: str, keep: int) -> None:
        """Changed content replaces the content that has not started yet (planning included), as soon as
        it is found: while it waits to be checked, the old content must not start."""
        for older in self.store.jobs(State.QUEUED):
            if older.path == path and older.id != keep:
                if older.step == Step.CHECKING:
                    self._forget(older)
                else:
                    self._withdraw(older, "superseded: the spec changed")

    def _withdraw(self, job: Job, reason: str) -> None:
        """Cancel a queued job because its file went away or changed; its planning, if any, stops."""
        if job.id in self.runs:
            return  # started: it runs to its end
        self.workers.abandon(job)
        self.jobs.finish(job, State.CANCELLED, None, reason, withdrawn=1)

    def _forget(self, job: Job) -> None:
        """Content that went away before it was admitted leaves no job behind."""
        self.workers.abandon(job)
        self.recheck_at.pop(job.sha256, None)
        if self.store.forget(job):
            self.jobs.logged(job, job.status, None)

    def _say_once(self, event: str, key: str, **fields) -> None:
        if (event, key) not in self._said:
            self._said.add((event, key))
            self.log.msg(event, **fields)
