"""What the GRPO family's options mean and where they come from: the papers the plan cites, and the rules
the GRPO and RLOO descriptors share. Torch-free (the descriptors import it)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from runner.methods.registry import REFERENCE, REWARD, Batching, Finding, MemoryTerms

GRPO = "GRPO (Shao et al. 2024, arXiv:2402.03300)"
DAPO = "DAPO (Yu et al. 2025, arXiv:2503.14476)"
DR_GRPO = "Dr. GRPO (Liu et al. 2025, arXiv:2503.20783)"
BNPO = "BNPO (Xiao et al. 2025, arXiv:2506.02864)"
GSPO = "GSPO (Zheng et al. 2025, arXiv:2507.18071)"
LITE_PPO = "Lite PPO (Liu et al. 2025, arXiv:2508.08221)"
PPO = "PPO (Schulman et al. 2017, arXiv:1707.06347)"
RLOO = "RLOO (Ahmadian et al. 2024, arXiv:2402.14740)"

SCALINGS = {"group": f"{GRPO}: divided by the group's standard deviation",
            "batch": f"{LITE_PPO}: divided by the batch's standard deviation",
            "none": f"{DR_GRPO}: not divided (the division favours too easy and too hard prompts)"}
SAMPLING = {"token": f"{GRPO}: one ratio per token", "sequence": f"{GSPO}: one ratio per completion"}


def method_of(section: Any) -> str:
    """The section's method, as its field paths start (GrpoSection -> grpo)."""
    return section.__class__.__name__.removesuffix("Section").lower()


def memory(section: Any, mode: str) -> MemoryTerms:
    """A reference copy when beta > 0 (LoRA: the base with the adapter off), a reward model when one is a term,
    and the completions' tokens."""
    models = (REFERENCE,) if section.beta > 0 and mode != "lora" else ()
    if section.reward.model is not None:
        models += (REWARD,)
    return MemoryTerms(generated_tokens=section.max_completion_length, models=models)


def whole_groups(section: Any, batching: Batching) -> Iterator[Finding]:
    if batching.batch != "auto" and batching.batch % section.num_generations:
        yield Finding((method_of(section), "num_generations"),
                      f"num_generations {section.num_generations} does not divide batch_size {batching.batch}",
                      "a batch holds whole groups of completions of one prompt")


def clipping_origins(section: Any) -> dict[str, str]:
    """The clipped-ratio options GRPO and RLOO share, with their sources."""
    inert = " (no effect with num_iterations 1: the ratio is 1)" if section.num_iterations == 1 else ""
    return {
        "num_iterations": f"{GRPO}: mu, passes over each batch of completions",
        "epsilon": f"{PPO}: the clip range of the policy ratio{inert}",
        "epsilon_high": f"{DAPO}: clip-higher (0.28 there); default: epsilon",
        "mask_truncated_completions": f"{DAPO}: overlong filtering",
    }


def clipping_acts(section: Any, batching: Batching) -> Iterator[Finding]:
    """With one pass over each batch of completions, the policy that trains is the one that sampled: the
    ratio is exactly 1 (TRL does not even compute the old log-probabilities), so nothing is clipped and the
    level of importance sampling changes nothing. An option that says otherwise is refused, not ignored."""
    method = method_of(section)
    if section.epsilon_high is not None and section.epsilon_high < section.epsilon:
        yield Finding((method, "epsilon_high"), f"epsilon_high {section.epsilon_high:g} is below epsilon "
                      f"{section.epsilon:g}: the upper clip bound would be tighter than the lower one",
                      "clip-higher raises the upper bound: use a value >= epsilon, or leave it out")
    if section.num_iterations > 1:
        return
    given = [name for name, default in (("epsilon_high", None), ("importance_sampling", "token"))
             if getattr(section, name, default) != default]
    for name in given:
        yield Finding((method, name), f"{name} has no effect with num_iterations 1: the policy that trains is the "
                      "one that sampled, so the policy ratio is 1 and nothing is clipped or reweighted",
                      "set num_iterations: 2 or more (each batch of completions is trained on that many times), "
                      f"or remove {name}")
