"""Supervised fine-tuning: runner's own training loop, on rows that runner tokenized and masked.

Why not TRL's SFTTrainer here: measured side by side (bench/throughput.py) its per-step
extras cost more than the model on small models (entropy and token accuracy, each a pass
over the vocabulary, every step; a host sync for the token count), and its padding-free
packing puts the whole batch in one row under a dense mask. This loop does what a plain
PyTorch loop does, plus what a run needs:

    setup   batches of the plan (packed blocks with per-document attention, or padded rows),
            AdamW (fused on GPU; LoRA+ groups), the schedule, autocast, gradient checkpointing, DDP (or the
            FSDP model the job built), resume
    train   per step: micro-batches, loss = sum of token losses / tokens in the step (so
            packed or not, one micro-batch or eight, one process or eight, the gradient is the
            same), clip, step; the host reads values back only on logging steps
    save    the job saves the model; checkpoints hold trainable tensors, optimizer, schedule,
            written by every process (each its shards) and readable by any number of them
"""

from __future__ import annotations

import contextlib
import math
import os
import time

import torch
import torch.nn.functional as F

from runner.execute import sharding, trainable
from runner.execute.batches import IGNORE, Micro, shuffled_forever, step_micro_batches
from runner.execute.context import Context, Trained
from runner.execute.loop import lr_schedule, resume, save_checkpoint
from runner.execute.settings import TrainingSettings
from runner.execute.stopping import AgreedStop

AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def train(ctx: Context) -> Trained:
    # --- setup ---
    training = ctx.settings.training
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    device, sharded = sharding.device_of(training.device), training.strategy == "fsdp"
    model = prepared(ctx.model if sharded else ctx.model.to(device), training)  # FSDP placed its shards already
    trained = [p for p in model.parameters() if p.requires_grad]
    fused = device.type == "cuda" and not training.offload  # offload steps on the CPU
    optimizer = trainable.optimizer(model, ctx.plan.trainable.lora, training.learning_rate, training.weight_decay,
                                    fused=fused)
    schedule = lr_schedule(training, optimizer)
    step = resume(ctx, optimizer, schedule, model=model)
    network = model if sharded else _distributed(model, device, world)
    stopping = AgreedStop(ctx.stop, world)
    examples = ctx.splits["train"].examples
    order = shuffled_forever(len(examples), training.seed, skip=step * training.batch_size)
    layout = dict(micro=training.micro_batch_size, packing=ctx.settings.method.packing,
                  max_length=training.max_length, pad_id=ctx.tokenizer.pad_token_id, rank=rank, world=world)
    autocast = AUTOCAST.get(training.precision)
    scaler = torch.amp.GradScaler("cuda") if autocast is torch.float16 else None
    events, metrics, stopped = ctx.events, ctx.metrics, False
    total, log_every = training.total_steps, training.log_every
    eval_every, checkpoint_every = training.eval_every, training.checkpoint_every
    logged_loss = torch.zeros((), device=device)
    logged_steps, logged_tokens, tokens_seen, began, last_log = 0, 0, 0, time.monotonic(), time.monotonic()

    # --- train ---
    model.train()
    while step < total and not stopped:
        step += 1
        rows = [examples[next(order)] for _ in range(training.batch_size)]
        micros, targets, tokens = step_micro_batches(rows, **layout)
        logged_loss += accumulate_gradients(network, micros, targets, world, device, autocast, scaler)
        logged_tokens += tokens
        if scaler:
            scaler.unscale_(optimizer)
        norm = torch.nn.utils.clip_grad_norm_(trained, training.max_grad_norm or math.inf)
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        logged_steps += 1
        if step % log_every == 0 or step == total:
            now = time.monotonic()
            record = {"step": step, "epoch": round(step * training.batch_size / len(examples), 4),
                      "elapsed_s": round(now - began, 3), "loss": _sum_over_ranks(logged_loss, world) / logged_steps,
                      "learning_rate": schedule.get_last_lr()[0], "grad_norm": _local_value(norm),
                      "tokens_per_second": round(logged_tokens / (now - last_log), 1)}
            tokens_seen += logged_tokens
            logged_loss.zero_()
            logged_steps, logged_tokens, last_log = 0, 0, now
            if eval_every and (step % eval_every == 0 or step == total):
                record["eval_loss"] = _evaluate(network, ctx, layout, device, autocast, world)
            if rank == 0:
                metrics.write(record)
                events.progress(step, total, record["loss"], record["tokens_per_second"], began)
        paused = time.monotonic()
        ctx.evaluate(model, step)
        last_log += time.monotonic() - paused  # the speed is training's, without the evals between
        stopped = stopping.after_step()
        if step % checkpoint_every == 0 or stopped:  # every process writes its part
            save_checkpoint(ctx, step, optimizer, schedule, model=model)
    return Trained(model, step, tokens_seen)


