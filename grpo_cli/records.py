"""The records that flow between the stages (docs/design.md, "Records"), as JSONL objects.

These are `TypedDict`s: at run time a record is a plain dict, and fields beyond the ones named here
(a dataset's own columns, a plugin's extras) are carried through every stage untouched. The
required keys are listed first; `total=False` classes add the optional ones.
"""

from __future__ import annotations

from typing import Any, TypedDict


class ChatMessage(TypedDict):
    role: str
    content: str


Prompt = str | list[ChatMessage]


class _ProblemKeys(TypedDict):
    id: Any
    prompt: Prompt


class Problem(_ProblemKeys, total=False):
    """A problem: `id`, `prompt`; `answer` (the gold, any string) unless the algorithm needs none;
    `tests` for code; `verifier` (a name or list of names) routes the row to those verifiers."""

    answer: str
    tests: Any
    verifier: str | list[str]


class _SampleKeys(Problem):
    completion: str
    group: int
    index: int
    finish_reason: str
    completion_tokens: int


class Sample(_SampleKeys, total=False):
    """A problem plus one completion: `group` is the problem's index, `index` its place (0..G-1) in
    the group; `finish_reason` is `stop` or `length`; `token_logprobs` the sampler's, if kept."""

    token_logprobs: list[float]


class Step(TypedDict):
    end: int
    reward: float


class _ScoredKeys(Sample):
    reward: float
    rewards: dict[str, float | None]
    info: dict[str, Any]


class ScoredSample(_ScoredKeys, total=False):
    """A sample plus `reward` (the weighted sum), `rewards` (per verifier; None where one did not
    apply), `info` (per verifier) and, from a process verifier, `steps` (`end`: a character offset
    into the completion, exclusive)."""

    steps: list[Step]


class Rollout(ScoredSample, total=False):
    """A scored sample as the trainer wrote it to rollouts/step-NNNNNN.jsonl: `step` (1-based) and
    `advantage` (the completion's; its token mean under process advantages; None for a group that
    dynamic sampling dropped). `group` is numbered across the whole step."""

    step: int
    advantage: float | None
