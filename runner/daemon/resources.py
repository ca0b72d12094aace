"""Which devices a job may use now: GPUs assigned through CUDA_VISIBLE_DEVICES by count and by the
plan's memory estimate (jobs that fit share a GPU); CPU jobs run one at a time.

A GPU's room for a new job is the smaller of two figures:
- its total memory less the estimates of the daemon's jobs on it (what the daemon promised), and
- its free memory as nvidia-smi reads it now, less what the daemon's jobs on it have yet to
  allocate (estimate minus what their processes use now): memory used by anyone else on the box
  (a notebook, another daemon) counts, and a job that just started and allocated nothing yet is
  not counted twice.
A job never starts on a GPU whose room is below its estimate. The daemon never imports torch here:
nvidia-smi is read, with a timeout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field

GIB = 2**30
READ_EVERY_SECONDS = 1.0
"""nvidia-smi is read at most this often (only when a job waits for a GPU)."""
SMI_TIMEOUT_SECONDS = 10


@dataclass
class Gpu:
    index: int
    memory_bytes: int
    name: str = "GPU"
    uuid: str = ""
    bf16: bool = False
    free_bytes: int | None = None
    """Free memory as nvidia-smi last read it (None: not read)."""
    reserved: dict[int, int] = field(default_factory=dict)
    """job id -> bytes reserved by that job's estimate"""
    used: dict[int, int] = field(default_factory=dict)
    """job id -> bytes its processes use now (nvidia-smi's compute apps)"""

    @property
    def room(self) -> int:
        """Bytes a new job may count on."""
        promised = self.memory_bytes - sum(self.reserved.values())
        if self.free_bytes is None:
            return promised
        to_come = sum(max(0, estimate - self.used.get(job, 0)) for job, estimate in self.reserved.items())
        return min(promised, self.free_bytes - to_come)

    def to_json(self) -> dict:
        return {"index": self.index, "name": self.name, "memory_bytes": self.memory_bytes,
                "free_bytes": self.free_bytes, "room_bytes": self.room, "jobs": sorted(self.reserved)}


@dataclass
class Devices:
    gpus: list[Gpu]
    cpu_job: int | None = None
    read_at: float = 0.0

    @classmethod
    def detect(cls) -> Devices:
        """GPUs from nvidia-smi (the daemon imports no torch); none when it is absent."""
        rows = _smi("--query-gpu=index,memory.total,memory.free,name,uuid,compute_cap")
        if rows is None:  # a driver too old for compute_cap
            rows = [[*row, ""] for row in _smi("--query-gpu=index,memory.total,memory.free,name,uuid") or []]
        gpus = []
        for row in rows:
            try:
                index, total, free, name, uuid, capability = row
                gpus.append(Gpu(int(index), int(total) * 2**20, name, uuid, _at_least(capability, 8.0),
                                int(free) * 2**20))
            except ValueError:  # a row of another shape, or [N/A]
                continue
        return cls(gpus, read_at=time.monotonic())

    def describe(self) -> list[dict]:
        """The GPUs as the planning worker plans for them (it never initialises CUDA itself)."""
        return [{"name": gpu.name, "memory_bytes": gpu.memory_bytes, "bf16": gpu.bf16} for gpu in self.gpus]

    def read_usage(self, process_groups: dict[int, int]) -> None:
        """Free memory now, and what each job's processes use (`process_groups`: job id -> its process
        group). At most once a READ_EVERY_SECONDS; a failed read keeps the last figures."""
        if not self.gpus or time.monotonic() - self.read_at < READ_EVERY_SECONDS:
            return
        self.read_at = time.monotonic()
        free = _smi("--query-gpu=index,memory.free")
        for index, megabytes in free or []:
            for gpu in self.gpus:
                if str(gpu.index) == index and megabytes.isdigit():
                    gpu.free_bytes = int(megabytes) * 2**20
        apps = _smi("--query-compute-apps=gpu_uuid,pid,used_memory")
        if apps is None:
            return
        jobs = {group: job for job, group in process_groups.items()}
        for gpu in self.gpus:
            gpu.used = {}
            for uuid, pid, megabytes in apps:
                job = jobs.get(_process_group(pid))
                if uuid == gpu.uuid and job is not None and megabytes.isdigit():
                    gpu.used[job] = gpu.used.get(job, 0) + int(megabytes) * 2**20

    def fit(self, device_type: str, count: int, estimate: int) -> list[int] | str:
        """The devices a job would get now (GPU indices; empty for the CPU), or why it must wait."""
        if device_type != "cuda" or not self.gpus:
            return [] if self.cpu_job is None else f"the CPU slot (job #{self.cpu_job} runs on it)"
        fitting = sorted((gpu for gpu in self.gpus if gpu.room >= estimate), key=lambda gpu: -gpu.room)
        if len(fitting) >= count:
            return [gpu.index for gpu in fitting[:count]]
        rooms = ", ".join(f"GPU {gpu.index} has {max(0, gpu.room) / GIB:.1f} GiB" for gpu in self.gpus)
        return f"{count} GPU{'s' * (count > 1)} with {estimate / GIB:.1f} GiB free ({rooms})"

    def never_fits(self, device_type: str, count: int, estimate: int) -> str | None:
        """Why a job can never start on this box (None when it can, once the others are done)."""
        if device_type != "cuda" or not self.gpus:
            return None
        large = [gpu for gpu in self.gpus if gpu.memory_bytes >= estimate]
        if len(large) >= count:
            return None
        return (f"it needs {count} GPU{'s' * (count > 1)} of {estimate / GIB:.1f} GiB; this box has "
                + ", ".join(f"GPU {gpu.index} of {gpu.memory_bytes / GIB:.1f} GiB" for gpu in self.gpus))

    def reserve(self, job_id: int, gpus: list[int], estimate: int) -> None:
        if not gpus:
            self.cpu_job = job_id
        for gpu in self.gpus:
            if gpu.index in gpus:
                gpu.reserved[job_id] = estimate

    def release(self, job_id: int) -> None:
        if self.cpu_job == job_id:
            self.cpu_job = None
        for gpu in self.gpus:
            gpu.reserved.pop(job_id, None)
            gpu.used.pop(job_id, None)


def _smi(query: str) -> list[list[str]] | None:
    """Rows of an nvidia-smi CSV query; None when it cannot be read."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        output = subprocess.run(["nvidia-smi", query, "--format=csv,noheader,nounits"], capture_output=True,
                                text=True, timeout=SMI_TIMEOUT_SECONDS, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return [[part.strip() for part in line.split(",")] for line in output.strip().splitlines() if line.strip()]


def _process_group(pid: str) -> int | None:
    try:
        return os.getpgid(int(pid))
    except (ValueError, OSError):
        return None


def _at_least(capability: str, minimum: float) -> bool:
    try:
        return float(capability) >= minimum
    except ValueError:
        return False
