"""Evaluation time: `runner eval` against lm-eval-harness's own CLI, on the same task and model.

    python bench/eval.py [--shape tiny] [--docs 200] [--repeats 3] [--batch-size 8] [--kind multiple_choice]

One random-init Llama (tests' tokenizer; "tiny": h256 x 4 blocks, "135m": SmolLM2-135M's shapes), one
local task YAML with --docs documents (multiple_choice with 4 choices, or generate_until with 32 new
tokens), both run as a person would, each a fresh process: `lm_eval --model hf ... --include_path` from
the task's folder, and `runner eval MODEL --evals evals.yaml` (the task through the spec's evals: the
same lm-eval code path, on the model runner loaded). Interleaved A B A B ..., wall times, medians; the
scores must agree. Goal (issue 19): runner's time at most 1.1x lm-eval's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.throughput import SHAPES, make_model  # noqa: E402
from tests.chatty import TASK  # noqa: E402

TASKS = {
    "multiple_choice": TASK.replace("tiny_mc", "bench_task").replace("mc.jsonl", "docs.jsonl"),
    "generate_until": """task: bench_task
dataset_path: json
dataset_kwargs:
  data_files:
    test: docs.jsonl
test_split: test
output_type: generate_until
doc_to_text: "Question: {{question}}\\nAnswer:"
doc_to_target: "{{choices[answer]}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 32
  do_sample: false
metric_list:
  - metric: exact_match
""",
}


def write_task(folder: Path, kind: str, docs: int) -> None:
    folder.mkdir(parents=True)
    (folder / "bench_task.yaml").write_text(TASKS[kind])
    with open(folder / "docs.jsonl", "w") as handle:
        for index in range(docs):
            choices = [str(index + offset) for offset in (1, 2, 0, 3)]
            handle.write(json.dumps({"question": f"What is {index} plus 1? Think of the number after {index}.",
                                     "choices": choices, "answer": 0}) + "\n")


def timed(command: list[str], cwd: Path, env: dict) -> tuple[float, str]:
    started = time.monotonic()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.monotonic() - started
    if done.returncode not in (0, 1):  # runner eval exits 1 for a missed gate; there is none here
        raise SystemExit(f"{command[:3]} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return seconds, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="tiny", choices=sorted(SHAPES))
    parser.add_argument("--docs", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--kind", default="multiple_choice", choices=sorted(TASKS))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        make_model(root / "model", SHAPES[args.shape])
        tasks = root / "tasks"
        write_task(tasks, args.kind, args.docs)
        (root / "evals.yaml").write_text(json.dumps({"evals": {"tasks": [
            {"task": "bench_task", "include_path": "tasks", "batch_size": args.batch_size}]}}))
        env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1",
               "RUNNER_CACHE_DIR": str(root / "cache"), "HF_DATASETS_CACHE": str(root / "datasets")}
        lm_eval = [sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args",
                   f"pretrained={root / 'model'},dtype=float32", "--device", "cpu", "--tasks", "bench_task",
                   "--include_path", str(tasks), "--batch_size", str(args.batch_size)]
        runner = [sys.executable, "-m", "runner", "eval", str(root / "model"), "--evals", str(root / "evals.yaml"),
                  "--format", "json"]
        timed(lm_eval, tasks, env)  # warm-up: bytecode, the datasets cache of the task's JSON, the page cache
        times: dict[str, list[float]] = {"lm_eval": [], "runner": []}
        scores = {}
        for repeat in range(args.repeats):
            for name in (["lm_eval", "runner"] if repeat % 2 == 0 else ["runner", "lm_eval"]):
                seconds, out = timed(lm_eval if name == "lm_eval" else runner,
                                     tasks if name == "lm_eval" else root, {**env, "RUNNER_CACHE_DIR":
                                                                            str(root / f"cache-{repeat}")})
                times[name].append(seconds)
                if name == "runner":
                    scores["runner"] = json.loads(out)["results"][0]["scores"]
                else:
                    scores["lm_eval"] = out.strip().splitlines()[-3:]
        lm, ours = statistics.median(times["lm_eval"]), statistics.median(times["runner"])
        print(f"bench/eval.py: {args.kind} task, {args.docs} documents, model {args.shape}, batch {args.batch_size}, "
              f"cpu, {args.repeats} interleaved runs each (wall time of a fresh process, median)")
        print(f"  lm_eval CLI   {lm:7.2f} s   {', '.join(f'{t:.2f}' for t in times['lm_eval'])}")
        print(f"  runner eval   {ours:7.2f} s   {', '.join(f'{t:.2f}' for t in times['runner'])}")
        print(f"  ratio runner / lm_eval: {ours / lm:.3f} (goal: at most 1.1)")
        print(f"  runner's scores: {json.dumps({k: v['trained'] for k, v in scores['runner'].items()})}")
        print("  lm_eval's table:\n    " + "\n    ".join(scores["lm_eval"]))


if __name__ == "__main__":
    main()
