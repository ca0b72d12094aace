"""Rows to tokens and loss masks: the one encoder the planner previews and the executor trains on.

A row is rendered to text (through the model's chat template when there is one), the
characters the loss covers are marked, and the tokenizer's offsets map those characters
to tokens. Working on characters keeps it exact for any template: a turn's span is found
by rendering the conversation up to it, which must be a prefix of the whole.

OpenAI semantics for chat rows: assistant turns are trained, except those with weight 0;
system, user and tool turns never are (unless `loss_on: all`).
"""

from __future__ import annotations

from dataclasses import dataclass

from runner import timelimit
from runner.errors import RunnerError
from runner.formats import RowError

TEMPLATE_SECONDS = 5.0
"""One row's rendering through the model's chat template, at most."""
Message = dict
Span = tuple[int, int]


@dataclass
class Encoded:
    input_ids: list[int]
    trained: list[bool]
    """Per token: does the loss cover it (is it a label)?"""
    text: str
    offsets: list[tuple[int, int]]
    """Per token: its characters in `text` (prefix tokens such as BOS have (0, 0))."""
    truncated: bool

    @property
    def trained_tokens(self) -> int:
        return sum(self.trained)

    def labels(self, ignore_index: int = -100) -> list[int]:
        return [token if trained else ignore_index for token, trained in zip(self.input_ids, self.trained)]


def _content(message: Message) -> str:
    content = message.get("content")
    if isinstance(content, list):
        return "".join(part["text"] for part in content)
    return content or ""


def _plain(message: Message) -> Message:
    """A message as chat templates expect it: string content, no `weight`."""
    clean = {key: value for key, value in message.items() if key != "weight"}
    clean["content"] = _content(message)
    return clean


