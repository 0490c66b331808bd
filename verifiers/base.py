"""The verifier contract (docs/design.md, "Verifiers"): batch of samples in, one `Verdict` per sample out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Verdict:
    """What a verifier says about one sample.

    reward: the score, or None when the verifier does not apply to this sample.
    steps: optional process rewards, `[{"end": char offset in the completion, "reward": float}]`.
    info: free-form details; `extracted` (the answer found) and `canonical` (a key equal for
        equivalent answers, used by maj@k voting) by convention, `error` when something failed.
        `timeout: True` or `failed: True` (the verifier could not judge this sample, e.g. its
        server answered 500) make the sample a counted failure that gets `failure_value`.
    """

    reward: float | None
    steps: list[dict[str, float]] | None = None
    info: dict[str, Any] = field(default_factory=dict)


class Verifier:
    """Base class for verifiers. Subclasses take their options as keyword arguments.

    `verify` receives sample records (docs/design.md, "Records": the problem's fields such as `prompt`,
    `answer`, `tests`, plus `completion`) and returns exactly one `Verdict` per sample, in order.
    A verifier may raise or hang: the caller bounds it and costs only the affected samples.
    """

    name: str = ""

    def __init__(self, **options: Any) -> None:
        if options:
            raise TypeError(f"verifier {self.name or type(self).__name__!r} takes no options, got {sorted(options)}")

    def verify(self, samples: list[dict[str, Any]]) -> list[Verdict]:
        raise NotImplementedError

    def close(self) -> None:
        """Release worker processes or devices; called once when scoring ends."""
