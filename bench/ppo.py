"""One PPO iteration of runner's trainer, split into generation / scoring / optimisation,
beside one step of TRL's GRPOTrainer with the same batch and generation length.

    python bench/ppo.py [--iterations 6] [--hidden 64] [--layers 4] [--vocab 49152]

Both run through `runner run` machinery on the same tiny random Llama (SmolLM2's
vocabulary size by default, so the logits cost what they cost on the real model),
8 completions per step, 16 new tokens, a cheap reward function. The first iteration
(warm-up) is left out of the medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SPEC = """\
version: 1
name: {name}
method: {method}
base_model: ./model
data: {{train: prompts.jsonl}}
trainable: {{mode: full}}
training: {{max_steps: {iterations}, batch_size: 8, micro_batch_size: 8, learning_rate: 1.0e-5}}
{section}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=49152)
    args = parser.parse_args()

    from runner.execute.job import run_plan
    from runner.plan.planner import make_plan
    from tests.tiny import make_model

    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        make_model(folder / "model", layers=args.layers, hidden=args.hidden, vocab_size=args.vocab)
        (folder / "prompts.jsonl").write_text("".join(
            json.dumps({"prompt": f"What is your name? Question {i}."}) + "\n" for i in range(64)))
        (folder / "scoring.py").write_text(textwrap.dedent("""\
            def score(prompts, completions):
                return [min(len(c), 40) / 40 for c in completions]
            """))
        sections = {
            "ppo": "ppo: {reward: {function: 'scoring:score'}, response_length: 16, num_ppo_epochs: 4}",
            "grpo": "grpo: {reward: {function: 'scoring:score'}, num_generations: 4, max_completion_length: 16}",
        }
        results = {}
        for method, section in sections.items():
            spec = folder / f"{method}.yaml"
            spec.write_text(SPEC.format(name=f"bench-{method}", method=method, iterations=args.iterations,
                                        section=section))
            plan = make_plan(spec, run_root=folder)
            code, run_dir = run_plan(plan, run_root=folder, console=False)
            if code:
                raise SystemExit(f"{method} failed: see {run_dir}/manifest.json")
            records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
            results[method] = records

    ppo = [r for r in results["ppo"] if "time/generation_s" in r][1:]
    split = {part: statistics.median(r[f"time/{part}_s"] for r in ppo) for part in ("generation", "scoring",
                                                                                      "training")}
    ppo_total = sum(split.values())
    grpo_times = [r["elapsed_s"] for r in results["grpo"] if "loss" in r]
    grpo_step = statistics.median(b - a for a, b in zip(grpo_times[1:], grpo_times[2:])) if len(grpo_times) > 2 \
        else float("nan")
    print(f"tiny Llama: hidden {args.hidden}, {args.layers} blocks, vocabulary {args.vocab:,}; 8 completions of "
          f"16 tokens per step; CPU; medians over iterations 2-{args.iterations}")
    print("| trainer | generation | scoring | optimisation | per step |")
    print("|---|---|---|---|---|")
    print(f"| runner PPO (4 PPO epochs, 1 minibatch) | {split['generation']:.3f} s | {split['scoring']:.3f} s | "
          f"{split['training']:.3f} s | {ppo_total:.3f} s |")
    print(f"| TRL GRPO (4 generations x 2 prompts) | - | - | - | {grpo_step:.3f} s |")
    print(f"PPO iteration / GRPO step = {ppo_total / grpo_step:.2f}")


if __name__ == "__main__":
    main()
