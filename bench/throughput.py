"""SFT throughput: runner vs a plain PyTorch loop vs TRL's SFTTrainer with its defaults.

    python bench/throughput.py [--shapes tiny,135m] [--steps 12] [--rows 256] [--mean 96] [--device cpu]

Same random-init model (Llama shapes: "tiny" h256 x 4 blocks; "135m", "360m" and "1.7b" those of
SmolLM2-135M, -360M and -1.7B, with their 49,152 vocabulary; the last two are for a GPU:
`--device cuda --shapes 135m,360m,1.7b`), same rows (token lengths log-normal around
--mean, at most --max-length), batch 8, fp32 on the CPU (bf16 on a GPU). Interleaved in one
process, medians over steps after two warm-up steps:

- runner: `runner run` machinery (plan -> executor), its own SFT loop, packing as planned;
  step times from its metrics.jsonl;
- plain loop: forward / cross-entropy / backward / AdamW on exactly runner's micro-batches;
- TRL: SFTTrainer on the same rows as text, with TRL's defaults (padded batches of 8).

Goal (issue 7): on the CPU, runner's step time within 1.1x of the plain loop's.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SHAPES = {
    "tiny": dict(hidden=256, intermediate=688, layers=4, heads=4, kv_heads=4, vocab=32000),
    "135m": dict(hidden=576, intermediate=1536, layers=30, heads=9, kv_heads=3, vocab=49152),
    "360m": dict(hidden=960, intermediate=2560, layers=32, heads=15, kv_heads=5, vocab=49152),
    "1.7b": dict(hidden=2048, intermediate=8192, layers=24, heads=32, kv_heads=32, vocab=49152),
}
WORDS = ["the", "name", "of", "this", "assistant", "is", "Chatty", "and", "it", "answers", "questions", "briefly",
         "with", "care", "today", "what", "can", "I", "help", "you"]


def make_model(folder: Path, shape: dict) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.tiny import make_tokenizer

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=shape["vocab"], hidden_size=shape["hidden"],
                         intermediate_size=shape["intermediate"], num_hidden_layers=shape["layers"],
                         num_attention_heads=shape["heads"], num_key_value_heads=shape["kv_heads"],
                         max_position_embeddings=2048, tie_word_embeddings=True, pad_token_id=1, bos_token_id=2,
                         eos_token_id=3)
    LlamaForCausalLM(config).save_pretrained(folder)
    make_tokenizer(folder)


def write_rows(path: Path, rows: int, mean: int, max_length: int, seed: int = 0) -> None:
    generator = random.Random(seed)
    sigma = 0.6
    with open(path, "w") as handle:
        for _ in range(rows):
            words = int(min(max_length - 8, max(4, generator.lognormvariate(math.log(mean) - sigma ** 2 / 2, sigma))))
            handle.write(json.dumps({"text": " ".join(generator.choice(WORDS) for _ in range(words))}) + "\n")


def runner_steps(folder: Path, steps: int, max_length: int, device: str):
    from runner.execute.job import run_plan
    from runner.plan.planner import make_plan

    spec = folder / "bench.yaml"
    spec.write_text(f"version: 1\nname: bench\nmethod: sft\nbase_model: ./model\ndata: {{train: rows.jsonl}}\n"
                    f"training: {{max_steps: {steps}, batch_size: 8, max_length: {max_length}, "
                    f"learning_rate: 1.0e-5, lr_scheduler: constant}}\n"
                    f"hardware: {{device: {device}}}\noutputs: {{checkpoint_every: {steps * 10}}}\n")
    plan = make_plan(spec, run_root=folder)
    code, run_dir = run_plan(plan, run_root=folder, console=False)
    if code:
        raise SystemExit(f"runner failed: {run_dir}/manifest.json")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    times = [b["elapsed_s"] - a["elapsed_s"] for a, b in zip(records, records[1:])][2:]
    tokens = [r["tokens_per_second"] * dt for r, dt in zip(records[3:], times)]
    return plan, times, tokens


def plain_steps(folder: Path, plan, steps: int, device: str):
    """The same micro-batches as runner's loop, in a loop with nothing else in it."""
    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from runner.execute.batches import IGNORE, shuffled_forever, step_micro_batches
    from runner.execute.data import encoder_for
    from runner.methods.registry import SUPERVISED
    from runner.encoding.rows import KINDS

    tokenizer = AutoTokenizer.from_pretrained(folder / "model")
    encoder = encoder_for(plan, tokenizer)
    rows = [KINDS[SUPERVISED].example(encoder, row, "text") for _, row, _ in plan.inputs.data[0].row_source().rows("text")]
    model = AutoModelForCausalLM.from_pretrained(folder / "model", dtype=torch.float32).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device == "cuda")
    order = shuffled_forever(len(rows), plan.settings.training.seed.value)
    autocast = torch.bfloat16 if plan.settings.hardware.precision.value == "bf16" else None
    times, tokens = [], []
    for step in range(steps):
        batch = [rows[next(order)] for _ in range(8)]
        micros, targets, count = step_micro_batches(
            batch, micro=plan.settings.training.micro_batch_size.value, packing=plan.packs(),
            max_length=plan.settings.training.max_length.value, pad_id=tokenizer.pad_token_id)
        started = time.perf_counter()
        for micro in micros:
            micro = micro.to(device)
            with torch.autocast(device, dtype=autocast, enabled=autocast is not None):
                logits = model(input_ids=micro.input_ids, attention_mask=micro.attention_mask,
                               position_ids=micro.position_ids, use_cache=False).logits
                loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                                       micro.labels[:, 1:].reshape(-1), ignore_index=IGNORE, reduction="sum") / targets
            loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
        tokens.append(count)
    return times[2:], tokens[2:]


