"""Options shared by several subcommands, and turning them into a resolved Config."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from grpo_cli.config import Config, load_config

PresetOpt = Annotated[
    str | None,
    typer.Option("--preset", "-p", help="Preset name (see `grpo presets list`) or a YAML file. Default: tiny."),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a config key, e.g. --set sampling.temperature=0.7 (repeatable)."),
]
ModelOpt = Annotated[
    str | None, typer.Option("--model", "-m", help="Local Hugging Face model folder, or `tiny` (the shipped model).")
]
DataOpt = Annotated[
    str | None,
    typer.Option(
        "--data",
        "-d",
        help="Problems file (.jsonl/.json/.csv/.parquet), arith:train|test, hf:NAME[:SPLIT], rg:TASK[?size=N&seed=S].",
    ),
]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Random seed (config: seed).")]
ThreadsOpt = Annotated[
    int | None, typer.Option("--threads", help="Torch CPU threads; 0 = all cores (config: model.threads).")
]
VerifierOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--verifier",
        "-v",
        help=(
            "NAME[:key=value,...] (repeatable); weight=, failure_value= and hang_timeout= set those, other keys"
            " are the verifier's options. Replaces the config's verifiers."
        ),
    ),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Only print the final summary.")]


def resolve_config(preset: str | None, sets: list[str] | None, **overrides: Any) -> Config:
    """Explicit CLI options are given as dotted keys (`sampling.n=4`); None means not given."""
    return load_config(preset, sets, {k.replace("__", "."): v for k, v in overrides.items()})


def path_or_stdout(path: Path) -> Path | None:
    return None if str(path) == "-" else path


def verifier_specs(options: list[str] | None) -> list[dict[str, Any]] | None:
    """`--verifier` values as config mappings (merged into the config dict before it is built)."""
    from grpo_cli.config import config_to_dict, parse_verifier_option

    return [config_to_dict(parse_verifier_option(v)) for v in options] if options else None
