"""Eval results as a person reads them: base and result side by side, the change, and the gates.
Torch-free: the run's summary, `runner eval` and `runner runs` print them."""

from __future__ import annotations

from runner.manifest import EvalsRecord


def table(record: EvalsRecord, *, result_label: str = "trained", indent: str = "  ") -> list[str]:
    rows = [(f"{result.name}.{metric}", _number(score.base), _number(score.trained),
             _change(score.delta)) for result in record.results for metric, score in result.scores.items()]
    if not rows:
        return []
    width = max(len("eval"), *(len(row[0]) for row in rows))
    lines = [f"{indent}{'eval':<{width}}  {'base':>9}  {result_label:>9}  {'change':>8}"]
    lines += [f"{indent}{name:<{width}}  {base:>9}  {trained:>9}  {change:>8}" for name, base, trained, change in rows]
    lines += [f"{indent}note: {result.name}: {note}" for result in record.results for note in result.notes[:3]]
    cached = [result.name for result in record.results if result.base_cached]
    if cached:
        lines.append(f"{indent}(base results of {', '.join(cached)} from runner's cache)")
    if record.gates:
        passed = sum(gate.passed for gate in record.gates)
        lines.append(f"{indent}gates: {passed} of {len(record.gates)} passed")
        for gate in record.gates:
            needed = f"; needed {gate.threshold:.4g}" if gate.threshold is not None else ""
            why = f"; {gate.reason}" if gate.reason else ""
            lines.append(f"{indent}  {'passed' if gate.passed else 'MISSED'}  {gate.condition}  "
                         f"({_number(gate.value).strip()}{needed}{why})")
    if record.best is not None:
        lines.append(f"{indent}best by {record.best.metric}: {record.best.value:.4g} at step {record.best.step} "
                     f"({record.best.path}/)")
    return lines


def headline(record: EvalsRecord | None) -> str:
    """One cell for `runner runs`: the gates' verdict, else the first score base -> result."""
    if record is None or not record.results:
        return "-"
    if record.gates:
        passed = sum(gate.passed for gate in record.gates)
        return f"gates {passed}/{len(record.gates)}" + ("" if record.passed else " MISSED")
    result = record.results[0]
    metric, score = next(iter(result.scores.items()), (None, None))
    if score is None:
        return "-"
    return f"{result.name}.{metric} {_number(score.base).strip()}->{_number(score.trained).strip()}"


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if abs(value) < 1000 else f"{value:.4g}"


def _change(value: float | None) -> str:
    return "-" if value is None else f"{value:+.3f}"
