"""Learning-rate schedules: the multiplier of the peak learning rate at each optimizer step."""

from __future__ import annotations

import math
from collections.abc import Callable

from grpo_cli.algorithms.registry import Registry

LR_SCHEDULES: Registry[Callable[[float], float]] = Registry("learning-rate schedule")
"""Name -> the multiplier after warmup as a function of progress in [0, 1]."""


@LR_SCHEDULES.register("constant")
def _constant(progress: float) -> float:
    return 1.0


@LR_SCHEDULES.register("linear")
def _linear(progress: float) -> float:
    return 1.0 - progress


@LR_SCHEDULES.register("cosine")
def _cosine(progress: float) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def lr_multiplier(i: int, warmup: int, total: int, schedule: str) -> float:
    """The learning rate of optimizer step `i` (0-based) as a fraction of the peak: linear warmup over
    `warmup` steps, then the schedule from 1 at step `warmup` toward 0 at step `total` (the last
    step, `total - 1`, still learns a little)."""
    decay = LR_SCHEDULES[schedule]
    if i < warmup:
        return (i + 1) / warmup
    if total <= warmup:
        return 1.0
    return decay(min(1.0, (i - warmup) / (total - warmup)))
