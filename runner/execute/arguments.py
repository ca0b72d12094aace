"""TrainingArguments for the TRL trainers, from the plan alone (the user never writes them).

Every value that a TRL or transformers default would otherwise decide (precision, gradient
checkpointing, logging, saving) is set here explicitly from the plan.
"""

from __future__ import annotations

from runner.plan.models import Plan
from runner.rundir import RunDirectory


def common(plan: Plan, run: RunDirectory) -> dict:
    value = plan.value
    precision, cpu = value("hardware.precision"), value("hardware.device") == "cpu"
    has_eval = plan.steps.eval_every is not None
    return dict(
        output_dir=str(run.checkpoints),
        per_device_train_batch_size=value("training.micro_batch_size"),
        per_device_eval_batch_size=value("training.micro_batch_size"),
        gradient_accumulation_steps=value("training.gradient_accumulation"),
        learning_rate=value("training.learning_rate"),
        lr_scheduler_type=value("training.lr_scheduler"),
        warmup_steps=plan.steps.warmup_steps,
        max_steps=plan.steps.total_steps,
        weight_decay=value("training.weight_decay"),
        max_grad_norm=value("training.max_grad_norm") or 0.0,
        seed=value("training.seed"),
        data_seed=value("training.seed"),
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        activation_checkpointing=value("hardware.gradient_checkpointing"),
        use_cpu=cpu,
        optim="adamw_torch" if cpu else "adamw_torch_fused",
        ddp_backend="gloo" if cpu and plan.device.count > 1 else None,
        ddp_find_unused_parameters=False,  # frozen parameters take no gradient; nothing is unused
        logging_steps=value("training.log_every"),
        logging_first_step=True,
        save_strategy="steps",
        save_steps=plan.steps.checkpoint_every,
        save_total_limit=value("outputs.keep_checkpoints"),
        eval_strategy="steps" if has_eval else "no",
        eval_steps=plan.steps.eval_every if has_eval else None,
        include_num_input_tokens_seen="non_padding",
        report_to=[],
        disable_tqdm=True,
        dataloader_num_workers=0,
        remove_unused_columns=False,
    )