class RowEncoder:
    """Encodes rows of one dataset the same way in the planner and the executor."""

    def __init__(self, tokenizer, *, use_chat_template: bool, loss_on: str, max_length: int | None):
        if use_chat_template and not getattr(tokenizer, "chat_template", None):
            raise ValueError("the tokenizer has no chat template")
        self.tokenizer = tokenizer
        self.use_chat_template = use_chat_template
        self.loss_on = loss_on
        self.max_length = max_length
        self.prefix_ids = _added_prefix(tokenizer)

    # --- SFT ---------------------------------------------------------------------------------

    def encode_sft(self, row: dict, format_name: str) -> Encoded:
        text, spans, templated = self._sft_text(row, format_name)
        if self.loss_on == "all":
            spans = [(0, len(text))]
        return self._encode(text, spans, templated)

    def _sft_text(self, row: dict, format_name: str) -> tuple[str, list[Span], bool]:
        eos = self.tokenizer.eos_token or ""
        if format_name == "text":
            text = row["text"] + eos
            return text, [(0, len(text))], False
        if format_name == "prompt_completion":
            prompt, completion = row["prompt"], row["completion"]
            if isinstance(prompt, list) or isinstance(completion, list):
                messages = [*prompt, *completion]
                flags = [False] * len(prompt) + [m["role"] == "assistant" for m in completion]
                return (*self._chat(messages, flags), True)
            if self.use_chat_template:
                messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
                return (*self._chat(messages, [False, True]), True)
            text = prompt + completion + eos
            return text, [(len(prompt), len(text))], False
        if format_name == "messages":
            messages = row["messages"]
            flags = [m["role"] == "assistant" and m.get("weight", 1) != 0 for m in messages]
            return (*self._chat(messages, flags), True)
        raise RowError(f"{format_name} rows are not supervised fine-tuning data")

    def _chat(self, messages: list[Message], trained: list[bool]) -> tuple[str, list[Span]]:
        if not getattr(self.tokenizer, "chat_template", None):
            raise RowError("conversational rows need a tokenizer with a chat template")
        messages = [_plain(m) for m in messages]
        full = self._render(messages, generation_prompt=False)
        spans = []
        for index, is_trained in enumerate(trained):
            if not is_trained:
                continue
            start = self._render(messages[:index], generation_prompt=True) if index else ""
            end = self._render(messages[: index + 1], generation_prompt=False)
            if not (full.startswith(start) and full.startswith(end) and len(start) <= len(end)):
                raise RowError("the chat template renders earlier turns differently once later turns follow, "
                               "so the assistant turns cannot be located")
            spans.append((len(start), len(end)))
        return full, spans

    def _render(self, messages: list[Message], *, generation_prompt: bool) -> str:
        try:
            with timelimit.limited(TEMPLATE_SECONDS):
                return self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                          add_generation_prompt=generation_prompt)
        except timelimit.OverTime:
            raise RunnerError(f"the model's chat template took more than {TEMPLATE_SECONDS:g} s to render one row "
                              "(templates render in milliseconds)",
                              "check the template's loops (tokenizer_config.json or chat_template.jinja), or set "
                              "data.chat_template: false") from None
        except Exception as error:  # templates raise anything (jinja errors, their own exceptions)
            raise RowError(f"the chat template failed on this row: {error}") from None

    def _encode(self, text: str, spans: list[Span], templated: bool) -> Encoded:
        encoding = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = list(encoding["input_ids"]), [tuple(o) for o in encoding["offset_mapping"]]
        trained = [any(start <= begin < end for start, end in spans) for begin, _ in offsets]
        if not templated and self.prefix_ids:
            ids = self.prefix_ids + ids
            offsets = [(0, 0)] * len(self.prefix_ids) + offsets
            trained = [False] * len(self.prefix_ids) + trained
        truncated = self.max_length is not None and len(ids) > self.max_length
        if truncated:
            ids, offsets, trained = ids[: self.max_length], offsets[: self.max_length], trained[: self.max_length]
        if not any(trained):
            reason = f"no trained token left after truncation to {self.max_length} tokens" if truncated \
                else "no token is trained (empty completion?)"
            raise RowError(reason)
        return Encoded(ids, trained, text, offsets, truncated)

    # --- prompts (RL), preference pairs and unpaired answers --------------------------------------

    def prompt_text(self, row: dict, format_name: str) -> str:
        """The prompt a policy answers: rendered with the generation prompt when chat is used."""
        if format_name == "messages":
            messages = row["messages"]
            cut = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=len(messages))
            return self._prompt(messages[:cut] or messages)
        if format_name == "preference" and "preferred_output" in row:
            return self._prompt(row["input"]["messages"])
        prompt = row.get("prompt", "")
        return self._prompt(prompt) if isinstance(prompt, list) else self._prompt_string(prompt)

    def _prompt_string(self, prompt: str) -> str:
        return self._prompt([{"role": "user", "content": prompt}]) if self.use_chat_template else prompt

    def _prompt(self, messages: list[Message]) -> str:
        return self._render([_plain(m) for m in messages], generation_prompt=True)

    def preference_row(self, row: dict) -> dict:
        """A preference row in the shape TRL's DPO and reward trainers take: message lists when a
        chat template is used (TRL renders them as `preference` below does), else plain text."""
        if "preferred_output" in row:
            return {"prompt": [_plain(m) for m in row["input"]["messages"]],
                    "chosen": [_plain(m) for m in row["preferred_output"]],
                    "rejected": [_plain(m) for m in row["non_preferred_output"]]}
        chosen, rejected = row["chosen"], row["rejected"]
        if isinstance(chosen, list):
            chosen, rejected = [_plain(m) for m in chosen], [_plain(m) for m in rejected]
            prompt = [_plain(m) for m in row["prompt"]] if "prompt" in row else _common_prefix(chosen, rejected)
            return {"prompt": prompt, "chosen": chosen[len(prompt):] if "prompt" not in row else chosen,
                    "rejected": rejected[len(prompt):] if "prompt" not in row else rejected}
        if "prompt" not in row:
            prompt = _common_text_prefix(chosen, rejected)
            chosen, rejected = chosen[len(prompt):], rejected[len(prompt):]
        else:
            prompt = row["prompt"]
        if self.use_chat_template:
            return {"prompt": [{"role": "user", "content": prompt}],
                    "chosen": [{"role": "assistant", "content": chosen}],
                    "rejected": [{"role": "assistant", "content": rejected}]}
        return {"prompt": prompt, "chosen": chosen, "rejected": rejected}

    def preference(self, row: dict) -> tuple[str, str, str]:
        """(prompt, chosen, rejected) as text, the way the trainers render and tokenize them."""
        pair = self.preference_row(row)
        prompt, (chosen, rejected) = self._rendered(pair["prompt"], [pair["chosen"], pair["rejected"]])
        return prompt, chosen, rejected

    def unpaired_row(self, row: dict) -> dict:
        """An unpaired row in the shape TRL's KTO trainer takes: message lists when a chat template is used
        (as `preference_row`), else plain text; the label says whether the answer is desirable."""
        prompt, completion = row["prompt"], row["completion"]
        if isinstance(prompt, list):
            prompt, completion = [_plain(m) for m in prompt], [_plain(m) for m in completion]
        elif self.use_chat_template:
            prompt = [{"role": "user", "content": prompt}]
            completion = [{"role": "assistant", "content": completion}]
        return {"prompt": prompt, "completion": completion, "label": row["label"]}

    def unpaired(self, row: dict) -> tuple[str, str]:
        """(prompt, completion) as text, the way the trainer renders and tokenizes them."""
        single = self.unpaired_row(row)
        prompt, (completion,) = self._rendered(single["prompt"], [single["completion"]])
        return prompt, completion

    def _rendered(self, prompt, answers: list) -> tuple[str, list[str]]:
        """A prompt and its answers as text: plain text gets the EOS token after each answer; message lists
        are rendered through the chat template, each answer being what follows the rendered prompt."""
        if not isinstance(answers[0], list):
            eos = self.tokenizer.eos_token or ""
            return prompt, [answer if answer.endswith(eos) else answer + eos for answer in answers]
        prompt_text = self._render(prompt, generation_prompt=True) if prompt else ""
        texts = []
        for answer in answers:
            full = self._render(prompt + answer, generation_prompt=False)
            if not full.startswith(prompt_text):
                raise RowError("the chat template renders the prompt differently once an answer follows")
            texts.append(full[len(prompt_text):])
        return prompt_text, texts

    def count(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])


def _added_prefix(tokenizer) -> list[int]:
    """Tokens the tokenizer puts before plain text by itself (a BOS token, for many models)."""
    with_special = list(tokenizer("a", add_special_tokens=True)["input_ids"])
    without = list(tokenizer("a", add_special_tokens=False)["input_ids"])
    return with_special[: len(with_special) - len(without)] if with_special[-len(without):] == without else []


def _common_prefix(first: list, second: list) -> list:
    length = 0
    while length < min(len(first), len(second)) - 1 and first[length] == second[length]:
        length += 1
    return first[:length]


def _common_text_prefix(first: str, second: str) -> str:
    length = 0
    while length < min(len(first), len(second)) and first[length] == second[length]:
        length += 1
    return first[:length]
