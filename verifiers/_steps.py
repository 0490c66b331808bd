"""What a process-reward backend returns per sample; shared by the `prm` verifier and its backends,
so that neither imports the other."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class StepScores:
    """A backend's judgement of one sample: one reward per step (None: nothing to score there)."""

    rewards: list[float | None]
    info: dict[str, Any] = field(default_factory=dict)
