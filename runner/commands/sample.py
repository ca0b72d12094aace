"""`runner sample RUN "prompt"...`: answer prompts with a finished run's model.

RUN is a run folder, or a spec file, spec name or folder of runs, whose latest succeeded run answers.
"""

from __future__ import annotations

import sys

from runner.box import run_root
from runner.errors import ExitCode, RunnerError
from runner.terminal import printable


def sample(target: str, prompts: list[str], max_new_tokens: int, runs_dir: str | None = None) -> int:
    from runner.rundir import RunDirectory
    from runner.runs import find_run

    found = find_run(target, run_root(runs_dir), succeeded=True)
    run = RunDirectory(found.path)
    manifest = run.read_manifest()
    if manifest is None:
        raise RunnerError(f"{found.path}: the run's manifest.json cannot be read")
    if manifest.state != "succeeded":
        raise RunnerError(f"run {run.run_id} is {manifest.state}, not succeeded", "sample a finished run")
    from runner.methods import registry

    if not registry.get(manifest.method).generates:
        raise RunnerError(f"a {manifest.method} model scores text; it does not generate", "sample a policy run")

    from runner.execute.data import encoder_for
    from runner.execute.library_output import quiet_libraries
    from runner.execute.samples import generate

    quiet_libraries()

    model, tokenizer = load_result(run, manifest.plan)
    encoder = encoder_for(manifest.plan, tokenizer)
    rendered = [encoder.prompt_text({"prompt": prompt}, "prompt_only") for prompt in prompts]
    for prompt, answer in zip(prompts, generate(model, tokenizer, rendered, templated=encoder.use_chat_template,
                                                max_new_tokens=max_new_tokens)):
        print(printable(f"Q: {prompt}\nA: {answer}"))
    return ExitCode.OK


def load_result(run, plan):
    """The trained model of a run: its saved folder, or the base with the saved adapter."""
    import torch

    from runner.execute import loading

    saved = run.model.is_dir()
    location = loading.ModelLocation("local", str(run.model), run.model) if saved else base_location(plan)
    tokenizer = loading.load_tokenizer(location)
    from runner.methods import registry

    model = loading.load_model(location, registry.get(plan.method).head, torch.float32)
    if saved:
        return model, tokenizer
    from peft import PeftModel

    return PeftModel.from_pretrained(model, run.adapter), tokenizer


def base_location(plan):
    """The base model of an adapter run on this machine: where it was trained from if that is still
    here; else the same hub model found again (the cache at the trained revision, then any revision,
    then the hub or an offline copy)."""
    from runner.execute import loading
    from runner.plan.source import locate
    from runner.spec.models import ModelSource

    trained = loading.location_of(plan)
    if trained.path is None or trained.path.exists():
        return trained
    if trained.hub_id is None:
        raise RunnerError(f"the base model of this run, {plan.inputs.base_model.reference} ({trained.path}), "
                          "is not on this machine", "copy it to the same place, or sample on the training machine")
    revision = plan.inputs.base_model.revision if trained.kind == "hub" else None
    try:
        found = locate(ModelSource(hub=trained.hub_id, revision=revision), trained.path.parent, trained.path.parent)
    except RunnerError:
        if revision is None:
            raise
        found = locate(ModelSource(hub=trained.hub_id), trained.path.parent, trained.path.parent)
    if (found.kind, found.revision) != (trained.kind, trained.revision):
        print(f"note: trained on {trained.describe()}; sampling with {found.describe()}", file=sys.stderr)
    return found