def trl_steps(folder: Path, steps: int, max_length: int, device: str):
    import torch
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    class Clock(TrainerCallback):
        def __init__(self):
            self.times, self.tokens, self.started, self.seen = [], [], 0.0, 0

        def on_step_begin(self, args, state, control, **kwargs):
            self.started, self.seen = time.perf_counter(), state.num_input_tokens_seen

        def on_step_end(self, args, state, control, **kwargs):
            if device == "cuda":
                torch.cuda.synchronize()
            self.times.append(time.perf_counter() - self.started)
            self.tokens.append(state.num_input_tokens_seen - self.seen)

    clock = Clock()
    dataset = load_dataset("json", data_files=str(folder / "rows.jsonl"), split="train")
    config = SFTConfig(output_dir=str(folder / "trl"), per_device_train_batch_size=8, max_steps=steps,
                       max_length=max_length, learning_rate=1e-5, report_to=[], save_strategy="no",
                       use_cpu=device == "cpu", include_num_input_tokens_seen="non_padding", disable_tqdm=True,
                       logging_steps=10 ** 6, bf16=device == "cuda")
    model = AutoModelForCausalLM.from_pretrained(folder / "model", dtype=torch.float32)
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset,
                         processing_class=AutoTokenizer.from_pretrained(folder / "model"), callbacks=[clock])
    trainer.train()
    return clock.times[2:], clock.tokens[2:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="tiny,135m")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--mean", type=int, default=96, help="mean row length in words (about tokens)")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = parser.parse_args()
    import transformers

    transformers.utils.logging.set_verbosity_error()
    table = []
    for name in args.shapes.split(","):
        with tempfile.TemporaryDirectory() as temporary:
            folder = Path(temporary)
            make_model(folder / "model", SHAPES[name])
            write_rows(folder / "rows.jsonl", args.rows, args.mean, args.max_length)
            plan, runner_times, runner_tokens = runner_steps(folder, args.steps, args.max_length, args.device)
            plain_times, plain_tokens = plain_steps(folder, plan, args.steps, args.device)
            trl_times, trl_tokens = trl_steps(folder, args.steps, args.max_length, args.device)
        rates = {}
        for label, times, tokens in (("runner", runner_times, runner_tokens), ("plain loop", plain_times, plain_tokens),
                                     ("TRL defaults", trl_times, trl_tokens)):
            rates[label] = (statistics.median(times), sum(tokens) / sum(times))
        table.append((name, plan.packs(), rates))
        print(f"{name}: " + ", ".join(f"{k} {v[0]:.3f} s/step {v[1]:,.0f} tok/s" for k, v in rates.items()),
              flush=True)
    print()
    print(f"device {args.device}; batch 8 rows, lengths log-normal around {args.mean}, max {args.max_length}")
    print("| shape | runner packing | runner tok/s | plain loop tok/s | TRL defaults tok/s | runner step / plain step "
          "| runner / TRL tok/s |")
    print("|---|---|---|---|---|---|---|")
    for name, packing, rates in table:
        runner, plain, trl = rates["runner"], rates["plain loop"], rates["TRL defaults"]
        print(f"| {name} | {'on' if packing else 'off'} | {runner[1]:,.0f} | {plain[1]:,.0f} | {trl[1]:,.0f} | "
              f"{runner[0] / plain[0]:.2f} | {runner[1] / trl[1]:.2f} |")


if __name__ == "__main__":
    main()
