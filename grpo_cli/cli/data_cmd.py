"""`grpo data arith`: write the built-in arithmetic task to files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Built-in data sets.", no_args_is_help=True)


@app.command("arith")
def arith(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for train.jsonl and test.jsonl.")] = Path(
        "data/arith"
    ),
    seed: Annotated[int, typer.Option(help="Generator seed (0 gives the built-in splits).")] = 0,
    n_train: Annotated[int, typer.Option(help="Training problems.")] = 20000,
    n_test: Annotated[int, typer.Option(help="Held-out problems.")] = 200,
) -> None:
    """Write the synthetic multi-step arithmetic task (one equation per line, `#### N` answers)."""
    from grpo_cli.builtin.arith import write_splits

    paths = write_splits(out, seed=seed, n_train=n_train, n_test=n_test)
    for split, path in paths.items():
        typer.echo(f"{split}: {path}")
