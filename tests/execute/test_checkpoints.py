"""Checkpoints: what they restore, and that resuming never unpickles anything a checkpoint holds."""

import json
import os
import pickle
import shutil
import signal

import pytest
import torch

from runner.execute import checkpoints
from tests.helpers import run_spec, sigterm_at_sft_step, write_jsonl


def training(seed: int) -> checkpoints.Training:
    from transformers import get_scheduler

    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    model[0].bias.requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1, weight_decay=0.01)
    return checkpoints.Training({"model": model}, optimizer, get_scheduler("cosine", optimizer, 1, 10))


def test_a_checkpoint_restores_weights_optimizer_schedule_and_random_state(tmp_path):
    written = training(seed=0)
    for _ in range(3):
        written.modules["model"](torch.randn(5, 4)).sum().backward()
        written.optimizer.step()
        written.schedule.step()
    folder = checkpoints.save(tmp_path, 3, written, keep=1)
    after_save = torch.rand(3)
    assert sorted(p.name for p in folder.iterdir()) == ["rng-0.json", "state.json", "tensors", "trainer_state.json"]

    restored = training(seed=1)
    assert checkpoints.load(folder, restored) == 3
    assert torch.equal(torch.rand(3), after_save)
    for (name, a), (_, b) in zip(written.modules["model"].named_parameters(),
                                 restored.modules["model"].named_parameters()):
        assert torch.equal(a, b) != (name == "0.bias"), name  # the frozen bias is not part of a checkpoint
    for a, b in zip(written.optimizer.state.values(), restored.optimizer.state.values()):
        assert all(torch.equal(a[key], b[key]) for key in ("step", "exp_avg", "exp_avg_sq"))
    assert restored.optimizer.param_groups[0]["betas"] == (0.9, 0.999)
    assert restored.schedule.get_last_lr() == written.schedule.get_last_lr()

    checkpoints.save(tmp_path, 6, written, keep=1)
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-6"]


class Payload:
    """What an attacker puts into a pickle: unpickling it runs a shell command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def interrupted_run(write_spec, monkeypatch):
    undo = sigterm_at_sft_step(monkeypatch, 3)
    extra = "training:\n  max_steps: 4\n  batch_size: 4\n  learning_rate: 1.0e-3\n"
    code, run, _ = run_spec(write_spec, extra)
    assert code == 130
    undo()
    return run, extra


def test_resuming_unpickles_nothing_a_checkpoint_holds(tiny_project, tmp_path, monkeypatch):
    run, extra = interrupted_run(tiny_project, monkeypatch)
    checkpoint = run.latest_checkpoint()
    marker = tmp_path / "pwned"
    torch.save({"model": Payload(marker)}, checkpoint / checkpoints.PICKLED_FORMAT)  # runner's old format
    (checkpoint / checkpoints.TENSORS / ".metadata").write_bytes(pickle.dumps(Payload(marker)))  # DCP's default
    torch.load(checkpoint / checkpoints.PICKLED_FORMAT, weights_only=False)
    assert marker.exists(), "the payload is live: unpickling it runs the command"
    marker.unlink()

    code, resumed, manifest = run_spec(tiny_project, extra)
    assert code == 0 and resumed.path == run.path and manifest.attempts[-1].resumed_from_step == 3
    assert not marker.exists()


def test_a_checkpoint_in_the_old_pickle_format_is_refused(tiny_project, tmp_path, monkeypatch):
    run, extra = interrupted_run(tiny_project, monkeypatch)
    checkpoint = run.latest_checkpoint()
    marker = tmp_path / "pwned"
    shutil.rmtree(checkpoint / checkpoints.TENSORS)
    for name in (checkpoints.STATE_FILE, "rng-0.json"):
        (checkpoint / name).unlink()
    torch.save({"model": Payload(marker), "rng": torch.get_rng_state()}, checkpoint / checkpoints.PICKLED_FORMAT)

    code, resumed, manifest = run_spec(tiny_project, extra)
    assert code == 1 and manifest.error.kind == "runtime" and not marker.exists()
    assert "pickle format of an older runner, which is never loaded" in manifest.error.message
    assert "to train from the start" in manifest.error.hint


def test_a_checkpoint_that_does_not_fit_the_model_is_refused(tiny_project, tmp_path, monkeypatch):
    run, extra = interrupted_run(tiny_project, monkeypatch)
    state = run.latest_checkpoint() / checkpoints.STATE_FILE
    record = json.loads(state.read_text())
    record["param_groups"][0]["params"] = record["param_groups"][0]["params"][:3]
    state.write_text(json.dumps(record))
    code, _, manifest = run_spec(tiny_project, extra)
    assert code == 1 and "written for other trainable parameters" in manifest.error.message


@pytest.mark.slow
def test_trl_resumes_with_weights_only_loading(tiny_project, tmp_path, monkeypatch):
    """The TRL recipes' checkpoints are transformers Trainer checkpoints: it reads optimizer, schedule
    and random state with torch.load(weights_only=True), so a planted payload is refused, not run."""
    from runner.execute.callbacks import RunCallback

    write_jsonl(tmp_path / "data" / "train.jsonl",
                [{"prompt": f"Name {i}?", "chosen": "Chatty.", "rejected": "No name."} for i in range(8)])
    original = RunCallback.on_step_end

    def signal_at_step_2(self, args, state, control, **kwargs):
        if state.global_step == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, args, state, control, **kwargs)

    monkeypatch.setattr(RunCallback, "on_step_end", signal_at_step_2)
    extra = "training:\n  max_steps: 4\n  batch_size: 4\ntrainable:\n  mode: lora\n"
    code, run, _ = run_spec(tiny_project, extra, **{"method: sft": "method: dpo"})
    assert code == 130 and run.latest_checkpoint().name == "checkpoint-2"
    monkeypatch.setattr(RunCallback, "on_step_end", original)
    marker = tmp_path / "pwned"
    torch.save({"state": Payload(marker)}, run.latest_checkpoint() / "optimizer.pt")

    code, resumed, manifest = run_spec(tiny_project, extra, **{"method: sft": "method: dpo"})
    assert resumed.path == run.path and code == 1 and not marker.exists()
    assert "Weights only load failed" in manifest.error.message
