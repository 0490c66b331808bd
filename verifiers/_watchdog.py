"""Run a function on items in worker processes, each item bounded by a wall-time limit.

A worker that overruns is killed (SIGKILL) and replaced; its item gets a timeout outcome. No signals
are used in the calling process, so this works off the main thread and beside torch's threads.
Workers are `spawn`ed (never forked from a process that may hold threads or a CUDA context), started
on first use, reused across calls, and killed by `close()`.

`fn` must be picklable by reference: a function defined at the top level of an importable module.
As with any spawn-based pool, a script that uses this must guard its entry point with
`if __name__ == "__main__":` (the `grpo` command and pytest do).
"""

from __future__ import annotations

import importlib
import multiprocessing
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

_CONTEXT = multiprocessing.get_context("spawn")


@dataclass(frozen=True)
class Outcome:
    """What happened to one item: `value` when it returned, else `error` (and `timed_out`)."""

    value: Any = None
    error: str | None = None
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


def _worker_main(conn: Connection, memory_bytes: int | None, preload: Sequence[str]) -> None:
    """Worker loop: receive `(fn, item)`, send back `(True, value)` or `(False, error)`."""
    # Ctrl-C reaches the whole terminal process group: the parent handles it (and kills us), so a
    # worker must not print its own KeyboardInterrupt traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if memory_bytes:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    for module in preload:
        importlib.import_module(module)
    conn.send("ready")
    while True:
        try:
            fn, item = conn.recv()
        except EOFError:  # the parent closed its end or died
            return
        try:
            reply = (True, fn(item))
        except MemoryError:
            reply = (False, "MemoryError: over the worker's memory limit")
        except Exception as exc:  # reported to the caller as this item's error
            reply = (False, f"{type(exc).__name__}: {exc}")
        try:
            conn.send(reply)
        except Exception as exc:  # an unpicklable return value
            conn.send((False, f"could not send the result back: {type(exc).__name__}: {exc}"))


class _Worker:
    def __init__(self, memory_bytes: int | None, preload: Sequence[str], start_timeout: float) -> None:
        self.conn, child = _CONTEXT.Pipe()
        self.process = _CONTEXT.Process(target=_worker_main, args=(child, memory_bytes, tuple(preload)), daemon=True)
        # Ctrl-C while the child is being started would leave it reading its start-up data from a
        # parent that is gone (a traceback on the terminal): SIGINT waits until it is started.
        masked = threading.current_thread() is threading.main_thread() and hasattr(signal, "pthread_sigmask")
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT}) if masked else None
        try:
            self.process.start()
        finally:
            if masked:
                signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        child.close()
        wait([self.conn, self.process.sentinel], timeout=start_timeout)  # returns early if it dies
        if not self.conn.poll() or self.conn.recv() != "ready":
            self.kill()
            raise RuntimeError(
                f"a watchdog worker failed to start within {start_timeout:g} s (exit code {self.process.exitcode});"
                " a script that uses it must guard its entry point with `if __name__ == '__main__':`"
            )

    def kill(self) -> None:
        self.process.kill()
        self.process.join()
        self.conn.close()


class Watchdog:
    """A pool of `workers` processes; `map(fn, items, timeout)` returns one `Outcome` per item.

    memory_mb: address-space limit (RLIMIT_AS) in each worker, or None for no limit.
    preload: modules each worker imports at start, so imports do not count against item timeouts.
    Calls are serialized: one `map` at a time per watchdog (a lock), safe from any thread.
    """

    def __init__(
        self,
        workers: int = 1,
        memory_mb: int | None = None,
        preload: Sequence[str] = (),
        start_timeout: float = 60.0,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.size = workers
        self.memory_bytes = memory_mb * 2**20 if memory_mb else None
        self.preload = tuple(preload)
        self.start_timeout = start_timeout
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any], timeout: float) -> list[Outcome]:
        with self._lock:
            return self._map(fn, items, timeout)

    def _map(self, fn: Callable[[Any], Any], items: Sequence[Any], timeout: float) -> list[Outcome]:
        outcomes: list[Outcome | None] = [None] * len(items)
        pending = deque(enumerate(items))
        busy: dict[Connection, tuple[_Worker, int, float]] = {}  # conn -> (worker, item index, deadline)
        try:
            self._run(fn, pending, busy, outcomes, timeout)
        finally:  # an interrupt or a failed start: workers still busy are killed, not leaked
            for worker, _, _ in busy.values():
                worker.kill()
        return outcomes  # type: ignore[return-value]

    def _run(
        self,
        fn: Callable[[Any], Any],
        pending: deque[tuple[int, Any]],
        busy: dict[Connection, tuple[_Worker, int, float]],
        outcomes: list[Outcome | None],
        timeout: float,
    ) -> None:
        while pending or busy:
            while pending and len(busy) < self.size:
                worker = (
                    self._idle.pop() if self._idle else _Worker(self.memory_bytes, self.preload, self.start_timeout)
                )
                index, item = pending.popleft()
                try:
                    worker.conn.send((fn, item))
                except Exception as exc:  # unpicklable item, or a worker that died while idle
                    outcomes[index] = Outcome(error=f"could not send the item to a worker: {type(exc).__name__}: {exc}")
                    worker.kill()
                    continue
                busy[worker.conn] = (worker, index, time.monotonic() + timeout)
            if not busy:
                continue
            next_deadline = min(deadline for _, _, deadline in busy.values())
            for conn in wait(list(busy), timeout=max(0.0, next_deadline - time.monotonic())):
                worker, index, _ = busy.pop(conn)  # type: ignore[arg-type]
                try:
                    ok, payload = worker.conn.recv()
                except (EOFError, OSError):
                    outcomes[index] = Outcome(error=f"worker died (exit code {worker.process.exitcode})")
                    worker.kill()
                    continue
                outcomes[index] = Outcome(value=payload) if ok else Outcome(error=payload)
                self._idle.append(worker)
            now = time.monotonic()
            for conn, (worker, index, deadline) in list(busy.items()):
                if now >= deadline:
                    del busy[conn]
                    worker.kill()
                    outcomes[index] = Outcome(error=f"timed out after {timeout:g} s", timed_out=True)

    def close(self) -> None:
        """Kill every worker; a later `map` starts fresh ones."""
        with self._lock:
            while self._idle:
                self._idle.pop().kill()

    def __enter__(self) -> Watchdog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
