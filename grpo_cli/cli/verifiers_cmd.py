"""`grpo verifiers list`."""

from __future__ import annotations

import typer

app = typer.Typer(help="Verifier plugins (entry-point group grpo.verifiers).", no_args_is_help=True)


@app.command("list")
def list_verifiers() -> None:
    """Show every registered verifier, the package it comes from, and whether it loads."""
    from rich.console import Console
    from rich.table import Table

    from grpo_cli.plugins import discover

    table = Table("name", "package", "target", "status")
    for p in discover():
        status = "[green]ok[/green]" if p.status == "ok" else f"[red]error[/red]: {p.error}"
        table.add_row(p.name, p.package, p.target, status)
    Console().print(table)
