"""`runner sample RUN_DIR "prompt"`: answer a prompt with a finished run's model."""

from __future__ import annotations

from pathlib import Path

from runner.errors import ExitCode, RunnerError, UsageError


def sample(run_dir: str, prompts: list[str], max_new_tokens: int) -> int:
    from runner.rundir import RunDirectory

    run = RunDirectory(Path(run_dir))
    manifest = run.read_manifest()
    if manifest is None:
        raise UsageError(f"{run_dir}: not a run directory (no readable manifest.json)")
    if manifest.state != "succeeded":
        raise RunnerError(f"run {run.run_id} is {manifest.state}, not succeeded", "sample a finished run")
    from runner.methods import registry

    if not registry.get(manifest.method).generates:
        raise RunnerError(f"a {manifest.method} model scores text; it does not generate", "sample a policy run")

    from runner.execute.data import encoder_for
    from runner.execute.samples import generate

    model, tokenizer = load_result(run, manifest.plan)
    encoder = encoder_for(manifest.plan, tokenizer)
    rendered = [encoder.prompt_text({"prompt": prompt}, "prompt_only") for prompt in prompts]
    for prompt, answer in zip(prompts, generate(model, tokenizer, rendered, templated=encoder.use_chat_template,
                                                max_new_tokens=max_new_tokens)):
        print(f"Q: {prompt}\nA: {answer}")
    return ExitCode.OK


def load_result(run, plan):
    """The trained model of a run: its saved folder, or the base with the saved adapter."""
    import torch

    from runner.execute import loading

    saved = run.model.is_dir()
    location = loading.ModelLocation("local", str(run.model), run.model) if saved else loading.location_of(plan)
    tokenizer = loading.load_tokenizer(location)
    from runner.methods import registry

    model = loading.load_model(location, registry.get(plan.method).head, torch.float32)
    if saved:
        return model, tokenizer
    from peft import PeftModel

    return PeftModel.from_pretrained(model, run.adapter), tokenizer
