"""`grpo presets list|show|copy`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from grpo_cli.errors import UserError

app = typer.Typer(help="List, show and copy the YAML presets.", no_args_is_help=True)


def description(name: str, text: str) -> str:
    """A preset's one-line summary: its first comment line (a whole sentence), less its `name:`."""
    for line in text.splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip().removeprefix(f"{name}:").strip()
    return ""


@app.command("list")
def list_presets() -> None:
    """List the built-in presets with their one-line description."""
    from grpo_cli.config import preset_names, preset_text

    for name in preset_names():
        typer.echo(f"{name:<14} {description(name, preset_text(name)[1])}")


@app.command("show")
def show(
    name: Annotated[str, typer.Argument(help="Preset name or YAML file.")] = "tiny",
    resolved: Annotated[
        bool, typer.Option("--resolved", help="Print the fully resolved config instead of the file.")
    ] = False,
    docs: Annotated[
        bool, typer.Option("--docs", help="Print every config key with its type and documentation.")
    ] = False,
) -> None:
    """Print a preset file, the config it resolves to, or every key's documentation."""
    from grpo_cli.config import documented_keys, dump_config, load_config, preset_text

    if docs:
        for key, tp, doc in documented_keys():
            typer.echo(f"{key} ({tp}): {doc}")
        return
    if resolved:
        from grpo_cli.config import config_layers, stage_configs

        layers = config_layers(name)
        if layers.stages:  # each stage as it would train
            from grpo_cli.cli.render import stage_listing
            from grpo_cli.training.stages import chain

            typer.echo(stage_listing(chain(stage_configs(layers))), nl=False)
            return
        typer.echo(dump_config(load_config(name)), nl=False)
        return
    typer.echo(preset_text(name)[1], nl=False)


@app.command("copy")
def copy(
    name: Annotated[str, typer.Argument(help="Preset to copy.")],
    dest: Annotated[Path, typer.Argument(help="Destination YAML file.")],
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Copy a preset to a file you can edit.

    Then use it with --preset FILE."""
    from grpo_cli.config import preset_text

    text = preset_text(name)[1]
    if dest.is_dir():
        raise UserError(f"{dest} is a directory; give the YAML file to write")
    if dest.exists() and not force:
        raise UserError(f"{dest} exists; use --force to overwrite")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(text, encoding="utf-8")
    typer.echo(f"wrote {dest}")
