"""Before and after, for a method trained against a declared reward: the reward's checks score the base
model's greedy answers to the eval prompts, then the trained model's. Only the declared checks take part:
they are data, and cost nothing to run twice (a reward model would be a second copy in memory, a function
a second run of someone's code)."""

from __future__ import annotations

from dataclasses import dataclass

from runner.errors import RunnerError
from runner.execute.samples import generate
from runner.manifest import RewardScores
from runner.plan.models import Plan
from runner.rewards.pattern import EngineMissing
from runner.rewards.scoring import Completion, RewardScorer

MAX_PROMPTS = 64
"""Eval prompts answered by each model (greedy, as the samples)."""
BATCH = 16


@dataclass(frozen=True)
class RewardCheck:
    scorer: RewardScorer
    rows: list[dict]
    """Eval examples: the rendered prompt and the columns the checks read."""
    max_new_tokens: int

    @classmethod
    def of(cls, plan: Plan, method_section, splits) -> RewardCheck | None:
        """For a method whose reward declares checks, when the spec has eval data; else None."""
        reward = getattr(method_section, "reward", None)
        if reward is None or "eval" not in splits or not plan.loss_mask.generation_tokens:
            return None
        try:
            scorer = RewardScorer(reward)
        except EngineMissing as error:
            raise RunnerError(str(error), "install it where jobs run, or remove the regex checks") from None
        if not scorer.checks:
            return None
        return cls(scorer, splits["eval"].examples[:MAX_PROMPTS], plan.loss_mask.generation_tokens)

    def score(self, model, tokenizer, *, templated: bool) -> RewardScores:
        answers = generate(model, tokenizer, [row["prompt"] for row in self.rows], templated=templated,
                           max_new_tokens=self.max_new_tokens, batch=BATCH)
        completions = [Completion(answer, len(tokenizer(answer, add_special_tokens=False)["input_ids"]))
                       for answer in answers]
        scores = self.scorer.scores(completions, self.rows)
        return RewardScores(total=round(_mean(self.scorer.total(scores)), 4),
                            checks={name: round(_mean(values), 4) for name, values in scores.items()})


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0
