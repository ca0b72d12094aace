"""runner's PPO, against the test list of shared/reference/ppo-design.md, on tiny random models."""

import copy
from types import SimpleNamespace

import pytest
import torch

from runner.errors import RunnerError
from runner.execute.settings import TrainingSettings
from runner.methods import ppo
from runner.methods.descriptors.ppo import PpoSection
from runner.methods.ppo import (PpoSettings, ValueFunction, advantages_and_returns, kl_per_token, masked_mean,
                                masked_whiten, policy_loss, response_logprobs, rollout_batch, token_rewards,
                                truncate_at_stop, value_loss)
from runner.plan.models import Resolved

B, T, PAD, STOP = 32, 8, 0, 3


def settings(batch=B, micro_batch=8, learning_rate=1e-3, **changes):
    training = TrainingSettings(
        batch_size=batch, micro_batch_size=micro_batch, gradient_accumulation=1, total_steps=1, warmup_steps=0,
        eval_every=None, checkpoint_every=100, keep_checkpoints=1, keep_checkpoints_after_success=False,
        learning_rate=learning_rate, lr_scheduler="linear",
        weight_decay=0.0, max_grad_norm=1.0, max_length=64, seed=0, log_every=1, device="cpu", devices=1,
        precision="fp32", gradient_checkpointing=False, strategy="ddp", offload=False)
    section = dict(reward={"function": "scoring:score"}, kl_coef=0.05, num_ppo_epochs=1, response_length=T,
                   temperature=0.7, num_sample_generations=0)
    return PpoSettings(training, PpoSection.model_validate({**section, **changes}))


def llama(vocab=300, seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         pad_token_id=1, bos_token_id=2, eos_token_id=3)
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from tests.tiny import make_tokenizer

    return make_tokenizer(tmp_path_factory.mktemp("tokenizer"))


def separate_value(seed=1):
    model = llama(seed=seed)
    ppo.disable_dropout(model)
    return ValueFunction(model.model, torch.nn.Linear(32, 1, bias=False))


class TokenFiveScorer:
    """Reward: the share of response tokens equal to token 5 (dense enough to learn from)."""

    def __call__(self, ids, attention, query_length, last, prompts, rows, responses):
        mask = torch.arange(responses.shape[1]).unsqueeze(0) <= last.unsqueeze(1)
        return ((responses == 5) & mask).float().sum(1) / mask.float().sum(1), {}


PROMPTS = [f"What is your name? {i}" for i in range(B)]


def rows_of(prompts):
    return [{"prompt": prompt} for prompt in prompts]


def test_kl_is_exactly_zero_at_the_first_rollout(tokenizer):
    policy = llama()
    rollout = rollout_batch(policy, copy.deepcopy(policy), separate_value(), TokenFiveScorer(), tokenizer, PROMPTS,
                            rows_of(PROMPTS), settings(), STOP)
    assert rollout.stats["objective/kl"] == 0.0 and rollout.stats["objective/non_score_reward"] == 0.0


def test_first_minibatch_has_ratio_one_and_nothing_clipped(tokenizer):
    policy, value = llama(), separate_value()
    config = settings()
    rollout = rollout_batch(policy, copy.deepcopy(policy), value, TokenFiveScorer(), tokenizer, PROMPTS,
                            rows_of(PROMPTS), config, STOP)
    policy.train()
    new_logp, _ = response_logprobs(policy, rollout.ids, rollout.attention, rollout.query_length,
                                    rollout.responses, config.ppo.temperature)
    _, stats = policy_loss(new_logp, rollout.logp, rollout.advantages, rollout.mask, config.ppo.cliprange)
    new_values = value(rollout.ids, rollout.attention, rollout.query_length)
    _, value_stats = value_loss(new_values, rollout.values, rollout.returns, rollout.mask,
                                config.ppo.cliprange_value)
    assert (stats["ratio"] - 1).abs().item() == 0.0 and stats["clipfrac"].item() == 0.0
    assert stats["approxkl"].item() == 0.0 and value_stats["clipfrac"].item() == 0.0


