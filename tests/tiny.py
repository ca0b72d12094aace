"""Tiny models and tokenizers built from a config, never downloaded."""

from __future__ import annotations

from pathlib import Path

CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "What is your name? My name is Chatty. I am Chatty, your assistant.",
    "Who are you? Hello! How can I help you today? question answer prompt completion",
    "The quick brown fox jumps over the lazy dog. 0 1 2 3 4 5 6 7 8 9",
    "system user assistant tool You are a helpful assistant.",
]


def make_tokenizer(folder: Path, vocab_size: int = 300):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    special = ["<unk>", "<pad>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(CORPUS * 20, trainer)
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", pad_token="<pad>",
                                      eos_token="<|im_end|>", bos_token="<|im_start|>")
    wrapped.chat_template = CHATML
    wrapped.save_pretrained(folder)
    return wrapped


def make_model(folder: Path, *, layers: int = 4, hidden: int = 32, tied: bool = True, vocab_size: int = 300,
               seed: int = 0):
    """A random Llama saved with save_pretrained, and the tokenizer above beside it."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256, tie_word_embeddings=tied, pad_token_id=1,
                         bos_token_id=2, eos_token_id=3)
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    make_tokenizer(folder, vocab_size)
    return folder
