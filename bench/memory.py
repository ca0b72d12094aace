"""The planner's memory estimate beside the measured peak, for a few configurations.

    python bench/memory.py [--only NAME] [--steps 3]

Each configuration is planned by `runner plan` machinery (make_plan on a generated spec),
then measured in a fresh process that loads the model and applies the trainable selection
with the executor's own functions and runs a few optimizer steps on full-length rows:
peak RSS growth over the process's baseline on the CPU, torch.cuda.max_memory_allocated
on a GPU. The estimate's "runtime" line (the interpreter and libraries) is left out of
the comparison on both sides. Goal (issue 3): within +-25%.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
CONFIGS = [
    # name, model, trainable block, micro-batch, sequence length, gradient checkpointing
    ("tiny-full", "tiny", "{mode: full}", 8, 256, False),
    ("smollm2-full", SMOLLM2, "{mode: full}", 4, 128, False),
    ("smollm2-full-ckpt", SMOLLM2, "{mode: full}", 8, 256, True),
    ("smollm2-freeze-last2", SMOLLM2, "{mode: freeze, layers: 'last:2'}", 8, 128, False),
    ("smollm2-lora", SMOLLM2, "{mode: lora, lora: {r: 16}}", 4, 256, False),
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


def plan_for(name, model, trainable, micro, length, checkpointing, folder: Path):
    from runner.plan.planner import make_plan

    if model == "tiny":
        from tests.tiny import make_model

        make_model(folder / "tiny", layers=4, hidden=256, vocab_size=2000)
        model = "./tiny"
    words = " ".join(f"word{i}" for i in range(4 * length))
    (folder / "data.jsonl").write_text("".join(json.dumps({"text": words}) + "\n" for _ in range(micro)))
    (folder / f"{name}.yaml").write_text(textwrap.dedent(f"""\
        version: 1
        name: {name}
        method: sft
        base_model: {model}
        data: {{train: data.jsonl}}
        trainable: {trainable}
        training: {{batch_size: {micro}, micro_batch_size: {micro}, max_length: {length}, max_steps: 1}}
        hardware: {{gradient_checkpointing: {str(checkpointing).lower()}}}
        """))
    return make_plan(folder / f"{name}.yaml", run_root=folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="run one configuration")
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    rows = []
    for name, model, trainable, micro, length, checkpointing in CONFIGS:
        if args.only and args.only != name:
            continue
        with tempfile.TemporaryDirectory() as temporary:
            folder = Path(temporary)
            plan = plan_for(name, model, trainable, micro, length, checkpointing, folder)
            estimate = sum(item.bytes for item in plan.memory.items if item.name != "runtime")
            (folder / "plan.json").write_text(plan.model_dump_json())
            completed = subprocess.run([sys.executable, "-c", MEASURE, str(folder / "plan.json"), str(args.steps)],
                                       capture_output=True, text=True, cwd=REPO)
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
