"""Reward functions for the GRPO example: (prompts, completions) -> one float each.

A reward that only pays for the word "Chatty" is always 0 on the base model (it never
says it), so GRPO would learn nothing; this one also pays for introducing itself.
"""


def introduces_itself(prompts: list[str], completions: list[str]) -> list[float]:
    scores = []
    for completion in completions:
        text = completion.lower()
        score = 0.0
        if "my name is" in text or "i'm " in text or "i am " in text or "call me" in text:
            score += 0.5
        if "chat" in text:
            score += 0.5
        if "chatty" in text:
            score += 1.0
        scores.append(score - 0.01 * max(0, len(completion.split()) - 12))
    return scores
