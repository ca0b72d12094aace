"""How a job is spread over its devices: the strategy (ddp or fsdp), CPU offload, gradient
checkpointing and the micro-batch, decided together from the memory estimate. No torch.

`auto` takes the first layout, fastest first, whose estimate fits one device:

    ddp                    a full copy of the model per device; gradients all-reduced
    fsdp                   weights, gradients and AdamW states sharded: 1/N of each per device
    fsdp + checkpointing   activations recomputed in the backward pass
    fsdp + offload         the shards in CPU memory, the optimizer stepping there

On one device (or for a method that does not shard) sharding saves nothing, so ddp with
checkpointing comes before offload. Within a layout the micro-batch is the largest divisor of
the per-device batch that fits. When no layout fits, `devices_needed` says how many devices
of this size would.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from runner.plan import memory
from runner.plan.memory import GIB, Workload
from runner.plan.models import DeviceFacts, ModelFacts
from runner.spec.models import HardwareSpec

MOST_DEVICES = 4096


class LayoutError(ValueError):
    """The spec asks for a layout that cannot run; the message says why."""


@dataclass(frozen=True)
class Layout:
    strategy: str
    offload: bool
    checkpointing: bool
    micro_batch: int
    fits: bool
    micro_rule: str
    """Why this micro-batch."""
    strategy_rule: str
    """Why this strategy (and offload), naming the layouts that did not fit."""


def choose(facts: ModelFacts, base: Workload, hardware: HardwareSpec, device: DeviceFacts, per_device: int,
           budget: int, host_budget: int | None, *, unsharded: str | None, minimum: int = 1,
           unit_name: str = "per-device batch") -> Layout:
    """The first allowed layout whose estimate fits `budget`; else the most frugal one, marked
    as not fitting. `per_device` (the `unit_name`) is what the micro-batch must divide, with at least
    `minimum` rows; `host_budget` is the CPU memory of one machine that offload may fill (None: unknown,
    offload is not chosen automatically); `unsharded` says why the method cannot shard (None: it can)."""
    candidates = _candidates(hardware, device, base, unsharded)
    divisors = [d for d in range(per_device, 0, -1) if per_device % d == 0 and d >= minimum]
    if not divisors:
        raise LayoutError(f"micro-batches need at least {minimum} rows; the {unit_name} has {per_device}")
    refused = []
    fallback = candidates[-1]
    for strategy, checkpointing, offload in candidates:
        work = replace(base, strategy=strategy, devices=device.count, offload=offload, checkpointing=checkpointing)
        needed = memory.offloaded_bytes(facts, work) // device.nodes if offload else 0  # per machine
        if offload:
            if host_budget is None or needed > host_budget:
                known = f"{host_budget / GIB:.0f} GiB available" if host_budget is not None else "unknown here"
                refused.append(f"{_name(strategy, checkpointing, offload)} needs {needed / GIB:.0f} GiB of CPU "
                               f"memory ({known})")
                continue
        for micro in divisors:
            total = memory.total_bytes(facts, replace(work, micro_batch=micro))
            if total <= budget:
                with_text = " with gradient checkpointing" if checkpointing else ""
                rule = f"the largest divisor of the {unit_name} ({per_device}) whose estimate fits{with_text}"
                return Layout(strategy, offload, checkpointing, micro, True, rule,
                              _strategy_rule(strategy, needed, device, refused))
        smallest = memory.total_bytes(facts, replace(work, micro_batch=divisors[-1]))
        refused.append(f"{_name(strategy, checkpointing, offload)} needs {smallest / GIB:.1f} GiB")
        fallback = (strategy, checkpointing, offload)
    strategy, checkpointing, offload = fallback
    return Layout(strategy, offload, checkpointing, divisors[-1], False, "nothing fits; the smallest micro-batch",
                  "nothing fits: " + "; ".join(refused))


def devices_needed(facts: ModelFacts, work: Workload, budget: int, current: int) -> int | None:
    """The fewest devices of this size on which fsdp with checkpointing and micro-batch 1 fits
    (None when even MOST_DEVICES would not: the activations alone are too big)."""
    frugal = replace(work, strategy="fsdp", offload=False, checkpointing=True, micro_batch=1)
    for count in range(max(current, 1) + 1, MOST_DEVICES + 1):
        if memory.total_bytes(facts, replace(frugal, devices=count)) <= budget:
            return count
    return None


def _candidates(hardware: HardwareSpec, device: DeviceFacts, work: Workload,
                unsharded: str | None) -> list[tuple[str, bool, bool]]:
    """(strategy, checkpointing, offload) in the order `auto` tries them, within what the spec allows."""
    why_not = unsharded or ("fsdp computes in bf16 or fp32; fp16 needs a gradient scaler that sharding does not "
                            "support" if work.precision == "fp16" else None)
    for key in ("strategy", "offload"):
        if why_not and getattr(hardware, key) in ("fsdp", True):
            raise LayoutError(f"hardware.{key}: {getattr(hardware, key)} is not possible here: {why_not}")
    order = [("ddp", False, False), ("ddp", True, False)]
    if not why_not and device.count > 1:
        order = [("ddp", False, False), ("fsdp", False, False), ("fsdp", True, False)]
    if not why_not and device.type == "cuda":
        order += [("fsdp", False, True), ("fsdp", True, True)]
    if hardware.strategy == "fsdp" and device.count == 1:
        order = [("fsdp", False, False), ("fsdp", True, False), *order]
    allowed = [(strategy, checkpointing, offload) for strategy, checkpointing, offload in order
               if hardware.strategy in ("auto", strategy)
               and hardware.gradient_checkpointing in ("auto", checkpointing)
               and hardware.offload in ("auto", offload)]
    if not allowed:
        raise LayoutError("hardware.offload: true needs the job on GPUs (device: cuda)")
    return allowed


def _strategy_rule(strategy: str, offloaded: int, device: DeviceFacts, refused: list[str]) -> str:
    if strategy == "ddp":
        chosen = "ddp: one device, a single copy" if device.count == 1 else \
            f"ddp: a full copy fits on each of the {device.count} devices"
    else:
        chosen = f"fsdp: sharded over {device.count} device(s)"
        if offloaded:
            chosen += f", the shards in CPU memory, {offloaded / GIB:.0f} GiB a machine"
    return chosen + (f" ({'; '.join(refused)})" if refused else "")


def _name(strategy: str, checkpointing: bool, offload: bool) -> str:
    return strategy + (" + checkpointing" if checkpointing else "") + (" + offload" if offload else "")
