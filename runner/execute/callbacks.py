"""The trainer callback that writes metrics.jsonl, drives the progress bar, and stops at a signal."""

from __future__ import annotations

import time

from transformers import TrainerCallback

from runner.execute.events import EventLog, MetricsLog
from runner.execute.stopping import AgreedStop, StopRequest


class RunCallback(TrainerCallback):
    def __init__(self, events: EventLog, metrics: MetricsLog, stop: StopRequest, total_steps: int,
                 evaluate=None) -> None:
        self.events, self.metrics, self.stop, self.total_steps = events, metrics, stop, total_steps
        self.evaluate = evaluate
        """The job's evals while training: (model, step), after each step."""
        self.stopping: AgreedStop | None = None
        self.started = time.monotonic()
        self.last_time, self.last_tokens = self.started, 0
        self.last_loss: float | None = None
        self.tokens_per_second: float | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.stopping = AgreedStop(self.stop, args.world_size)  # every rank begins training, together
        self.started = self.last_time = time.monotonic()
        self.last_tokens = state.num_input_tokens_seen or 0

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        now = time.monotonic()
        record = {"step": state.global_step, "epoch": round(state.epoch or 0, 4),
                  "elapsed_s": round(now - self.started, 3)}
        tokens = state.num_input_tokens_seen or 0
        if "loss" in logs and now > self.last_time and tokens > self.last_tokens:
            self.tokens_per_second = (tokens - self.last_tokens) / (now - self.last_time)
            record["tokens_per_second"] = round(self.tokens_per_second, 1)
            self.last_time, self.last_tokens = now, tokens
        for key, value in logs.items():
            if key in ("epoch", "total_flos") or not isinstance(value, (int, float)):
                continue
            record[key] = value
        if "loss" in record:
            self.last_loss = record["loss"]
        record["tokens_seen"] = tokens
        self.metrics.write(record)
        self.events.progress(state.global_step, self.total_steps, self.last_loss, self.tokens_per_second,
                             self.started)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.evaluate is not None and model is not None and state.is_world_process_zero:
            self.evaluate(model, state.global_step)
        if self.stopping.after_step():
            control.should_save = True
            control.should_training_stop = True

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.events.event("checkpoint", step=state.global_step)
