"""Giving freed heap memory back to the operating system between the phases of a step.

glibc's malloc keeps the pages of freed blocks inside its heap for reuse. A step frees and
reallocates tensors of every size (sampling's logits, the reference pass, each micro-batch's
activations), so by the time a micro-batch's forward and backward reach their high-water mark, the
process also holds the free but still resident leftovers of earlier phases. `trim()` before the
reference pass and each micro-batch hands those pages back (malloc_trim), when there are enough of
them to matter and the model is large enough (`worth_trimming`): the pages fault back in,
zero-filled, on next use. Measured with benchmarks/step.py (`--ablate trim`): on the 54M benchmark
model 87 MB less peak RSS per step at no measurable time; on the shipped 1M model, whose
micro-batches reuse the free heap exactly, trimming saved nothing and cost ~10% of the step.
Serving large blocks with mmap instead (M_MMAP_THRESHOLD) saves a little more memory but pays a
page fault per page on every allocation: +25% step time on the 54M model.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from functools import cache
from typing import Any

MIN_FREE_BYTES = 64 << 20
"""Trim only when the heap holds at least this much free memory (64 MiB)."""

MIN_MODEL_BYTES = 64 << 20
"""Trim during a step only for models whose parameters take at least this much memory (64 MiB)."""


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


@cache
def _libc() -> Any | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallinfo2.restype = _MallInfo2  # glibc >= 2.33
        libc.malloc_trim  # noqa: B018  (AttributeError where missing)
        return libc
    except (OSError, AttributeError):  # another C library (musl) or an old glibc: nothing to do
        return None


def free_bytes() -> int | None:
    """Bytes the heap holds in free blocks (glibc's mallinfo2().fordblks), or None off glibc."""
    libc = _libc()
    return None if libc is None else int(libc.mallinfo2().fordblks)


def worth_trimming(model: Any) -> bool:
    """Whether a step of `model` frees enough memory in large blocks for trimming to lower its peak:
    its parameters take at least MIN_MODEL_BYTES."""
    return sum(p.numel() * p.element_size() for p in model.parameters()) >= MIN_MODEL_BYTES


def trim(min_free: int = MIN_FREE_BYTES) -> bool:
    """Return the heap's free pages to the OS when it holds at least `min_free` bytes of free
    blocks (glibc); whether it trimmed."""
    free = free_bytes()
    if free is None or free < min_free:
        return False
    _libc().malloc_trim(0)
    return True
