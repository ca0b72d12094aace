"""PPO for language models (RLHF), after the N+ implementation details of RLHF with PPO (Huang et al., 2024)
and TRL's PPOTrainer, with the differences below said where they are made.

One iteration, top to bottom:

    rollout   sample responses to B prompts with the KV cache, stop at the stop token;
              recompute logprobs with a forward pass (so the first ratio is exactly 1),
              reference logprobs, values, and one score per response
    reward    per token: -kl_coef * KL(policy || reference); the score lands on the last
              real token s (not at s+1, TRL's off-by-one)
    GAE       advantages and returns; advantages whitened over valid tokens
    optimise  num_ppo_epochs passes over shuffled minibatches; clipped policy and value
              losses; one optimizer step per minibatch; the learning rate steps once
              per iteration

Masks are never derived from token ids: the query mask comes from the tokenizer's left
padding and the response mask from the first stop token, so a pad id equal to EOS (as
in SmolLM2) cannot hide the EOS the model must learn to emit.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch

from runner.errors import RunnerError
from runner.execute import trainable
from runner.execute.batches import shuffled_forever
from runner.execute.context import Context, Trained
from runner.execute.loop import lr_schedule, resume, save_checkpoint
from runner.execute.rewards import Reward, load_reward
from runner.execute.settings import TrainingSettings
from runner.execute.stopping import AgreedStop
from runner.methods.descriptors.ppo import DESCRIPTOR, PpoSection
from runner.methods.registry import CAUSAL_LM, Batching
from runner.rewards.scoring import Completion

# --- settings and the rollout record ---------------------------------------------------------------


@dataclass(frozen=True)
class PpoSettings:
    """The run's training settings and its ppo section, with PPO's batch arithmetic checked."""

    training: TrainingSettings
    ppo: PpoSection

    @classmethod
    def of(cls, ctx: Context) -> PpoSettings:
        settings = cls(ctx.settings.training, ctx.settings.method)
        settings.check(ctx.plan.trainable.mode)
        return settings

    def check(self, mode: str) -> None:
        """The descriptor's rules (the validator's and the planner's too): every division must be exact."""
        batching = Batching(mode, self.batch, self.micro_batch, self.training.devices)
        for finding in DESCRIPTOR.problems(self.ppo, batching):
            raise RunnerError(f"{'.'.join(finding.path)}: {finding.message}", finding.hint)

    @property
    def batch(self) -> int:
        """Rollout rows per iteration."""
        return self.training.batch_size

    @property
    def micro_batch(self) -> int:
        return self.training.micro_batch_size

    @property
    def iterations(self) -> int:
        return self.training.total_steps

    @property
    def mini_batch(self) -> int:
        return self.batch // self.ppo.num_mini_batches

    @property
    def micro_per_mini(self) -> int:
        return self.mini_batch // self.micro_batch


@dataclass(frozen=True)
class Rollout:
    """One iteration's responses and what PPO derives from them; per-token tensors are (rows, response
    length), masked to each response's tokens up to its stop token."""

    ids: torch.Tensor
    """Prompt and response tokens."""
    attention: torch.Tensor
    responses: torch.Tensor
    mask: torch.Tensor
    logp: torch.Tensor
    """The policy's log-probabilities of the response tokens, at sampling time."""
    values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    query_length: int
    scores: torch.Tensor
    """One score per response (the missing-stop penalty included)."""
    stats: dict[str, float]
    generation_s: float


# --- masked statistics, truncation, rewards, GAE, losses: the arithmetic of PPO -------------------

