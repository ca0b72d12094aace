"""Distillation: TRL's GKD trainer (generalised knowledge distillation). The student learns the teacher's
next-token distributions over an answer's tokens: the data's answer, or, on a share
`on_policy` of the steps, a completion the student samples itself (the teacher scores it token by token).

The rows are runner's own supervised encoding: the answer's tokens are those the loss covers, and
everything before the first of them is the prompt the student completes on on-policy steps.
"""

from __future__ import annotations

import warnings

import torch

from runner.errors import RunnerError
from runner.execute import arguments, loading
from runner.execute.context import Context, Trained
from runner.methods.descriptors.distill import DistillSection
from runner.methods.registry import CAUSAL_LM

with warnings.catch_warnings():  # importing trl.experimental warns that it is experimental; the plan says whose code runs
    warnings.simplefilter("ignore")
    from trl.experimental.gkd import GKDConfig, GKDTrainer

IGNORED = -100


def config(ctx: Context) -> GKDConfig:
    distill: DistillSection = ctx.settings.method
    return GKDConfig(
        **arguments.common(ctx.settings.training, ctx.run),
        lmbda=distill.on_policy,
        beta=distill.beta,
        temperature=distill.temperature,
        max_new_tokens=distill.max_completion_length,
        max_length=ctx.settings.training.max_length,
        seq_kd=False,
    )


def teacher_of(ctx: Context):
    """The teacher, frozen, in fp32 beside the student; it must score the student's tokens, so it shares
    their vocabulary."""
    teacher = loading.load_model(loading.location_of(ctx.plan, ctx.plan.inputs.teacher_model), CAUSAL_LM,
                                 torch.float32, pad_token_id=ctx.tokenizer.pad_token_id)
    student_vocabulary = ctx.model.get_input_embeddings().weight.shape[0]
    teacher_vocabulary = teacher.get_input_embeddings().weight.shape[0]
    if teacher_vocabulary != student_vocabulary:
        raise RunnerError(f"the teacher has a vocabulary of {teacher_vocabulary:,} tokens, the student "
                          f"{student_vocabulary:,}: it cannot score the student's tokens",
                          "distil from a teacher of the same model family (the same tokenizer)")
    return teacher.requires_grad_(False).eval().to(next(ctx.model.parameters()).device)


def dataset(ctx: Context, role: str):
    """The split's examples as the GKD collator takes them: the tokens, and which of them are the answer."""
    from datasets import Dataset

    split = ctx.splits.get(role)
    if split is None:
        return None
    return Dataset.from_list([{"input_ids": example["input_ids"], "prompt": "",
                               "completion_mask": [int(label != IGNORED) for label in example["labels"]]}
                              for example in split.examples])


def train(ctx: Context) -> Trained:
    # --- setup ---
    trainer = GKDTrainer(
        model=ctx.model,
        teacher_model=teacher_of(ctx),
        args=config(ctx),
        train_dataset=dataset(ctx, "train"),
        eval_dataset=dataset(ctx, "eval"),
        processing_class=ctx.tokenizer,
    )
    # --- train ---
    return ctx.train_with(trainer)
