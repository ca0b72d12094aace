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

    from runner.execute import loading
    from runner.execute.data import encoder_for
    from runner.execute.library_output import quiet_libraries
    from runner.execute.samples import generate

    quiet_libraries()

    model, tokenizer = loading.load_result(run, manifest.plan)
    encoder = encoder_for(manifest.plan, tokenizer)
    rendered = [encoder.prompt_text({"prompt": prompt}, "prompt_only") for prompt in prompts]
    for prompt, answer in zip(prompts, generate(model, tokenizer, rendered, templated=encoder.use_chat_template,
                                                max_new_tokens=max_new_tokens)):
        print(printable(f"Q: {prompt}\nA: {answer}"))
    return ExitCode.OK
