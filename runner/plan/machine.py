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
    what_if: bool = False
    """Described with --machine, not detected: a plan for it is for reading, not for running here."""

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


WHAT_IF_KEYS = {"gpus": "number of GPUs", "gpu_gb": "memory of each GPU in GB", "ram_gb": "CPU memory in GB"}


def what_if(text: str) -> Machine:
    """A machine described as `gpus=8,gpu_gb=80,ram_gb=1024` (GPUs with bf16; without gpus: a CPU box).
    For planning a job for hardware this box does not have."""
    values: dict[str, float] = {}
    for part in filter(None, (piece.strip() for piece in text.split(","))):
        key, _, number = part.partition("=")
        if key not in WHAT_IF_KEYS:
            raise ValueError(f"unknown key {key!r} in --machine {text!r}; keys: "
                             + ", ".join(f"{name} ({meaning})" for name, meaning in WHAT_IF_KEYS.items()))
        try:
            values[key] = float(number)
        except ValueError:
            raise ValueError(f"--machine {key}={number!r}: expected a number") from None
        if not 0 < values[key] < 1e6 or (key == "gpus" and not values[key].is_integer()):
            raise ValueError(f"--machine {key}={number}: expected a positive {'whole ' if key == 'gpus' else ''}number")
    gpus = int(values.get("gpus", 0))
    if gpus and "gpu_gb" not in values:
        raise ValueError("--machine with gpus needs gpu_gb (memory of each GPU), e.g. gpus=8,gpu_gb=80")
    gpu_bytes = int(values.get("gpu_gb", 0) * 1e9)
    name = f"GPU with {values.get('gpu_gb', 0):g} GB (what-if)"  # once: the plan shows it for all of them
    return Machine(gpus, (name,) if gpus else (), gpu_bytes, bool(gpus),
                   int(values.get("ram_gb", 0) * 1e9) or available_ram(), what_if=True)
