"""TrainingArguments for the TRL trainers, from the plan's settings alone (the user never writes them).

Every value that a TRL or transformers default would otherwise decide (precision, gradient
checkpointing, logging, saving) is set here explicitly from the plan.
"""

from __future__ import annotations

from runner.execute.settings import TrainingSettings
from runner.rundir import RunDirectory


def common(training: TrainingSettings, run: RunDirectory) -> dict:
    cpu = training.device == "cpu"
    has_eval = training.eval_every is not None
    return dict(
        output_dir=str(run.checkpoints),
        per_device_train_batch_size=training.micro_batch_size,
        per_device_eval_batch_size=training.micro_batch_size,
        gradient_accumulation_steps=training.gradient_accumulation,
        learning_rate=training.learning_rate,
        lr_scheduler_type=training.lr_scheduler,
        warmup_steps=training.warmup_steps,
        max_steps=training.total_steps,
        weight_decay=training.weight_decay,
        max_grad_norm=training.max_grad_norm or 0.0,
        seed=training.seed,
        data_seed=training.seed,
        bf16=training.precision == "bf16",
        fp16=training.precision == "fp16",
        activation_checkpointing=training.gradient_checkpointing,
        use_cpu=cpu,
        optim="adamw_torch" if cpu else "adamw_torch_fused",
        ddp_backend="gloo" if cpu and training.devices > 1 else None,
        ddp_find_unused_parameters=False,  # frozen parameters take no gradient; nothing is unused
        logging_steps=training.log_every,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=training.checkpoint_every,
        save_total_limit=training.keep_checkpoints,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=training.eval_every if has_eval else None,
        include_num_input_tokens_seen="non_padding",
        report_to=[],
        disable_tqdm=True,
        dataloader_num_workers=0,
        remove_unused_columns=False,
    )
