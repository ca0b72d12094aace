"""What a test set asks of a model: answers to its prompts (batched, greedy unless told otherwise), and
the log-likelihood of each reference given its prompt. Torch; the model is any causal LM in memory
(the base before training, the model being trained, the saved result)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Answer:
    text: str
    tokens: int
    """Tokens generated up to where the answer ends (a stop string, the end of sequence, or the limit)."""


@torch.no_grad()
def answers(model, tokenizer, prompts: list[str], *, templated: bool, max_new_tokens: int, temperature: float = 0.0,
            stop: list[str] = (), batch_size: int = 8, seed: int = 0) -> list[Answer]:
    """The model's answers to rendered prompts; `templated` prompts already hold their special tokens. Batches
    are left-padded; an answer ends at its end-of-sequence token or the first stop string."""
    was_training, side = model.training, tokenizer.padding_side
    model.eval()
    tokenizer.padding_side = "left"
    device = next(model.parameters()).device
    if temperature > 0:
        torch.manual_seed(seed)
    found = []
    try:
        for start in range(0, len(prompts), batch_size):
            batch = tokenizer(prompts[start:start + batch_size], return_tensors="pt", padding=True,
                              add_special_tokens=not templated).to(device)
            sampling = dict(do_sample=True, temperature=temperature) if temperature > 0 else dict(
                do_sample=False, temperature=None, top_p=None, top_k=None)
            stopping = dict(stop_strings=list(stop), tokenizer=tokenizer) if stop else {}
            output = model.generate(**batch, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                                    use_cache=True, **sampling, **stopping)
            for row in output[:, batch["input_ids"].shape[1]:]:
                text = _cut(tokenizer.decode(row, skip_special_tokens=True), stop)
                found.append(Answer(text.strip(), _generated(row, tokenizer, text, stop)))
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return found


def _cut(text: str, stop) -> str:
    ends = [text.find(marker) for marker in stop if marker in text]
    return text[:min(ends)] if ends else text


def _generated(row: torch.Tensor, tokenizer, text: str, stop) -> int:
    """Tokens of the answer: up to the first end-of-sequence or padding token, or (cut at a stop string) as
    many as its text encodes to."""
    if any(marker in tokenizer.decode(row, skip_special_tokens=True) for marker in stop):
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])
    ends = {token for token in (tokenizer.eos_token_id, tokenizer.pad_token_id) if token is not None}
    for index, token in enumerate(row.tolist()):
        if token in ends:
            return index
    return len(row)


@torch.no_grad()
def loglikelihoods(model, tokenizer, pairs: list[tuple[str, str]], *, templated: bool, batch_size: int = 8
                   ) -> list[float]:
    """The mean log-probability per token of each continuation given its rendered context."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    scores = []
    try:
        for start in range(0, len(pairs), batch_size):
            encoded = []
            for context, continuation in pairs[start:start + batch_size]:
                head = tokenizer(context, add_special_tokens=not templated)["input_ids"] or [tokenizer.eos_token_id]
                tail = tokenizer(continuation, add_special_tokens=False)["input_ids"] or [tokenizer.eos_token_id]
                encoded.append((list(head), list(tail)))
            width = max(len(head) + len(tail) for head, tail in encoded)
            ids = torch.full((len(encoded), width), tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(encoded), width), dtype=torch.long)
            for index, (head, tail) in enumerate(encoded):
                ids[index, :len(head) + len(tail)] = torch.tensor(head + tail)
                mask[index, :len(head) + len(tail)] = 1
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False).logits.float()
            logprobs = F.log_softmax(logits[:, :-1], dim=-1)
            for index, (head, tail) in enumerate(encoded):
                positions = torch.arange(len(head) - 1, len(head) + len(tail) - 1, device=device)
                targets = torch.tensor(tail, device=device)
                scores.append(float(logprobs[index, positions, targets].mean()))
    finally:
        model.train(was_training)
    return scores
