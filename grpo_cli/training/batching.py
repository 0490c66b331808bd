"""Micro-batch planning: which sequences share a forward/backward pass (docs/design.md, "Algorithm").

Sequences are grouped by length (longest first) and each micro-batch is cut to its own longest
sequence, so a batch of mixed lengths pays for little padding. A micro-batch holds at most
`max_rows` sequences and, when `max_tokens` is set, at most `max_tokens` padded positions (rows x
its longest length): memory per pass then follows the token count, not the worst-case length. The
loss does not depend on the grouping (see `loss.micro_batch_weight`), so any plan gives the same
update up to float rounding.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["padded_tokens", "plan_micro_batches"]


def plan_micro_batches(lengths: Sequence[int], max_rows: int, max_tokens: int = 0) -> list[list[int]]:
    """Positions into `lengths`, grouped into micro-batches.

    lengths: real (unpadded) length of each sequence. max_rows >= 1: most sequences per
    micro-batch. max_tokens: most `rows x longest length` per micro-batch; 0 means no token budget
    (then only rows are capped, and sequences are still sorted by length). A sequence longer than
    the budget gets a micro-batch of its own. Longest first, ties in input order, so the plan is
    deterministic and the largest pass (the memory peak) comes first.
    """
    if max_rows < 1:
        raise ValueError(f"max_rows must be >= 1, got {max_rows}")
    if max_tokens < 0:
        raise ValueError(f"max_tokens must be >= 0, got {max_tokens}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    plan: list[list[int]] = []
    for i in order:
        current = plan[-1] if plan else None
        # Sorted longest first: the micro-batch's width is its first sequence's length.
        fits = (
            current is not None
            and len(current) < max_rows
            and (not max_tokens or (len(current) + 1) * lengths[current[0]] <= max_tokens)
        )
        if fits:
            current.append(i)
        else:
            plan.append([i])
    return plan


def padded_tokens(lengths: Sequence[int], plan: list[list[int]]) -> int:
    """Positions the plan computes (padding included): sum over micro-batches of rows x width."""
    return sum(len(mb) * max(lengths[i] for i in mb) for mb in plan)
