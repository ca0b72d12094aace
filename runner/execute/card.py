"""The model card (README.md beside the weights) and the loss curve (loss.png)."""

from __future__ import annotations

from pathlib import Path

from runner.manifest import Manifest
from runner.execute.save import portable_name
from runner.plan.render import human


def write_card(folder: Path, manifest: Manifest, note: str | None = None) -> None:
    """`note`: what was done to the run's model to make this folder (an export says how it merged)."""
    plan = manifest.plan
    t = plan.trainable
    hub_datasets = sorted({data.spec["hub"] for data in plan.inputs.data if data.spec.get("hub")})
    lines = [
        "---",
        f"base_model: {portable_name(manifest.base_model)}",
        "library_name: transformers",
        f"tags: [runner, {manifest.method}, {t.mode}]",
        *([f"datasets: [{', '.join(hub_datasets)}]"] if hub_datasets else []),
        "---",
        "",
        f"# {manifest.name}",
        "",
        f"Fine-tuned with [runner](https://pypi.org/project/runner-finetune/) from `{manifest.base_model.reference}` "
        f"({manifest.base_model.kind}), method **{manifest.method}**, run `{manifest.run_id}`.",
        *_weights_note(manifest),
        *(["", note] if note else _quantized_note(plan)),
        "",
        "## What was trained",
        "",
        f"{t.mode} training: {human(t.trainable_parameters)} of {human(t.total_parameters)} parameters "
        f"({t.trainable_percent:.2f}%).",
        "",
        "| blocks | family | status | parameters |",
        "|---|---|---|---|",
        *[f"| {row.layers} | {row.family} | {row.status} | {human(row.parameters)} |" for row in t.table],
        "",
        *[f"- {note}" for note in t.notes],
        "",
        f"Loss covered: {plan.loss_mask.rule}.",
        "",
        "## Data",
        "",
        "| role | source | sha256 | rows | weight | used per epoch | rejected |",
        "|---|---|---|---|---|---|---|",
        *[f"| {d.role} | {_cell(d.source or Path(d.path).name)} | `{d.sha256[:16]}` | {d.rows} | {d.weight:g} | "
          f"{d.used_rows} | {d.rejected_rows} |" for d in manifest.data],
        "",
        "## Training",
        "",
        *[f"- `{key}`: {entry.value}" for key, entry in plan.resolved.items()],
        "",
        "## Metrics",
        "",
        *[f"- {key}: {value}" for key, value in manifest.metrics.model_dump(exclude={"method"}).items()
          if value is not None],
        *[f"- {key}: {value:.4g}" for key, value in manifest.metrics.method.items()],
    ]
    if manifest.evals and manifest.evals.results:
        lines += ["", "## Evaluation (base / this model)", "", "| eval | metric | base | this model |",
                  "|---|---|---|---|"]
        lines += [f"| {result.name} | {metric} | {_score(score.base)} | {_score(score.trained)} |"
                  for result in manifest.evals.results for metric, score in result.scores.items()]
        lines += [f"- gate `{gate.condition}`: {'passed' if gate.passed else 'MISSED'}" for gate in manifest.evals.gates]
    if manifest.samples:
        lines += ["", "## Samples (greedy)", "", "| prompt | before | after |", "|---|---|---|"]
        lines += [f"| {_cell(s.prompt)} | {_cell(s.before)} | {_cell(s.after or '')} |" for s in manifest.samples]
    (folder / "README.md").write_text("\n".join(lines) + "\n")


def _weights_note(manifest: Manifest) -> list[str]:
    """A GGUF copy is not the hub model's own weights: say which file, and its quantisation."""
    weights = manifest.weights
    if weights is None or weights.format != "gguf":
        return []
    return ["", f"The base weights were read from `{Path(weights.path).name}` (sha256 `{weights.sha256[:16]}`, "
                f"{weights.quantization}), dequantised to fp32."]


def _quantized_note(plan) -> list[str]:
    quantized = plan.trainable.quantized
    if quantized is None:
        return []
    return ["", f"The frozen base was stored {quantized.storage().describe()} while the adapter trained."]


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def loss_plot(path: Path, records: list[dict], title: str) -> bool:
    """Write the loss curve; False when there is nothing to plot."""
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    evaluation = [(r["step"], r["eval_loss"]) for r in records if "eval_loss" in r]
    if not train:
        return False
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axis = pyplot.subplots(figsize=(6, 3.5), dpi=100)
    axis.plot(*zip(*train), label="train loss")
    if evaluation:
        axis.plot(*zip(*evaluation), "o-", label="eval loss")
    axis.set_xlabel("step")
    axis.set_ylabel("loss")
    axis.set_title(title)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path)
    pyplot.close(figure)
    return True
