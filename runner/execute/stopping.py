"""Stopping every rank of a run after the same step.

A stop signal (Ctrl-C, scancel, the daemon) reaches the processes of a run at slightly different moments.
A rank that left the training loop one step before another would leave that one waiting in a collective
operation until it fails ("Connection reset by peer") or times out, and the checkpoint of the step the
first one stopped at may never be written. So each rank shares its flag after every step and all of them
act on the same answer.
"""

from __future__ import annotations

import threading

import torch


class AgreedStop:
    """Shares the stop flag on a CPU (gloo) group, asynchronously: the flags shared after step k are read
    after step k+1, so no step waits for the exchange and the GPU never syncs for it; a stop takes effect
    one step later than on a single process."""

    def __init__(self, stop: threading.Event, world: int) -> None:
        self.stop, self.world = stop, world
        self.pending = None
        if world > 1:
            import torch.distributed as dist

            self.group = dist.new_group(backend="gloo")

    def after_step(self) -> bool:
        """Whether to stop now; the same answer on every rank. A stop agreed on is set on every rank."""
        if self.world == 1:
            return self.stop.is_set()
        import torch.distributed as dist

        agreed = False
        if self.pending is not None:
            work, flags = self.pending
            work.wait()
            agreed = bool(flags.item())
        flags = torch.tensor([int(self.stop.is_set())])
        self.pending = (dist.all_reduce(flags, op=dist.ReduceOp.MAX, group=self.group, async_op=True), flags)
        if agreed:
            self.stop.set()
        return agreed
