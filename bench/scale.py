"""Per-process peak memory of DDP and FSDP on two CPU processes, beside the planner's estimates.

    python bench/scale.py [--layers 24] [--hidden 1024] [--batch 2] [--length 64] [--steps 3]

A random Llama with a few hundred million parameters (default: hidden 1024 x 24 blocks, MLP 2816,
vocabulary 32,000: 341M), full fine-tuning, fp32, AdamW, a global batch of `--batch` rows of
`--length` tokens: a shape where weights, gradients and AdamW states (16 bytes a parameter) are
most of the memory, which is where sharding them matters.

For each strategy, `runner plan` machinery makes the plan (hardware.strategy ddp, then fsdp, on 2
CPU processes); torchrun then starts 2 processes that each build the model as the executor does
(a full copy per process for ddp; sharding.build for fsdp) and run runner's SFT loop
(runner/methods/sft.py) for `--steps` steps, no checkpoint. Each process reports its peak RSS
growth over its own baseline after imports, tokenizer and data (VmHWM reset through
/proc/self/clear_refs); the estimate's runtime, tokenizer and data lines are left out on both sides.

glibc keeps freed heap memory in a process's RSS, so a peak of RSS also counts buffers freed long
before (FSDP allocates and frees each block's gathered copy several times a step): the workers
run with MALLOC_MMAP_THRESHOLD_=1 MiB (measuring_environment), which hands large
buffers back when they are freed, so the peak is memory in use, for both strategies
(`--system-malloc` measures without it).

Goals (issue 11): FSDP's per-process peak at most 0.6x DDP's; each estimate within 25% of the
measured peak.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SPEC = """\
version: 1
name: scale-{strategy}
method: sft
base_model: ./model
data: {{train: rows.jsonl}}
trainable: {{mode: full}}
training: {{batch_size: {batch}, max_length: {length}, max_steps: {steps}, learning_rate: 1.0e-5}}
hardware: {{device: cpu, gpus: 2, strategy: {strategy}, precision: fp32, max_memory_gb: 64}}
outputs: {{checkpoint_every: 1000}}
"""


BASELINE_ITEMS = ("runtime", "tokenizer", "data")
"""Estimate lines that the workers' baseline already holds."""


def measuring_environment(system_malloc: bool) -> dict[str, str]:
    """The environment of a measuring process: large buffers handed back to the system when freed
    (see the module's docstring), unless `system_malloc` asks for glibc's default thresholds."""
    return {**os.environ, **({} if system_malloc else {"MALLOC_MMAP_THRESHOLD_": str(2**20)})}


def make_model(folder: Path, hidden: int, layers: int) -> int:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.tiny import make_tokenizer

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=32000, hidden_size=hidden, intermediate_size=int(hidden * 2.75),
                         num_hidden_layers=layers, num_attention_heads=16, num_key_value_heads=16,
                         max_position_embeddings=4096, tie_word_embeddings=True, pad_token_id=1, bos_token_id=2,
                         eos_token_id=3)
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    make_tokenizer(folder)
    return sum(p.numel() for p in model.parameters())


def rss() -> tuple[int, int]:
    fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024


def worker(plan_file: Path, out: Path) -> None:
    """One of the torchrun processes: build the model as the executor does, train, report the peak."""
    import threading

    import torch

    from runner.execute import loading, sharding, trainable
    from runner.execute.context import Context
    from runner.execute.data import prepare
    from runner.execute.events import EventLog, MetricsLog
    from runner.execute.settings import Settings
    from runner.methods import registry, sft
    from runner.plan.models import Plan
    from runner.rundir import RunDirectory

    plan = Plan.model_validate_json(plan_file.read_text())
    rank = int(os.environ["RANK"])
    location = loading.location_of(plan)
    tokenizer = loading.load_tokenizer(location)
    splits = prepare(plan, tokenizer)
    run = RunDirectory(out / f"run-{plan.value('hardware.strategy')}")
    run.path.mkdir(exist_ok=True)
    torch.manual_seed(0)
    baseline, _ = rss()
    open("/proc/self/clear_refs", "w").write("5")  # the peak starts again from the current RSS
    settings = Settings.of_plan(plan)
    if settings.training.strategy == "fsdp":
        model = sharding.build(plan, location)
    else:
        model = trainable.apply(loading.load_model(location, registry.get(plan.method).head,
                                                   loading.weights_dtype(plan)), plan)
    events = EventLog(run.path / f"events-{rank}.jsonl", console=False)
    metrics = MetricsLog(run.path / f"metrics-{rank}.jsonl")
    sft.train(Context(plan, settings, run, model, tokenizer, splits, events, metrics,
                      threading.Event(), None))
    (out / f"{plan.value('hardware.strategy')}-{rank}.json").write_text(json.dumps({"peak": rss()[1] - baseline}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--system-malloc", action="store_true", help="measure with glibc's default thresholds")
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(Path(args.worker), Path(args.out))
        return

    from runner.plan.planner import make_plan

    results = {}
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        parameters = make_model(folder / "model", args.hidden, args.layers)
        words = " ".join(f"word{i}" for i in range(4 * args.length))
        (folder / "rows.jsonl").write_text("".join(json.dumps({"text": words}) + "\n" for _ in range(args.batch)))
        print(f"model: {parameters / 1e6:.0f}M parameters (hidden {args.hidden} x {args.layers} blocks), "
              f"full fine-tuning, fp32 AdamW, {args.batch} rows x {args.length} tokens per step, 2 CPU processes",
              flush=True)
        for strategy in ("ddp", "fsdp"):
            spec = folder / f"{strategy}.yaml"
            spec.write_text(SPEC.format(strategy=strategy, batch=args.batch, length=args.length, steps=args.steps))
            plan = make_plan(spec, run_root=folder)
            (folder / f"{strategy}.json").write_text(plan.model_dump_json())
            step = next(moment for moment in plan.memory.moments if moment.name == "a training step")
            estimate = step.bytes - sum(item.bytes for item in plan.memory.items if item.name in BASELINE_ITEMS)
            command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                       __file__, "--worker", str(folder / f"{strategy}.json"), "--out", str(folder)]
            completed = subprocess.run(command, capture_output=True, text=True, cwd=REPO,
                                       env=measuring_environment(args.system_malloc))
            if completed.returncode:
                raise SystemExit(f"{strategy} failed:\n{completed.stderr[-3000:]}")
            peaks = [json.loads((folder / f"{strategy}-{rank}.json").read_text())["peak"] for rank in (0, 1)]
            results[strategy] = (estimate, peaks)
            print(f"{strategy}: estimate {estimate / 2**20:,.0f} MiB per process, measured "
                  + ", ".join(f"{peak / 2**20:,.0f}" for peak in peaks) + " MiB (ranks 0, 1)", flush=True)
    print()
    print("| strategy | estimate per process | measured peak, rank 0 / rank 1 | estimate / measured (max) |")
    print("|---|---|---|---|")
    for strategy, (estimate, peaks) in results.items():
        print(f"| {strategy} | {estimate / 2**20:,.0f} MiB | {peaks[0] / 2**20:,.0f} / {peaks[1] / 2**20:,.0f} MiB | "
              f"{estimate / max(peaks):.2f} |")
    ratio = max(results["fsdp"][1]) / max(results["ddp"][1])
    print(f"\nFSDP / DDP per-process peak: {ratio:.2f} (goal: at most 0.60)")


if __name__ == "__main__":
    main()
