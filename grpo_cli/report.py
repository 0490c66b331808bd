"""The one reporting object: the core talks to the user only through it (docs/design.md, "Data flow").

`Reporter()` is silent, so library use stays quiet; the CLI passes `Reporter.console(quiet=...)`,
which draws rich progress bars and logs on stderr (data goes to files or stdout).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


class Reporter:
    """Silent by default. `progress` yields a callable advancing the bar by n."""

    def __init__(self, console: Any = None, quiet: bool = False) -> None:
        self._console = console
        self.quiet = quiet

    @classmethod
    def console(cls, quiet: bool = False) -> Reporter:
        from rich.console import Console

        return cls(Console(stderr=True), quiet=quiet)

    def log(self, message: str) -> None:
        """A progress note; hidden with --quiet."""
        if self._console is not None and not self.quiet:
            self._console.print(message, highlight=False)

    def summary(self, message: str) -> None:
        """The one-line result of a command; shown even with --quiet."""
        if self._console is not None:
            self._console.print(message, highlight=False)

    def warn(self, message: str) -> None:
        if self._console is not None:
            self._console.print(f"[yellow]warning:[/yellow] {message}", highlight=False)

    def table(self, table: Any) -> None:
        """A rich Table; shown even with --quiet (it is the result)."""
        if self._console is not None:
            self._console.print(table)

    @property
    def interactive(self) -> bool:
        """True when progress bars are drawn live (a terminal); False when piped to a file or a
        batch scheduler's log, where only lines printed with `log` show a run is alive."""
        return self._console is not None and not self.quiet and bool(self._console.is_terminal)

    @contextmanager
    def progress(self, description: str, total: int | None) -> Iterator[Callable[..., None]]:
        """Yields `advance(n=1, status=None)`: moves the bar by n; `status` (a short text, e.g. the
        last step's reward and time) is shown after it."""
        if self._console is None or self.quiet:
            yield lambda n=1, status=None: None
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
            console=self._console,
            transient=False,
        ) as bar:
            task = bar.add_task(description, total=total, status="")

            def advance(n: int = 1, status: str | None = None) -> None:
                bar.update(task, advance=n, **({"status": status} if status is not None else {}))

            yield advance
