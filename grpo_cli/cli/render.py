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
