"""Which devices a job may use now: GPUs assigned through CUDA_VISIBLE_DEVICES by count and
by the plan's memory estimate (jobs that fit share a GPU); CPU jobs run one at a time."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field


@dataclass
class Gpu:
    index: int
    memory_bytes: int
    reserved: dict[int, int] = field(default_factory=dict)
    """job id -> bytes reserved by that job's estimate"""

    @property
    def free(self) -> int:
        return self.memory_bytes - sum(self.reserved.values())


@dataclass
class Devices:
    gpus: list[Gpu]
    cpu_job: int | None = None

    @classmethod
    def detect(cls) -> Devices:
        """GPUs from nvidia-smi (the daemon imports no torch); none when it is absent."""
        if shutil.which("nvidia-smi") is None:
            return cls([])
        try:
            output = subprocess.run(["nvidia-smi", "--query-gpu=index,memory.total", "--format=csv,noheader,nounits"],
                                    capture_output=True, text=True, timeout=10, check=True).stdout
        except (OSError, subprocess.SubprocessError):
            return cls([])
        gpus = []
        for line in output.strip().splitlines():
            index, memory = (part.strip() for part in line.split(","))
            gpus.append(Gpu(int(index), int(memory) * 1024 * 1024))
        return cls(gpus)

    def reserve(self, job_id: int, device_type: str, count: int, estimate: int) -> list[int] | None:
        """Reserve devices for a job; the GPU indices (empty for a CPU job), or None when it must wait."""
        if device_type != "cuda" or not self.gpus:
            if self.cpu_job is not None:
                return None
            self.cpu_job = job_id
            return []
        fitting = sorted((gpu for gpu in self.gpus if gpu.free >= estimate), key=lambda gpu: -gpu.free)
        if len(fitting) < count:
            return None
        chosen = fitting[:count]
        for gpu in chosen:
            gpu.reserved[job_id] = estimate
        return [gpu.index for gpu in chosen]

    def release(self, job_id: int) -> None:
        if self.cpu_job == job_id:
            self.cpu_job = None
        for gpu in self.gpus:
            gpu.reserved.pop(job_id, None)