def prepared(model, training: TrainingSettings):
    """The model as the loop trains it: gradient checkpointing as planned, no cache."""
    if training.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model.config.use_cache = False  # a cache makes packed documents attend to each other
    return model


def accumulate_gradients(network, micros: list[Micro], targets: int, world: int, device: torch.device,
                         autocast: torch.dtype | None = None, scaler=None) -> torch.Tensor:
    """Forward and backward over this process's micro-batches of one step; returns its share of the
    step's loss (the shares of all processes sum to the step's loss)."""
    share = torch.zeros((), device=device)
    for index, micro in enumerate(micros):
        last = index == len(micros) - 1
        with _no_sync(network, last), torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
            loss = _loss(network, micro.to(device), targets)
        # DDP and FSDP average gradients over processes; each holds a share of the step's sum: scale up.
        backward = loss * world
        (scaler.scale(backward) if scaler else backward).backward()
        share += loss.detach()
    return share


def _loss(model, micro: Micro, targets: int) -> torch.Tensor:
    """Sum of the token losses of this micro-batch over the step's target count."""
    logits = model(input_ids=micro.input_ids, attention_mask=micro.attention_mask, position_ids=micro.position_ids,
                   use_cache=False).logits
    shifted = logits[:, :-1].reshape(-1, logits.shape[-1])
    return F.cross_entropy(shifted.float(), micro.labels[:, 1:].reshape(-1), ignore_index=IGNORE,
                           reduction="sum") / max(targets, 1)


@torch.no_grad()
def _evaluate(model, ctx: Context, layout: dict, device, autocast, world: int) -> float:
    examples = ctx.splits["eval"].examples
    model.eval()
    total = torch.zeros((), device=device)
    batch = ctx.settings.training.batch_size
    all_targets = 0
    for start in range(0, len(examples), batch):
        micros, targets, _ = step_micro_batches(examples[start:start + batch], **layout)
        all_targets += targets
        for micro in micros:
            with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
                total += _loss(model, micro.to(device), 1)
    model.train()
    return _sum_over_ranks(total, world) / max(all_targets, 1)


def _distributed(model, device: torch.device, world: int):
    if world == 1:
        return model
    sharding.init_distributed(device)
    # Gradients live in DDP's buckets (no second copy of them); frozen parameters take no gradient.
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                     else None, gradient_as_bucket_view=True)


def _no_sync(network, last: bool):
    """Gradients are averaged across processes once per step, at the last micro-batch."""
    if last or not hasattr(network, "no_sync"):
        return contextlib.nullcontext()
    return network.no_sync()


def _local_value(tensor: torch.Tensor) -> float:
    """A scalar that may be a DTensor (FSDP's gradient norm)."""
    return float(tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor)


def _sum_over_ranks(total: torch.Tensor, world: int) -> float:
    """Each process holds a share of a global sum (of losses divided by the step's targets)."""
    if world > 1:
        import torch.distributed as dist

        total = total.clone()
        dist.all_reduce(total)
    return float(total)
