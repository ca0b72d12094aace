"""A method's declared reward, loaded for the RL recipes (GRPO, RLOO, PPO) and for the before/after
evaluation: the scorer of its checks (runner.rewards), its reward model, and its Python functions.

Every term is scored by name: TRL's trainers get one reward function per term (and log
rewards/NAME/mean for each), PPO sums them itself, both with the spec's weights. `runner validate` finds
a function's file through `RewardTerm.function_file`, as `load_function` does here.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from runner.errors import RunnerError
from runner.execute import loading
from runner.methods.registry import SCORE
from runner.plan.models import Plan
from runner.rewards.pattern import EngineMissing
from runner.rewards.scoring import Completion, RewardScorer
from runner.rewards.spec import DeclaredReward, RewardTerm

SCORE_BATCH = 16


def sampling_options(section) -> dict:
    """The options TRL's GRPO and RLOO configs share, from their sections (same names in both): the group,
    the sampling, the KL weight and the clipped ratio."""
    return dict(num_generations=section.num_generations, max_completion_length=section.max_completion_length,
                temperature=section.temperature, top_p=1.0, top_k=0, beta=section.beta,
                num_iterations=section.num_iterations, epsilon=section.epsilon, epsilon_high=section.epsilon_high,
                mask_truncated_completions=section.mask_truncated_completions)


def train_against_reward(ctx, trainer_class, trainer_module, make_config) -> object:
    """Train with one of TRL's group trainers (GRPO, RLOO): the section's reward as one reward function per
    term with the spec's weights (`make_config(weights)` is the trainer's config), and, when beta > 0 in
    full training, runner's frozen reference (Context.reference_for)."""
    reward = load_reward(ctx.plan, ctx.settings.method.reward, ctx.tokenizer, next(ctx.model.parameters()).device)
    functions, tokenizers, weights = reward.trl_reward_functions()
    with ctx.reference_for(trainer_module):
        trainer = trainer_class(model=ctx.model, reward_funcs=functions, args=make_config(weights),
                                train_dataset=ctx.dataset("train"), eval_dataset=ctx.dataset("eval"),
                                processing_class=ctx.tokenizer, reward_processing_classes=tokenizers)
    return ctx.train_with(trainer)


@dataclass(frozen=True)
class Reward:
    """A declared reward, ready: its scorer (every term by name), the reward model of its `model` term
    (score head, fp32, frozen), and the functions of its `function` terms, by term name."""

    scorer: RewardScorer
    tokenizer: object
    model: object | None = None
    functions: dict[str, Callable] | None = None

    @property
    def named(self) -> list[tuple[str, RewardTerm]]:
        return self.scorer.named

    def scores(self, prompts: Sequence[str], completions: Sequence[Completion], rows: Sequence[dict],
               model_scores: list[float] | None = None) -> dict[str, list[float]]:
        """{term name: one score per completion} for every term. The reward model reads prompt + completion,
        unless the caller scored them with it already (`model_scores`: PPO reads its rollout's own tokens)."""
        scores = {}
        for name, term in self.named:
            if term.check is not None:
                scores[name] = self.scorer.score(term, completions, rows)
            elif term.function is not None:
                scores[name] = call_function(term.function, self.functions[name], list(prompts),
                                             [completion.text for completion in completions])
            else:
                scores[name] = model_scores if model_scores is not None else \
                    self.model_scores([p + c.text for p, c in zip(prompts, completions)])
        return scores

    @torch.no_grad()
    def model_scores(self, texts: list[str]) -> list[float]:
        """The reward model's score of each text, read at its last token (right padding), in batches."""
        device = next(self.model.parameters()).device
        found = []
        for start in range(0, len(texts), SCORE_BATCH):
            encoded = self.tokenizer(texts[start:start + SCORE_BATCH], return_tensors="pt", padding=True,
                                     padding_side="right", add_special_tokens=False).to(device)
            found += self.model(**encoded).logits[:, 0].float().tolist()
        return found

    def trl_reward_functions(self) -> tuple[list, list, list[float]]:
        """For TRL's GRPO and RLOO trainers: (reward functions, their tokenizers, their weights), one of each
        per term, in the spec's order. TRL names each function's metrics rewards/NAME/mean."""
        functions, tokenizers, weights = [], [], []
        for name, term in self.named:
            if term.model is not None:
                self.model.config.name_or_path = name  # TRL names a model's metrics after it
                functions.append(self.model)
                tokenizers.append(self.tokenizer)
            else:
                functions.append(self._trl_function(name, term))
                tokenizers.append(None)
            weights.append(term.weight)
        return functions, tokenizers, weights

    def _trl_function(self, name: str, term: RewardTerm) -> Callable:
        """A TRL reward function for one term: TRL passes the prompts, the completions, their token ids and
        every other column of the batch's rows as lists."""
        def score(prompts, completions, completion_ids=None, **columns):
            count = len(completions)
            if term.function is not None:
                return call_function(term.function, self.functions[name], list(prompts), list(completions))
            listed = {key: value for key, value in columns.items() if isinstance(value, list) and len(value) == count}
            rows = [{key: value[i] for key, value in listed.items()} for i in range(count)]
            tokens = [len(ids) for ids in completion_ids] if completion_ids is not None else [None] * count
            return self.scorer.score(term, [Completion(c, n) for c, n in zip(completions, tokens)], rows)

        score.__name__ = name
        return score


def load_reward(plan: Plan, reward: DeclaredReward, tokenizer, device: torch.device) -> Reward:
    """The spec's reward with its model loaded and its functions imported (this runs their code)."""
    try:
        scorer = RewardScorer(reward)
    except EngineMissing as error:
        raise RunnerError(str(error), "install it where jobs run, or remove the regex checks") from None
    model = None
    if reward.model is not None:
        model = loading.load_model(loading.location_of(plan, plan.inputs.reward_model), SCORE, torch.float32,
                                   pad_token_id=tokenizer.pad_token_id)
        model = model.requires_grad_(False).eval().to(device)
    functions = {name: load_function(term, plan.inputs.spec_folder) for name, term in scorer.named
                 if term.function is not None}
    return Reward(scorer, tokenizer, model, functions)


def call_function(written: str, function: Callable, prompts: list[str], completions: list[str]) -> list[float]:
    values = function(prompts, completions)
    if len(values) != len(completions):
        raise RunnerError(f"the reward function {written} returned {len(values)} scores for {len(completions)} "
                          "completions", "return one float per completion")
    return [float(value) for value in values]


def load_function(term: RewardTerm, spec_folder: Path) -> Callable:
    """`module:function`: a module file beside the spec (loaded from there, under a private name, so two
    specs' `rewards.py` never collide), else an installed module. This runs that code."""
    module_name, function_name = term.function.split(":")
    beside = term.function_file(spec_folder)
    if beside is not None:
        loader_spec = importlib.util.spec_from_file_location(f"runner_reward_{abs(hash(beside))}", beside)
        module = importlib.util.module_from_spec(loader_spec)
        loader_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(module_name)
    function = getattr(module, function_name, None)
    if not callable(function):
        raise RunnerError(f"{term.function}: {module_name} has no function {function_name}")
    return function
