"""The planner's memory estimate beside the measured peak, for a few configurations.

    python bench/memory.py [--only NAME] [--steps 3] [--system-malloc]

Each configuration is planned by `runner plan` machinery (make_plan on a generated spec),
then measured in a fresh process: `loop` configurations load the model and apply the trainable
selection with the executor's own functions and run a few optimizer steps on full-length rows;
`recipe` configurations (the preference methods) run the method's real recipe for a few steps
(`run_plan`, its libraries imported before the baseline). Measured: peak RSS growth over the
process's baseline on the CPU, torch.cuda.max_memory_allocated on a GPU. The estimate's "runtime"
line (the interpreter and libraries) is left out of the comparison on both sides.

glibc raises its mmap threshold each time a large buffer is freed (up to 32 MiB), after which buffers
of that size come from the heap, and freed heap stays in RSS: a CPU peak of RSS then counts buffers
freed long before, by an amount that changes from run to run (SimPO freeze-last4, the same plan four
times: 1,441 to 1,894 MiB; with the threshold fixed, three times: 1,453 to 1,468). The measuring
processes therefore run with MALLOC_MMAP_THRESHOLD_=1 MiB, as bench/scale.py's do, so that the CPU
peak is memory in use, the quantity that max_memory_allocated gives on a GPU and that the estimate
counts (`--system-malloc` measures without it).

Goal (issue 3): within +-25%.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
CONFIGS = [
    # name, model, method, how it is measured, trainable block, micro-batch, sequence length, checkpointing
    ("tiny-full", "tiny", "sft", "loop", "{mode: full}", 8, 256, False),
    ("smollm2-full", SMOLLM2, "sft", "loop", "{mode: full}", 4, 128, False),
    ("smollm2-full-ckpt", SMOLLM2, "sft", "loop", "{mode: full}", 8, 256, True),
    ("smollm2-freeze-last2", SMOLLM2, "sft", "loop", "{mode: freeze, layers: 'last:2'}", 8, 128, False),
    ("smollm2-lora", SMOLLM2, "sft", "loop", "{mode: lora, lora: {r: 16}}", 4, 256, False),
    ("smollm2-orpo-lora", SMOLLM2, "orpo", "recipe", "{mode: lora, lora: {r: 16}}", 4, 128, False),
    ("smollm2-simpo-freeze-last4", SMOLLM2, "simpo", "recipe", "{mode: freeze, layers: 'last:4'}", 4, 128, False),
    ("smollm2-kto-full", SMOLLM2, "kto", "recipe", "{mode: full}", 4, 128, False),
]

MEASURE = textwrap.dedent('''
    import json, sys, torch
    from runner.execute import loading, trainable
    from runner.methods import registry
    from runner.plan.models import Plan

    def rss():
        fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
        return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024

    plan = Plan.model_validate_json(open(sys.argv[1]).read())
    steps = int(sys.argv[2])
    cuda = plan.value("hardware.device") == "cuda"
    location = loading.location_of(plan)
    tokenizer = loading.load_tokenizer(location)
    loading.weights_source(location)  # convert a GGUF once, before measuring
    torch.manual_seed(0)
    baseline, _ = rss()
    open("/proc/self/clear_refs", "w").write("5")  # reset the peak to the current RSS
    model = loading.load_model(location, registry.get(plan.method).head, loading.weights_dtype(plan),
                               pad_token_id=tokenizer.pad_token_id)
    if cuda:
        model.cuda()
    model = trainable.apply(model, plan)
    model.train()  # as the trainer does: dropout on, and gradient checkpointing only acts in training mode
    if plan.value("hardware.gradient_checkpointing"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model.config.use_cache = False
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=1e-5)
    micro, length = plan.value("training.micro_batch_size"), plan.value("training.max_length")
    vocab = plan.model.vocab_size
    autocast = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(plan.value("hardware.precision"))
    for _ in range(steps):
        ids = torch.randint(3, vocab, (micro, length), device="cuda" if cuda else "cpu")
        with torch.autocast("cuda" if cuda else "cpu", dtype=autocast, enabled=autocast is not None):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    peak = torch.cuda.max_memory_allocated() if cuda else rss()[1] - baseline
    print(json.dumps({"peak": peak}))
''')

RECIPE = textwrap.dedent('''
    import json, sys
    from pathlib import Path
    import torch
    from runner.execute import loading
    from runner.execute.job import run_plan
    from runner.methods import registry
    from runner.plan.models import Plan

    def rss():
        fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
        return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024

    plan = Plan.model_validate_json(open(sys.argv[1]).read())
    cuda = plan.value("hardware.device") == "cuda"
    registry.get(plan.method).load_recipe()  # its trainer's libraries, before the baseline
    import datasets, peft  # noqa: F401  (data preparation and LoRA)
    loading.weights_source(loading.location_of(plan))  # convert a GGUF once, before measuring
    baseline, _ = rss()
    open("/proc/self/clear_refs", "w").write("5")
    code, run_dir = run_plan(plan, run_root=Path(sys.argv[2]), console=False)
    if code:
        sys.exit(f"the run failed: {json.loads((run_dir / 'manifest.json').read_text())['error']}")
    peak = torch.cuda.max_memory_allocated() if cuda else rss()[1] - baseline
    print(json.dumps({"peak": peak}))
''')


def measuring_environment(system_malloc: bool) -> dict[str, str]:
    """The environment of a measuring process: large buffers handed back to the system when freed
    (see the module's docstring), unless `system_malloc` asks for glibc's default thresholds."""
    return {**os.environ, **({} if system_malloc else {"MALLOC_MMAP_THRESHOLD_": str(2**20)})}


def rows_for(data_format: str, micro: int, length: int) -> list[dict]:
    """Rows longer than max_length (every sequence is cut to it), in the method's format."""
    def words(start: int, count: int) -> str:
        return " ".join(f"word{i}" for i in range(start, start + count))

    if data_format == "preference":
        return [{"prompt": words(0, length // 8), "chosen": words(1000, 2 * length),
                 "rejected": words(5000, 2 * length)} for _ in range(micro)]
    if data_format == "unpaired":
        return [{"prompt": words(0, length // 8), "completion": words(1000 * (i + 1), 2 * length),
                 "label": i % 2 == 0} for i in range(micro)]
    return [{"text": words(0, 4 * length)} for _ in range(micro)]


def plan_for(name, model, method, trainable, micro, length, checkpointing, steps: int, folder: Path):
    from runner.methods import registry
    from runner.plan.planner import make_plan

    if model == "tiny":
        from tests.tiny import make_model

        make_model(folder / "tiny", layers=4, hidden=256, vocab_size=2000)
        model = "./tiny"
    rows = rows_for(registry.get(method).formats[0], micro, length)
    (folder / "data.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (folder / f"{name}.yaml").write_text(textwrap.dedent(f"""\
        version: 1
        name: {name}
        method: {method}
        base_model: {model}
        data: {{train: data.jsonl}}
        trainable: {trainable}
        training: {{batch_size: {micro}, micro_batch_size: {micro}, max_length: {length}, max_steps: {steps}}}
        hardware: {{gradient_checkpointing: {str(checkpointing).lower()}}}
        """))
    return make_plan(folder / f"{name}.yaml", run_root=folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="run one configuration")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--system-malloc", action="store_true", help="measure with glibc's default thresholds")
    args = parser.parse_args()
    rows = []
    for name, model, method, how, trainable, micro, length, checkpointing in CONFIGS:
        if args.only and args.only != name:
            continue
        with tempfile.TemporaryDirectory() as temporary:
            folder = Path(temporary)
            plan = plan_for(name, model, method, trainable, micro, length, checkpointing, args.steps, folder)
            estimate = sum(item.bytes for item in plan.memory.items if item.name != "runtime")
            (folder / "plan.json").write_text(plan.model_dump_json())
            script, argument = (MEASURE, str(args.steps)) if how == "loop" else (RECIPE, str(folder))
            completed = subprocess.run([sys.executable, "-c", script, str(folder / "plan.json"), argument],
                                       capture_output=True, text=True, cwd=REPO,
                                       env=measuring_environment(args.system_malloc))
            if completed.returncode:
                print(completed.stderr[-2000:], file=sys.stderr)
                continue
            measured = json.loads(completed.stdout.strip().splitlines()[-1])["peak"]
            rows.append((name, plan.value("hardware.device"), micro, length, checkpointing, estimate, measured))
            print(f"{name}: estimate {estimate / 2**20:,.0f} MiB, measured {measured / 2**20:,.0f} MiB", flush=True)
    print()
    print("| configuration | device | micro x length | checkpointing | estimate | measured | estimate/measured |")
    print("|---|---|---|---|---|---|---|")
    for name, device, micro, length, checkpointing, estimate, measured in rows:
        print(f"| {name} | {device} | {micro} x {length} | {'on' if checkpointing else 'off'} | "
              f"{estimate / 2**20:,.0f} MiB | {measured / 2**20:,.0f} MiB | {estimate / measured:.2f} |")


if __name__ == "__main__":
    main()
