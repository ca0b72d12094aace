"""Facts about this machine that the planner resolves `auto` against."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Machine:
    cuda_devices: int
    cuda_names: tuple[str, ...]
    cuda_memory_bytes: int
    """Memory of the first GPU."""
    cuda_bf16: bool
    ram_available_bytes: int

    @property
    def has_cuda(self) -> bool:
        return self.cuda_devices > 0


def detect() -> Machine:
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    names = tuple(torch.cuda.get_device_name(i) for i in range(count))
    memory = torch.cuda.get_device_properties(0).total_memory if count else 0
    bf16 = bool(count and torch.cuda.is_bf16_supported())
    return Machine(count, names, memory, bf16, available_ram())


def available_ram() -> int:
    """MemAvailable from /proc/meminfo (what a new process can use without swapping)."""
    with contextlib.suppress(OSError):  # no /proc (not Linux): fall back to the physical memory
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
