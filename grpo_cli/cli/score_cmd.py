"""`grpo score`: sample records in, scored records out (rewards per verifier and their weighted sum)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from grpo_cli.cli.common import PresetOpt, QuietOpt, SetOpt, VerifierOpt, path_or_stdout, resolve_config, verifier_specs


def score(
    samples: Annotated[Path, typer.Argument(help="Samples JSONL (from `grpo sample`).")] = Path("samples.jsonl"),
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Scored JSONL (- for stdout). The resolved config is written beside it.")
    ] = Path("scored.jsonl"),
    verifier: VerifierOpt = None,
    preset: PresetOpt = None,
    set_: SetOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Score completions with the configured verifiers."""
    from grpo_cli.config import write_config_beside
    from grpo_cli.pipeline.data import check_writable, read_jsonl, write_jsonl
    from grpo_cli.pipeline.evaluate import score_records
    from grpo_cli.report import Reporter

    cfg = resolve_config(preset, set_, verifiers=verifier_specs(verifier))
    target = path_or_stdout(out)
    if target is not None:
        check_writable(target, "--out")
    report = Reporter.console(quiet)
    rows = read_jsonl(samples, warn=report.warn)
    if not rows:
        from grpo_cli.errors import UserError

        raise UserError(f"{samples}: no samples in the file (expected JSONL records, one per line, from `grpo sample`)")
    for i, row in enumerate(rows):
        if "completion" not in row:
            from grpo_cli.errors import UserError

            raise UserError(f"{samples} line {i + 1}: missing field 'completion'; fields present: {', '.join(row)}")
    scored, summary = score_records(rows, cfg, report)
    write_jsonl(target, scored)
    if target is not None:
        write_config_beside(cfg, target)
    report.summary(f"scored {len(scored)} samples: {summary.describe()} -> {out}")