def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    mask = mask.to(values.dtype)
    if dim is None:
        return (values * mask).sum() / mask.sum().clamp(min=1)
    return (values * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    mean = masked_mean(values, mask)
    variance = masked_mean((values - mean) ** 2, mask)
    count = mask.sum()
    if unbiased:
        if count < 2:
            raise RunnerError("cannot whiten: fewer than two valid tokens", "use larger minibatches")
        variance = variance * count / (count - 1)
    return variance


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    mean, variance = masked_mean(values, mask), masked_var(values, mask)
    whitened = (values - mean) * torch.rsqrt(variance + 1e-8)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask


def truncate_at_stop(responses: torch.Tensor, stop_id: int, pad_id: int):
    """(responses with every token after the first stop set to pad, index s of the last real token,
    action mask M = t <= s, whether each row stopped)."""
    length = responses.shape[1]
    is_stop = responses == stop_id
    stopped = is_stop.any(dim=1)
    first = torch.where(stopped, is_stop.int().argmax(dim=1), torch.full_like(stopped, length - 1, dtype=torch.long))
    positions = torch.arange(length, device=responses.device).unsqueeze(0)
    mask = positions <= first.unsqueeze(1)
    return responses.masked_fill(~mask, pad_id), first, mask, stopped


def kl_per_token(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor, estimator: str) -> torch.Tensor:
    difference = logp - ref_logp
    kl = difference if estimator == "k1" else torch.exp(-difference) - 1 + difference
    return kl * mask


def token_rewards(kl: torch.Tensor, kl_coef: float, scores: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    rewards = -kl_coef * kl
    rewards[torch.arange(len(scores)), last] += scores
    return rewards


def advantages_and_returns(rewards, values, mask, gamma: float, lam: float):
    """GAE over valid tokens; values and rewards are 0 beyond each row's last token."""
    length = rewards.shape[1]
    advantages = torch.zeros_like(rewards)
    running = torch.zeros(rewards.shape[0], dtype=rewards.dtype, device=rewards.device)
    for t in reversed(range(length)):
        next_value = values[:, t + 1] * mask[:, t + 1] if t + 1 < length else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * running
        advantages[:, t] = running
    advantages = advantages * mask
    return advantages, advantages + values


def policy_loss(new_logp, old_logp, advantages, mask, cliprange: float):
    log_ratio = (new_logp - old_logp) * mask
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - cliprange, 1 + cliprange)
    loss = masked_mean(torch.max(unclipped, clipped), mask)
    stats = {"clipfrac": masked_mean((clipped > unclipped).float(), mask),
             "approxkl": 0.5 * masked_mean(log_ratio ** 2, mask), "ratio": masked_mean(ratio, mask),
             "ratio_var": masked_var(ratio, mask, unbiased=False)}
    return loss, stats


def value_loss(new_values, old_values, returns, mask, cliprange_value: float):
    clipped = old_values + torch.clamp(new_values - old_values, -cliprange_value, cliprange_value)
    unclipped_error, clipped_error = (new_values - returns) ** 2, (clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.max(unclipped_error, clipped_error), mask)
    return loss, {"clipfrac": masked_mean((clipped_error > unclipped_error).float(), mask)}


# --- forward passes -----------------------------------------------------------------------------

def positions(attention: torch.Tensor) -> torch.Tensor:
    """Position ids that ignore left padding (absolute-position models need them)."""
    return (attention.cumsum(dim=1) - 1).clamp(min=0)


def response_logprobs(model, ids, attention, query_length: int, responses, temperature: float):
    logits = model(input_ids=ids, attention_mask=attention, position_ids=positions(attention),
                   use_cache=False).logits[:, query_length - 1:-1].float() / temperature
    logp = torch.log_softmax(logits, dim=-1)
    chosen = logp.gather(-1, responses.unsqueeze(-1)).squeeze(-1)
    entropy = -(logp.exp() * logp).sum(-1)
    return chosen, entropy


def hidden_states(model, ids, attention):
    output = model(input_ids=ids, attention_mask=attention, position_ids=positions(attention),
                   output_hidden_states=True, use_cache=False)
    return output.hidden_states[-1]


class ValueFunction:
    """V(prefix) per token: a scalar head on a transformer's last hidden state.

    separate: a sequence-classification model (its `score` head), trained in full;
    shared: a second LoRA adapter ("value") on the policy's frozen base, with its own head.
    """

    def __init__(self, backbone, head: torch.nn.Module, adapter: str | None = None, policy=None):
        self.backbone, self.head, self.adapter, self.policy = backbone, head, adapter, policy

    def parameters(self):
        own = [] if self.adapter else [p for p in self.backbone.parameters() if p.requires_grad]
        return own + list(self.head.parameters())

    def __call__(self, ids, attention, query_length: int) -> torch.Tensor:
        if self.adapter:
            self.policy.set_adapter(self.adapter)
            _reenable_adapters(self.policy)
            try:
                hidden = hidden_states(self.policy, ids, attention)
            finally:
                self.policy.set_adapter("default")
                _reenable_adapters(self.policy)
        else:
            hidden = hidden_states(self.backbone, ids, attention)
        return self.head(hidden.to(self.head.weight.dtype)).squeeze(-1)[:, query_length - 1:-1]


def _reenable_adapters(model) -> None:
    """PEFT's set_adapter freezes the inactive adapter; both must keep learning, or the policy adapter silently stops training."""
    for name, parameter in model.named_parameters():
        if "lora_" in name:
            parameter.requires_grad_(True)


class Scorer:
    """One score per response: the sum of weight x score over the reward's terms (runner.execute.rewards). A
    reward model reads the rollout's own tokens, at the last real one."""

    def __init__(self, reward: Reward, tokenizer=None):
        self.reward, self.tokenizer = reward, tokenizer

    @torch.no_grad()
    def __call__(self, ids, attention, query_length: int, last, prompts: list[str], rows: list[dict], responses
                 ) -> tuple[torch.Tensor, dict[str, float]]:
        """(the total score of each response, each term's mean score)."""
        model_scores = None
        if self.reward.model is not None:
            model = self.reward.model
            backbone = getattr(model, model.base_model_prefix)
            hidden = backbone(input_ids=ids, attention_mask=attention, position_ids=positions(attention),
                              use_cache=False).last_hidden_state
            scores = model.score(hidden).squeeze(-1).float()
            model_scores = scores[torch.arange(len(last)), query_length + last].tolist()
        texts = [self.tokenizer.decode(row[: int(end) + 1], skip_special_tokens=True)
                 for row, end in zip(responses.tolist(), last)]
        completions = [Completion(text, int(end) + 1) for text, end in zip(texts, last)]
        per_term = self.reward.scores(prompts, completions, rows, model_scores)
        total = self.reward.scorer.total(per_term)
        means = {f"rewards/{name}/mean": sum(values) / len(values) for name, values in per_term.items()}
        return torch.tensor(total, device=ids.device), means


def disable_dropout(*models) -> None:
    for model in models:
        for module in model.modules() if model is not None else ():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0


# --- setup ----------------------------------------------------------------------------------------

def build(ctx: Context):
    """Policy, reference, value function, scorer and stop token, as the plan says."""
    plan, policy, tokenizer = ctx.plan, ctx.model, ctx.tokenizer
    lora = hasattr(policy, "peft_config")
    reward = load_reward(plan, ctx.settings.method.reward, tokenizer, _device(policy))
    scorer = Scorer(reward, tokenizer)

    reference = ctx.reference()
    value = _value_function(plan, ctx.settings.method, policy, reward.model, lora)
    disable_dropout(policy, value.backbone, value.head)
    stop_id = tokenizer.eos_token_id
    return reference, value, scorer, stop_id


def _value_function(plan, ppo: PpoSection, policy, reward_model, lora: bool) -> ValueFunction:
    hidden = policy.config.get_text_config().hidden_size
    head = torch.nn.Linear(hidden, 1, bias=False).to(_device(policy))
    if reward_model is not None:
        with torch.no_grad():
            head.weight.copy_(reward_model.score.weight.float())
    else:
        torch.nn.init.zeros_(head.weight)
    if ppo.value_model == "shared":
        from peft import LoraConfig

        config = copy.deepcopy(policy.peft_config["default"])
        policy.add_adapter("value", LoraConfig(**{k: v for k, v in config.to_dict().items()
                                                  if k in LoraConfig.__dataclass_fields__ and k != "modules_to_save"}))
        _reenable_adapters(policy)
        return ValueFunction(None, head, adapter="value", policy=policy)
    from runner.execute import loading

    if reward_model is not None:  # the value starts from the reward model (N+ implementation details)
        backbone = copy.deepcopy(getattr(reward_model, reward_model.base_model_prefix))
    elif not lora:  # the policy has not trained yet: its backbone is the base
        backbone = copy.deepcopy(getattr(policy, policy.base_model_prefix))
    else:  # a LoRA policy's backbone carries its adapters: start from the clean base weights
        base = loading.load_model(loading.location_of(plan), CAUSAL_LM, torch.float32)
        backbone = getattr(base, base.base_model_prefix)
    backbone.requires_grad_(True).train().to(_device(policy))
    return ValueFunction(backbone, head)


def _device(model) -> torch.device:
    return next(model.parameters()).device


# --- the loop --------------------------------------------------------------------------------------

def train(ctx: Context) -> Trained:
    # --- setup ---
    settings = PpoSettings.of(ctx)
    torch.manual_seed(settings.training.seed)
    policy, tokenizer = ctx.model, ctx.tokenizer
    reference, value, scorer, stop_id = build(ctx)
    examples = ctx.splits["train"].examples  # the prompt, and the columns the reward's checks read
    optimizer = trainable.optimizer(policy, ctx.plan.trainable.lora, settings.training.learning_rate,
                                    extra=value.parameters(), eps=1e-5)
    schedule = lr_schedule(settings.training, optimizer)
    start = resume(ctx, optimizer, schedule, **_checkpointed(policy, value))
    order = shuffled_forever(len(examples), settings.training.seed, skip=start * settings.batch)
    events, metrics, stopping = ctx.events, ctx.metrics, AgreedStop(ctx.stop, world=1)  # one process
    sample_every = max(1, settings.iterations // max(settings.ppo.num_sample_generations, 1))
    tokens_seen = 0
    began = time.monotonic()

    # --- train ---
    iteration = start
    for iteration in range(start + 1, settings.iterations + 1):
        rows = [examples[next(order)] for _ in range(settings.batch)]
        batch = [row["prompt"] for row in rows]
        timer = time.monotonic()
        rollout = rollout_batch(policy, reference, value, scorer, tokenizer, batch, rows, settings, stop_id)
        scoring_s = time.monotonic() - timer - rollout.generation_s
        timer = time.monotonic()
        stats = optimise(policy, value, optimizer, rollout, settings)
        schedule.step()
        training_s = time.monotonic() - timer
        tokens_seen += int(rollout.mask.sum())
        record = {"step": iteration, "episode": iteration * settings.batch, **rollout.stats, **stats,
                  "lr": schedule.get_last_lr()[0], "time/generation_s": round(rollout.generation_s, 3),
                  "time/scoring_s": round(scoring_s, 3), "time/training_s": round(training_s, 3),
                  "eps": round(iteration * settings.batch / (time.monotonic() - began), 3)}
        metrics.write(record)
        events.progress(iteration, settings.iterations, record["objective/scores"], None, began)
        ctx.evaluate(policy, iteration)
        if settings.ppo.num_sample_generations and iteration % sample_every == 0:
            events.event("ppo_samples", step=iteration, samples=_samples(tokenizer, batch, rollout)[:2])
        stopped = stopping.after_step()
        if iteration % settings.training.checkpoint_every == 0 or stopped or iteration == settings.iterations:
            save_checkpoint(ctx, iteration, optimizer, schedule, **_checkpointed(policy, value))
        if stopped:
            break
    return Trained(policy, iteration, tokens_seen)


@torch.no_grad()
def rollout_batch(policy, reference, value, scorer, tokenizer, prompts: list[str], rows: list[dict],
                  settings: PpoSettings, stop_id: int) -> Rollout:
    from transformers import GenerationConfig

    device = _device(policy)
    pad_id = tokenizer.pad_token_id
    encoded = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    queries, query_mask = encoded["input_ids"].to(device), encoded["attention_mask"].to(device)
    query_length = queries.shape[1]
    # An explicit config: the model's own generation_config must not change the sampler (a checkpoint's
    # generation_config.json may set top_k/top_p, and sampling from a truncated distribution biases the ratio).
    config = GenerationConfig(do_sample=True, temperature=settings.ppo.temperature, top_k=0, top_p=1.0,
                              max_new_tokens=settings.ppo.response_length, eos_token_id=stop_id, pad_token_id=pad_id)
    started = time.monotonic()
    policy.eval()
    generated = policy.generate(input_ids=queries, attention_mask=query_mask, generation_config=config)
    generation_s = time.monotonic() - started
    responses = generated[:, query_length:]
    if responses.shape[1] < settings.ppo.response_length:
        padding = responses.new_full((responses.shape[0], settings.ppo.response_length - responses.shape[1]), pad_id)
        responses = torch.cat([responses, padding], dim=1)
    responses, last, mask, stopped = truncate_at_stop(responses, stop_id, pad_id)
    ids = torch.cat([queries, responses], dim=1)
    attention = torch.cat([query_mask, mask.long()], dim=1)

    logp, entropy = _in_chunks(lambda i: response_logprobs(policy, ids[i], attention[i], query_length,
                                                           responses[i], settings.ppo.temperature), settings)
    if reference is None:
        with policy.disable_adapter():
            ref_logp, _ = _in_chunks(lambda i: response_logprobs(policy, ids[i], attention[i], query_length,
                                                                 responses[i], settings.ppo.temperature), settings)
    else:
        ref_logp, _ = _in_chunks(lambda i: response_logprobs(reference, ids[i], attention[i], query_length,
                                                             responses[i], settings.ppo.temperature), settings)
    values = torch.cat([value(ids[i], attention[i], query_length) for i in _chunks(len(ids), settings)]).float()
    scores, term_means = scorer(ids, attention, query_length, last, prompts, rows, responses)
    if settings.ppo.missing_eos_penalty is not None:
        scores = scores - settings.ppo.missing_eos_penalty * (~stopped).float()
    logp, ref_logp, values = logp * mask, ref_logp * mask, values * mask

    kl = kl_per_token(logp, ref_logp, mask, settings.ppo.kl_estimator)
    rewards = token_rewards(kl, settings.ppo.kl_coef, scores, last)
    if settings.ppo.whiten_rewards:
        rewards = masked_whiten(rewards, mask, shift_mean=False)
    advantages, returns = advantages_and_returns(rewards, values, mask, settings.ppo.gamma, settings.ppo.lam)
    advantages = masked_whiten(advantages, mask)
    non_score = (-settings.ppo.kl_coef * kl).sum(1)
    stats = {
        "objective/kl": kl.sum(1).mean().item(), "objective/entropy": (-logp).sum(1).mean().item(),
        "objective/non_score_reward": non_score.mean().item(), "objective/scores": scores.mean().item(),
        "objective/rlhf_reward": (scores + non_score).mean().item(),
        "policy/entropy_avg": masked_mean(entropy, mask).item(),
        "val/num_eos_tokens": int(stopped.sum()), "val/eos_rate": stopped.float().mean().item(),
        "val/response_length": mask.sum(1).float().mean().item(), **term_means,
    }
    return Rollout(ids=ids, attention=attention, responses=responses, mask=mask, logp=logp, values=values,
                   advantages=advantages, returns=returns, query_length=query_length, scores=scores, stats=stats,
                   generation_s=generation_s)


def _chunks(size: int, settings: PpoSettings):
    step = settings.micro_batch
    return [slice(start, start + step) for start in range(0, size, step)]


def _in_chunks(forward, settings: PpoSettings):
    size = settings.batch
    parts = [forward(index) for index in _chunks(size, settings)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def optimise(policy, value, optimizer, rollout: Rollout, settings: PpoSettings) -> dict:
    policy.train()
    query_length, mask = rollout.query_length, rollout.mask
    totals: dict[str, list[float]] = {}
    for _ in range(settings.ppo.num_ppo_epochs):
        order = torch.randperm(settings.batch)
        for start in range(0, settings.batch, settings.mini_batch):
            minibatch = order[start:start + settings.mini_batch]
            optimizer.zero_grad(set_to_none=True)
            for micro in minibatch.split(settings.micro_batch):
                m = mask[micro]
                new_logp, entropy = response_logprobs(policy, rollout.ids[micro], rollout.attention[micro],
                                                      query_length, rollout.responses[micro],
                                                      settings.ppo.temperature)
                pg_loss, pg = policy_loss(new_logp, rollout.logp[micro], rollout.advantages[micro], m,
                                          settings.ppo.cliprange)
                (pg_loss / settings.micro_per_mini).backward()  # backward before the value adapter switches
                new_values = value(rollout.ids[micro], rollout.attention[micro], query_length).float()
                vf_loss, vf = value_loss(new_values, rollout.values[micro], rollout.returns[micro], m,
                                         settings.ppo.cliprange_value)
                (settings.ppo.vf_coef * vf_loss / settings.micro_per_mini).backward()
                for key, number in (("loss/policy_avg", pg_loss), ("loss/value_avg", vf_loss),
                                    ("policy/clipfrac_avg", pg["clipfrac"]), ("policy/approxkl_avg", pg["approxkl"]),
                                    ("val/ratio", pg["ratio"]), ("val/ratio_var", pg["ratio_var"]),
                                    ("val/clipfrac_avg", vf["clipfrac"])):
                    totals.setdefault(key, []).append(float(number.detach()))
            if settings.training.max_grad_norm:
                norm = torch.nn.utils.clip_grad_norm_(
                    [p for group in optimizer.param_groups for p in group["params"]], settings.training.max_grad_norm)
                totals.setdefault("grad_norm", []).append(float(norm))
            optimizer.step()
    return {key: sum(values) / len(values) for key, values in totals.items()}


# --- checkpoints, samples ------------------------------------------------------------

def _checkpointed(policy, value: ValueFunction) -> dict:
    """What a PPO checkpoint holds besides the optimizer and schedule, by name."""
    return {"policy": policy, "value_head": value.head, "value_backbone": value.backbone}


def _samples(tokenizer, prompts: list[str], rollout: Rollout) -> list[dict]:
    responses, mask, scores = rollout.responses, rollout.mask, rollout.scores
    return [{"prompt": prompt, "response": tokenizer.decode(row[m], skip_special_tokens=True),
             "score": round(float(score), 4)} for prompt, row, m, score in zip(prompts, responses, mask, scores)]

