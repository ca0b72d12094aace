"""Stopping a run at a signal, and every rank of it after the same step.

A signal handler runs between any two bytecodes of the main thread: in the middle of writing a log line
too, where logging again would wait forever on the logger's lock (it is not re-entrant) or garble the
line. So the handler (`on_signals`) only records the request (`StopRequest.record`), and the code that
acts on it says so in the run's events, when it first looks (`StopRequest.requested`): after a step, in
every loop.

A stop signal (Ctrl-C, scancel, the daemon) reaches the processes of a run at slightly different moments.
A rank that left the training loop one step before another would leave that one waiting in a collective
operation until it fails ("Connection reset by peer") or times out, and the checkpoint of the step the
first one stopped at may never be written. So each rank shares its flag after every step and all of them
act on the same answer (`AgreedStop`), in runner's own loop and in the TRL recipes' callback alike.
"""

from __future__ import annotations

import signal
import threading
import time

import torch

from runner.execute.events import EventLog


SAME_STOP_S = 2.0
"""Stop signals this soon after the first are the same request: Slurm signals every process of a job step,
and torchrun passes the signal on as well."""


class StopRequest:
    """Whether this process was asked to stop, by which signal and when. Plain attributes, no lock: a
    handler that waits for a lock the interrupted code holds waits forever (threading.Event.set too)."""

    def __init__(self, events: EventLog) -> None:
        self.events = events
        self.asked = False
        self.signal: int | None = None
        """The signal that asked; None when another process of the run was signalled (`AgreedStop`)."""
        self.at: float | None = None
        """time.monotonic() of the request."""
        self._announced = False

    def record(self, signum: int | None) -> None:
        """The signal handler's part, and all it may do: set the flags."""
        self.signal, self.at = signum, time.monotonic()
        self.asked = True

    def requested(self) -> bool:
        """Whether a stop was asked for; the first time the answer is yes, the run's events say so."""
        if not self.asked:
            return False
        if not self._announced:
            self._announced = True
            name = signal.Signals(self.signal).name if self.signal else None
            self.events.warning("stopping", f"{name or 'another process of the run was signalled'}: stopping "
                                "after this step, with a checkpoint (a second signal stops at once)",
                                signal=name, since_signal_s=round(time.monotonic() - self.at, 3))
        return True


def on_signals(stop: StopRequest):
    """First SIGINT/SIGTERM: checkpoint at the end of the step and stop. A later one: stop now. Returns
    the undo (the previous handlers back)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum, frame):
        if stop.at is not None and time.monotonic() - stop.at < SAME_STOP_S:
            return  # the same stop, passed on by torchrun or sent to every process by Slurm
        if stop.asked:
            raise KeyboardInterrupt
        stop.record(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    return lambda: [signal.signal(sig, old) for sig, old in previous.items()]


class AgreedStop:
    """Shares the stop flag on a CPU (gloo) group, asynchronously: the flags shared after step k are read
    after step k+1, so no step waits for the exchange and the GPU never syncs for it; a stop takes effect
    one step later than on a single process. Every rank must make it, and call `after_step`, together."""

    def __init__(self, stop: StopRequest, world: int) -> None:
        self.stop, self.world = stop, world
        self.pending = None
        if world > 1:
            import torch.distributed as dist

            self.group = dist.new_group(backend="gloo")

    def after_step(self) -> bool:
        """Whether to stop now; the same answer on every rank. A stop agreed on is recorded on every rank."""
        asked = self.stop.requested()
        if self.world == 1:
            return asked
        import torch.distributed as dist

        agreed = False
        if self.pending is not None:
            work, flags = self.pending
            work.wait()
            agreed = bool(flags.item())
        flags = torch.tensor([int(asked)])
        self.pending = (dist.all_reduce(flags, op=dist.ReduceOp.MAX, group=self.group, async_op=True), flags)
        if agreed and not self.stop.asked:
            self.stop.record(None)
            self.stop.requested()
        return agreed
