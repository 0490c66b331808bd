"""Options shared by several subcommands, and turning them into a resolved Config."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from grpo_cli.config import Config, default_value, load_config


def cfg_help(text: str, key: str) -> str:
    """Help text of an option backed by config key `key`, with the default the run would use."""
    return f"{text} [config: {key}; default: {default_value(key)}]"


PresetOpt = Annotated[
    str | None,
    typer.Option("--preset", "-p", help="Preset name (see `grpo presets list`) or a YAML file. Default: tiny."),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        "-s",
        metavar="KEY=VALUE",
        help="Override a config key, e.g. --set sampling.temperature=0.7 (repeatable).",
    ),
]
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model", "-m", help=cfg_help("Local Hugging Face model folder, or `tiny` (the shipped model).", "model.path")
    ),
]
DATA_HELP = "Problems file (.jsonl/.json/.csv/.parquet), arith:train|test, hf:NAME[:SPLIT], or rg:TASK[?size=N&seed=S]."
DataOpt = Annotated[str | None, typer.Option("--data", "-d", help=cfg_help(DATA_HELP, "data.eval"))]
TrainDataOpt = Annotated[str | None, typer.Option("--data", "-d", help=cfg_help(DATA_HELP, "data.train"))]
SeedOpt = Annotated[int | None, typer.Option("--seed", help=cfg_help("Random seed.", "seed"))]
ThreadsOpt = Annotated[
    int | None,
    typer.Option(
        "--threads", help=cfg_help("Torch CPU threads; 0 = the cores not busy with other work.", "model.threads")
    ),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Only print the final summary.")]
VerifierOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--verifier",
        "-v",
        metavar="NAME[:KEY=VALUE,...]",
        help=cfg_help(
            "A verifier (repeatable); weight=, failure_value= and hang_timeout= set those, other keys are the "
            "verifier's options. Replaces the config's verifiers.",
            "verifiers",
        ),
    ),
]


def verifier_specs(verifier: list[str] | None) -> list[dict[str, Any]] | None:
    """`--verifier` options as config mappings (merged into the config dict before it is built), or None."""
    from grpo_cli.config import config_to_dict, parse_verifier_option

    return [config_to_dict(parse_verifier_option(v)) for v in verifier] if verifier else None


def resolve_config(preset: str | None, sets: list[str] | None, **overrides: Any) -> Config:
    """Explicit CLI options are given as dotted keys (`sampling.n=4`); None means not given."""
    return load_config(preset, sets, {k.replace("__", "."): v for k, v in overrides.items()})


def path_or_stdout(path: Path) -> Path | None:
    return None if str(path) == "-" else path