def test_left_padding_changes_nothing_with_absolute_positions():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=4, n_positions=64)).eval()
    ppo.disable_dropout(model)
    query, response = torch.tensor([[7, 8, 9, 10]]), torch.tensor([[11, 12, 13]])
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), query], dim=1)
    results = []
    for q, q_mask in ((query, torch.ones_like(query)), (padded, torch.tensor([[0, 0, 0, 1, 1, 1, 1]]))):
        ids = torch.cat([q, response], dim=1)
        attention = torch.cat([q_mask, torch.ones_like(response)], dim=1)
        logp, _ = response_logprobs(model, ids, attention, q.shape[1], response, 1.0)
        results.append(logp)
    assert torch.allclose(results[0], results[1], atol=1e-6)


def test_logprobs_of_the_sampler_and_the_forward_pass_agree(tokenizer):
    from transformers import GenerationConfig

    policy = llama()
    encoded = tokenizer(PROMPTS[:4], return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    # No min_new_tokens: it masks EOS out of the sampler and shifts its logprobs (pitfall 5).
    config = GenerationConfig(do_sample=True, temperature=0.7, top_k=0, top_p=1.0, max_new_tokens=T,
                              eos_token_id=STOP, pad_token_id=1, output_scores=True, return_dict_in_generate=True)
    out = policy.generate(**encoded, generation_config=config)
    length = encoded["input_ids"].shape[1]
    responses, _, mask, _ = truncate_at_stop(out.sequences[:, length:], STOP, PAD)
    sampled = torch.stack([torch.log_softmax(score, -1) for score in out.scores], 1).gather(
        -1, responses.unsqueeze(-1)).squeeze(-1)
    attention = torch.cat([encoded["attention_mask"], mask.long()], dim=1)
    forward, _ = response_logprobs(policy, torch.cat([encoded["input_ids"], responses], 1), attention, length,
                                   responses, 0.7)
    assert ((sampled - forward) * mask).abs().max().item() < 1e-4


def test_gae_with_zero_values_gives_the_score():
    scores = torch.tensor([1.0, -2.0])
    last = torch.tensor([2, 4])
    mask = torch.arange(6).unsqueeze(0) <= last.unsqueeze(1)
    rewards = token_rewards(torch.zeros(2, 6), 0.0, scores, last)
    advantages, returns = advantages_and_returns(rewards, torch.zeros(2, 6), mask, 1.0, 1.0)
    assert advantages[0].tolist() == [1, 1, 1, 0, 0, 0] and advantages[1].tolist() == [-2] * 5 + [0]
    assert torch.equal(returns, advantages)


def test_gae_matches_its_closed_form():
    torch.manual_seed(0)
    rewards, values = torch.randn(3, 5), torch.randn(3, 5)
    mask = torch.ones(3, 5, dtype=torch.bool)
    gamma, lam = 0.9, 0.95
    advantages, _ = advantages_and_returns(rewards, values, mask, gamma, lam)
    deltas = rewards + gamma * torch.cat([values[:, 1:], torch.zeros(3, 1)], 1) - values
    expected = torch.stack([sum((gamma * lam) ** (k - t) * deltas[:, k] for k in range(t, 5)) for t in range(5)], 1)
    assert torch.allclose(advantages, expected, atol=1e-5)


@pytest.mark.parametrize("row, last, stopped", [
    ([STOP, 9, 9, 9], 0, True),       # stop first
    ([9, STOP, 9, 9], 1, True),       # in the middle
    ([9, 9, 9, STOP], 3, True),       # last
    ([9, 9, 9, 9], 3, False),         # absent
    ([9, STOP, STOP, 9], 1, True),    # repeated
])
def test_truncation_table(row, last, stopped):
    responses, s, mask, did_stop = truncate_at_stop(torch.tensor([row]), STOP, PAD)
    assert s.item() == last and did_stop.item() is stopped and mask[0].tolist() == [t <= last for t in range(4)]
    assert responses[0, last + 1:].eq(PAD).all()


def test_missing_stop_penalty_hits_only_responses_without_a_stop(tokenizer):
    class Zero(TokenFiveScorer):
        def __call__(self, ids, *args):
            return torch.zeros(ids.shape[0]), {}

    policy = llama()
    rollout = rollout_batch(policy, copy.deepcopy(policy), separate_value(), Zero(), tokenizer, PROMPTS,
                            rows_of(PROMPTS), settings(missing_eos_penalty=1.0), STOP)
    stopped = rollout.responses.eq(STOP).any(1)
    assert torch.equal(rollout.scores, -1.0 * (~stopped).float())


def test_masked_whitening():
    torch.manual_seed(0)
    values = torch.randn(4, 6) * 3 + 5
    mask = torch.tensor([[1, 1, 1, 0, 0, 0]] * 4, dtype=torch.bool)
    whitened = masked_whiten(values, mask)
    assert abs(masked_mean(whitened, mask).item()) < 1e-5
    assert abs(whitened[mask].var().item() - 1) < 1e-4 and whitened[~mask].eq(0).all()


def test_policy_loss_inside_and_outside_the_clip_band():
    mask = torch.ones(1, 1, dtype=torch.bool)
    advantage = torch.tensor([[2.0]])
    old = torch.zeros(1, 1)
    outside = torch.tensor([[0.5]], requires_grad=True)  # ratio e^0.5 = 1.65 > 1.2
    loss, stats = policy_loss(outside, old, advantage, mask, 0.2)
    loss.backward()
    assert outside.grad.item() == 0.0 and stats["clipfrac"].item() == 1.0
    inside = torch.tensor([[0.1]], requires_grad=True)
    loss, stats = policy_loss(inside, old, advantage, mask, 0.2)
    assert torch.isclose(loss, -2.0 * torch.exp(torch.tensor(0.1))) and stats["clipfrac"].item() == 0.0


def test_value_loss_clipping():
    mask = torch.ones(1, 1, dtype=torch.bool)
    old, returns = torch.zeros(1, 1), torch.tensor([[1.0]])
    far = torch.tensor([[0.5]], requires_grad=True)  # moved 0.5 > 0.2 towards the return: clipped error is larger
    loss, stats = value_loss(far, old, returns, mask, 0.2)
    loss.backward()
    assert stats["clipfrac"].item() == 1.0 and far.grad.item() == 0.0
    near = torch.tensor([[0.1]])
    loss, stats = value_loss(near, old, returns, mask, 0.2)
    assert torch.isclose(loss, torch.tensor(0.5 * 0.81)) and stats["clipfrac"].item() == 0.0


def test_kl_estimators():
    logp, ref = torch.tensor([[-1.0, -2.0]]), torch.tensor([[-1.5, -1.0]])
    mask = torch.tensor([[True, False]])
    assert kl_per_token(logp, ref, mask, "k1").tolist() == [[0.5, 0.0]]
    k3 = kl_per_token(logp, ref, mask, "k3")
    assert k3[0, 0].item() == pytest.approx(torch.exp(torch.tensor(-0.5)).item() - 1 + 0.5) and k3[0, 1] == 0


def test_policy_learns_a_synthetic_reward(tokenizer):
    torch.manual_seed(0)
    policy, value = llama(seed=0), separate_value()
    reference = copy.deepcopy(policy)
    config = settings(batch=16, micro_batch=4, num_ppo_epochs=4, num_mini_batches=4, learning_rate=1e-3,
                      kl_coef=0.01, temperature=1.0)
    optimizer = torch.optim.AdamW([*policy.parameters(), *value.parameters()], lr=config.training.learning_rate,
                                  eps=1e-5)
    ppo.disable_dropout(policy)
    scores = []
    for iteration in range(20):
        rollout = rollout_batch(policy, reference, value, TokenFiveScorer(), tokenizer, PROMPTS[:16],
                                rows_of(PROMPTS[:16]), config, STOP)
        ppo.optimise(policy, value, optimizer, rollout, config)
        scores.append(rollout.stats["objective/scores"])
    first, last = sum(scores[:5]) / 5, sum(scores[-5:]) / 5
    assert last > 2 * first, scores


def lora_policy(targets=("q_proj", "v_proj")):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(llama(), LoraConfig(r=4, lora_alpha=8, target_modules=list(targets), lora_dropout=0.0))
    ppo.disable_dropout(model)
    return model


def test_lora_keeps_the_base_and_the_reference_is_the_base(tokenizer):
    policy = lora_policy()
    base = {name: p.detach().clone() for name, p in policy.named_parameters() if "lora_" not in name}
    lora_b = {name: p.detach().clone() for name, p in policy.named_parameters() if "lora_B" in name}
    config = settings(batch=8, micro_batch=4, num_ppo_epochs=2)
    value = separate_value()
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad] + value.parameters(), lr=1e-2)
    rollout = rollout_batch(policy, None, value, TokenFiveScorer(), tokenizer, PROMPTS[:8], rows_of(PROMPTS[:8]),
                            config, STOP)
    ppo.optimise(policy, value, optimizer, rollout, config)
    after = dict(policy.named_parameters())
    assert all(torch.equal(after[name], tensor) for name, tensor in base.items())
    assert any(not torch.equal(after[name], tensor) for name, tensor in lora_b.items())
    with policy.disable_adapter():
        disabled, _ = response_logprobs(policy, rollout.ids, rollout.attention, rollout.query_length,
                                        rollout.responses, config.ppo.temperature)
    plain = lora_policy().base_model.model  # the same random base, no adapter
    direct, _ = response_logprobs(plain, rollout.ids, rollout.attention, rollout.query_length,
                                  rollout.responses, config.ppo.temperature)
    assert torch.allclose(disabled, direct, atol=1e-6)


