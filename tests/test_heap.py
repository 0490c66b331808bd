"""The heap trim between step phases gives freed memory back only when enough is free."""

from __future__ import annotations

from pathlib import Path

import pytest

from grpo_cli.perf import heap

glibc = pytest.mark.skipif(heap.free_bytes() is None, reason="needs glibc's mallinfo2/malloc_trim")


@glibc
def test_trim_returns_free_heap_memory_to_the_os():
    import torch

    keep = [torch.empty(64 * 1024, dtype=torch.uint8) for _ in range(2048)]  # 128 MiB of 64 KiB heap blocks
    for block in keep:
        block.fill_(1)  # resident
    del keep[::2]  # 64 MiB free, fragmented between live blocks: only a trim returns it
    assert heap.free_bytes() >= 60 << 20
    rss = _rss_mb()
    assert heap.trim(min_free=32 << 20)
    assert rss - _rss_mb() >= 32  # MB back to the OS
    assert not heap.trim(min_free=1 << 62)  # not enough free: left alone


def test_trim_is_a_no_op_off_glibc(monkeypatch):
    monkeypatch.setattr(heap, "_libc", lambda: None)
    assert heap.free_bytes() is None
    assert heap.trim(min_free=0) is False


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_only_models_of_64_mib_or_more_are_worth_trimming():
    import torch

    assert not heap.worth_trimming(torch.nn.Linear(1024, 1024))  # 4 MiB
    assert heap.worth_trimming(torch.nn.Linear(4096, 4096))  # 64 MiB
