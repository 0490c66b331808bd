"""What the benchmarks that run TRL share: the reward function TRL calls, our scoring stage behind it, so
both trainers are paid by the same verifiers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def math_reward(verifiers: list[Any]) -> Callable[..., list[float]]:
    """A TRL reward function over a dataset with `answer` and `id` columns: each completion scored by our
    scoring stage with the given opened verifiers."""
    from grpo_cli.pipeline.scoring import score

    def math_reward(
        prompts: list[str], completions: list[str], answer: list[str], id: list[Any], **_: Any
    ) -> list[float]:
        records = [
            {"id": i, "prompt": p, "answer": a, "completion": c} for i, p, a, c in zip(id, prompts, answer, completions)
        ]
        return [r["reward"] for r in score(records, verifiers)[0]]

    return math_reward  # TRL names the reward's metrics after the function
