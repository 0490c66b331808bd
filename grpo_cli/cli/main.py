"""`grpo`: the entry point. Subcommands live in one module each and call one core function."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from grpo_cli import __version__
from grpo_cli.cli import data_cmd, eval_cmd, model_cmd, presets_cmd, sample_cmd, score_cmd, train_cmd, verifiers_cmd
from grpo_cli.errors import UserError

app = typer.Typer(
    name="grpo",
    help="Train language models to reason with GRPO, rewarded by pluggable verifiers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"grpo {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Train language models to reason with GRPO, rewarded by pluggable verifiers."""


app.command("sample")(sample_cmd.sample)
app.command("score")(score_cmd.score)
app.command("eval")(eval_cmd.evaluate)
app.command("train")(train_cmd.train)
app.add_typer(presets_cmd.app, name="presets")
app.add_typer(verifiers_cmd.app, name="verifiers")
app.add_typer(data_cmd.app, name="data")
app.add_typer(model_cmd.app, name="model")


def run() -> None:
    """Console-script entry: bad input is one line on stderr and exit code 2, never a traceback."""
    try:
        app(prog_name="grpo")  # also under `python -m grpo_cli` and torchrun, so usage lines name the command
    except UserError as e:
        sys.stderr.write(f"error: {e}\n")
        sys.exit(2)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
