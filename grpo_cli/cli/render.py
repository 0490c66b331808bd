"""What the commands print at the end: tables and one-line summaries of a core function's result."""

from __future__ import annotations

from typing import Any

from grpo_cli.report import Reporter


def before_after_table(before: dict[str, Any], after: dict[str, Any]) -> Any:
    """The held-out evaluation before and after training: accuracy, maj@k and pass@k, in percent."""
    from rich.table import Table

    table = Table(title=f"held-out evaluation ({before['problems']} problems x {before['n']} samples)")
    for col in ("", "accuracy", *(f"{m}@{k}" for m in ("maj", "pass") for k in before["pass@k"])):
        table.add_column(col, justify="right")
    for label, r in (("before", before), ("after", after)):
        table.add_row(
            label,
            f"{100 * r['accuracy']:.1f}",
            *(f"{100 * r[m + '@k'][k]:.1f}" for m in ("maj", "pass") for k in r["pass@k"]),
        )
    return table


def report_training(report: Reporter, result: Any) -> None:
    """`grpo train`'s closing lines for a `TrainResult`: the before/after table when both ran, and
    where the last checkpoint is."""
    done = f"trained {result.steps_done} steps -> {result.last_checkpoint}"
    if not (result.before and result.after):
        report.summary(done)
        return
    report.table(before_after_table(result.before, result.after))
    before, after = 100 * result.before["accuracy"], 100 * result.after["accuracy"]
    report.summary(f"{done}; held-out accuracy {before:.1f}% -> {after:.1f}% ({after - before:+.1f} points)")


def stage_listing(configs: list[tuple[str, Any]]) -> str:
    """Each stage's resolved config under a `# stage N: NAME` heading (`--dry-run`, `presets show --resolved`)."""
    from grpo_cli.config import dump_config

    return "".join(f"# stage {i + 1}: {name}\n{dump_config(cfg)}" for i, (name, cfg) in enumerate(configs))


def _percent(result: dict[str, Any] | None) -> str:
    return f"{100 * result['accuracy']:.1f}%" if result else "-"


def report_stages(report: Reporter, summary: Any) -> None:
    """A staged `grpo train`'s closing lines for a `StagesSummary`: per stage its steps, wall time and
    held-out accuracy after it; then the whole run's before -> after and wall time."""
    from rich.table import Table

    table = Table(title="stages")
    for col in ("stage", "steps", "wall time", "accuracy after", "checkpoint"):
        table.add_column(col, justify="left" if col in ("stage", "checkpoint") else "right")
    for i, s in enumerate(summary.stages):
        table.add_row(f"{i + 1}: {s.name}", str(s.steps), f"{s.wall_time_s:.1f}s", _percent(s.after), s.checkpoint)
    report.table(table)
    report.summary(
        f"{len(summary.stages)} stages -> {summary.stages[-1].checkpoint}; held-out accuracy "
        f"{_percent(summary.before)} -> {_percent(summary.after)}; {summary.wall_time_s:.1f}s in all"
    )
