"""The `Sampler` interface: every backend (transformers now, vLLM later) generates through it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1
    """Completions per prompt."""
    temperature: float = 1.0
    """0 is greedy; log-probs are those of the distribution sampled from (logits / temperature)."""
    top_p: float = 1.0
    max_new_tokens: int = 64
    seed: int = 0
    prompt_offset: int = 0
    """Index of the first prompt in the whole request, when a caller samples a share of it (one rank
    of several): completion j of prompt i draws from a random stream seeded by (seed,
    prompt_offset + i, j), so it does not depend on how the prompts are batched or shared out."""


@dataclass
class Completion:
    """One generated completion.

    prompt_ids: [P] the prompt's token ids, shared by the group.
    token_ids: [L] generated ids, the stop token included when finish_reason is `stop`.
    logprobs: [L] log-prob of each generated id under the sampling distribution (before top-p).
    """

    text: str
    prompt_ids: list[int]
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str  # "stop" | "length"


class Sampler(ABC):
    """Generates n completions for each prompt string (already templated)."""

    @abstractmethod
    def generate(
        self,
        prompts: list[str],
        params: SamplingParams,
        progress: Callable[[int], None] = lambda n: None,
    ) -> list[list[Completion]]:
        """Return, for each prompt in order, its `params.n` completions; `progress(k)` is called as
        k more sequences finish."""

    def sync_weights(self, model: Any) -> None:
        """Make the sampler generate from `model`'s current weights (a backend that holds its own
        copy of the weights reloads them here; the transformers backend shares the module)."""
