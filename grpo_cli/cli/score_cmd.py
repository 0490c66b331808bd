"""`grpo score`: sample records in, scored records out (rewards per verifier and their weighted sum)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from grpo_cli.cli.common import PresetOpt, QuietOpt, SetOpt, path_or_stdout, resolve_config

VerifierOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--verifier",
        "-v",
        help=(
            "NAME[:key=value,...] (repeatable); weight=, failure_value= and hang_timeout= set those, other "
            "keys are the verifier's options. Replaces the config's verifiers."
        ),
    ),
]


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
    from grpo_cli.config import config_to_dict, parse_verifier_option, write_config_beside
    from grpo_cli.pipeline.data import read_jsonl, write_jsonl
    from grpo_cli.pipeline.evaluate import score_records
    from grpo_cli.report import Reporter

    # As plain mappings: overrides are merged into the config dict before it is built.
    specs = [config_to_dict(parse_verifier_option(v)) for v in verifier] if verifier else None
    cfg = resolve_config(preset, set_, verifiers=specs)
    report = Reporter.console(quiet)
    rows = read_jsonl(samples)
    for i, row in enumerate(rows):
        if "completion" not in row:
            from grpo_cli.errors import UserError

            raise UserError(f"{samples} line {i + 1}: missing field 'completion'; fields present: {', '.join(row)}")
    scored, summary = score_records(rows, cfg, report)
    target = path_or_stdout(out)
    write_jsonl(target, scored)
    if target is not None:
        write_config_beside(cfg, target)
    report.summary(f"scored {len(scored)} samples: {summary.describe()} -> {out}")
