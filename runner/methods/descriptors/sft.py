"""sft: supervised fine-tuning on answers, chat turns or plain text."""

from __future__ import annotations

from runner.methods.registry import SUPERVISED, MethodDescriptor
from runner.spec.fields import Section, SwitchOrAuto


class SftSection(Section):
    packing: SwitchOrAuto = "auto"
    """Pack rows into full blocks with per-document attention; `auto` lets the planner decide."""


DESCRIPTOR = MethodDescriptor(
    name="sft",
    summary="supervised: the answers (or every token) of your rows",
    section=SftSection,
    formats=("messages", "prompt_completion", "text"),
    rows=SUPERVISED,
    example_row={"prompt": "What is your name?", "completion": "Chatty."},
    objective="next-token cross-entropy on the trained tokens (sum over tokens / tokens in the step)",
    mask_rule={
        "messages": "assistant turns only (turns with weight 0 excluded); system, user and tool turns are context",
        "prompt_completion": "completion tokens only; the prompt is context{wrapped}",
        "text": "every token (text rows have no prompt)",
    },
    learning_rates={"full": 2e-5, "freeze": 1e-4, "lora": 2e-4},
    training_path="runner's SFT loop (runner/methods/sft.py); loss = token sum / tokens per step",
    recipe="runner.methods.sft",
    runner_loop=True,
    packing=True,
    shards=True,
)