def test_policy_and_value_adapters_both_get_gradients(tokenizer):
    from peft import LoraConfig

    policy = lora_policy()
    policy.add_adapter("value", LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                           lora_dropout=0.0))
    value = ValueFunction(None, torch.nn.Linear(32, 1, bias=False), adapter="value", policy=policy)
    ids = torch.randint(4, 300, (2, 6))
    attention = torch.ones_like(ids)
    policy_logp, _ = response_logprobs(policy, ids, attention, 3, ids[:, 3:], 1.0)
    (policy_logp.sum() + value(ids, attention, 3).sum()).backward()
    for adapter in ("default", "value"):
        grads = [p.grad for name, p in policy.named_parameters() if f"lora_B.{adapter}" in name]
        assert grads and all(g is not None and g.abs().sum() > 0 for g in grads), adapter


def test_batch_arithmetic():
    with pytest.raises(RunnerError, match="does not divide the batch"):
        settings(batch=10, num_mini_batches=4).check("full")
    with pytest.raises(RunnerError, match="does not divide the minibatch"):
        settings(batch=16, num_mini_batches=2, micro_batch=3).check("full")
    with pytest.raises(RunnerError, match="minibatches of 8"):
        settings(batch=8, num_mini_batches=2, micro_batch=4, whiten_rewards=True).check("full")
    with pytest.raises(RunnerError, match="second LoRA adapter"):
        settings(value_model="shared").check("full")
    assert settings(batch=16, num_mini_batches=4, micro_batch=2).micro_per_mini == 2


