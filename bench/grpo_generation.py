"""The share of a GRPO step spent generating: rollouts are the cost of RL.

    python bench/grpo_generation.py [--model smollm2|tiny] [--steps 4] [--batch 8] [--generations 4] [--length 20]

Runs `runner run` machinery on specs/examples/rlvr's questions and declared reward (SmolLM2-135M-Instruct by
default, LoRA, as the example) and reads TRL's own timers: its `transformers.generate` block (sampling the
completions), its reward blocks (the declared checks), and the whole step (`step_time`: generation,
scoring, the log-probabilities and the optimizer step). The first step (warm-up) is left out of the
medians.

Where a GPU is lent, TRL's vLLM option (`use_vllm`, an extra) would be measured against plain generation
in this same script; runner does not expose it yet, and no GPU was lent when this was written (the
figures in docs/rl.md are CPU only).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
EXAMPLE = REPO / "specs" / "examples" / "rlvr"

SPEC = """\
version: 1
name: bench-grpo-generation
method: grpo
base_model: {model}
data: {{train: train.jsonl}}
trainable: {{mode: lora}}
grpo:
  reward:
    - numeric: {{column: answer}}
    - regex: {{pattern: '(^|\\n)Answer: -?[0-9]+\\s*$'}}
  num_generations: {generations}
  max_completion_length: {length}
  temperature: 0.8
training: {{max_steps: {steps}, batch_size: {batch}, learning_rate: 1.0e-4}}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("smollm2", "tiny"), default="smollm2")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8, help="completions per step")
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--length", type=int, default=20, help="max_completion_length")
    args = parser.parse_args()

    from trl.extras import profiling

    from runner.execute.job import run_plan
    from runner.plan.planner import make_plan
    from tests.tiny import make_model

    timed: dict[str, list[float]] = defaultdict(list)
    original = profiling.ProfilingContext._log_metrics

    def record(context, duration: float) -> None:  # TRL's timers report nowhere unless a tracker listens
        timed[context.name].append(duration)
        original(context, duration)

    profiling.ProfilingContext._log_metrics = record
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        shutil.copy(EXAMPLE / "data" / "train.jsonl", folder / "train.jsonl")
        model = "HuggingFaceTB/SmolLM2-135M-Instruct"
        if args.model == "tiny":
            make_model(folder / "model")
            model = "./model"
        spec = folder / "bench.yaml"
        spec.write_text(SPEC.format(model=model, generations=args.generations, length=args.length, steps=args.steps,
                                    batch=args.batch))
        code, run_dir = run_plan(make_plan(spec, run_root=folder), run_root=folder, console=False)
        if code:
            raise SystemExit(f"the run failed: {json.loads((run_dir / 'manifest.json').read_text())['error']}")
        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]

    steps = [r["step_time"] for r in records if "step_time" in r][1:]
    generate = next(values for name, values in timed.items() if name.endswith("transformers.generate"))[1:]
    scoring = [sum(values) for values in zip(*(v[1:] for name, v in timed.items()
                                                 if name.rsplit(".", 1)[-1] in ("numeric", "regex")))]
    step, generation = statistics.median(steps), statistics.median(generate)
    score = statistics.median(scoring) if scoring else 0.0
    print(f"{args.model} on the CPU, LoRA; {args.batch} completions per step ({args.batch // args.generations} "
          f"prompts x {args.generations}), up to {args.length} new tokens; medians over steps 2-{args.steps}")
    print("| generation | declared checks | rest (log-probabilities, backward, optimizer) | step | generating |")
    print("|---|---|---|---|---|")
    print(f"| {generation:.2f} s | {score * 1000:.1f} ms | {step - generation - score:.2f} s | {step:.2f} s | "
          f"{generation / step:.0%} |")


if __name__ == "__main__":
    main()
