"""runner run's summary of a run, read from its manifest."""

from pathlib import Path

from runner.commands.run import summary
from runner.manifest import Manifest, Metrics, RunError, Sample, Timings


class _Run:
    def __init__(self, manifest: Manifest) -> None:
        self.path, self.manifest_file, self.manifest = Path("/runs/x/1"), Path("/runs/x/1/manifest.json"), manifest
        self.metrics = self.path / "metrics.jsonl"  # none: the summary's per-step lines are left out

    def read_manifest(self) -> Manifest:
        return self.manifest


def test_a_run_stopped_before_its_end_shows_no_trained_answer():
    manifest = Manifest.model_construct(
        name="chatty", state="interrupted", metrics=Metrics(), parameters=None, timings=Timings(started_at="x"),
        error=RunError(kind="interrupted", message="stopped by a signal after writing a checkpoint"),
        samples=[Sample(prompt="What is your name?", before="I am an AI.")])
    shown = summary(_Run(manifest))
    assert "chatty: INTERRUPTED" in shown and "before: I am an AI." in shown
    assert "None" not in shown and "after:" not in shown
    manifest.samples[0].after = "Chatty."
    assert "after:  Chatty." in summary(_Run(manifest))