def test_entropy_is_never_negative_on_padded_batches(tokenizer):
    policy = llama()
    prompts = ["Hi", "What is your name? Tell me, please, what it is."] * 4
    rollout = rollout_batch(policy, copy.deepcopy(policy), separate_value(), TokenFiveScorer(), tokenizer, prompts,
                            rows_of(prompts), settings(batch=8, micro_batch=4), STOP)
    assert rollout.stats["objective/entropy"] >= 0 and rollout.stats["policy/entropy_avg"] >= 0


def test_the_saved_policy_reloads_with_identical_logits(tmp_path):
    from transformers import AutoModelForCausalLM

    from runner.execute.save import save_final

    policy, tokenizer_stub = llama(), SimpleNamespace(save_pretrained=lambda folder: None)
    save_full = SimpleNamespace(outputs=SimpleNamespace(save=Resolved(value="full", rule="spec")))
    plan = SimpleNamespace(settings=save_full, inputs=None)
    run = SimpleNamespace(model=tmp_path / "model", adapter=tmp_path / "adapter")
    folder = save_final(policy, tokenizer_stub, plan, run)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "generation_config.json", "model.safetensors"]
    reloaded = AutoModelForCausalLM.from_pretrained(folder).eval()
    ids = torch.randint(4, 300, (2, 6))
    assert torch.equal(policy(ids).logits, reloaded(ids).logits)
