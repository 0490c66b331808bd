"""The `reasoning_gym` verifier: a reasoning-gym task scores its own answers (`score_answer`).

A sample names its task by `rg_task` (written by the `rg:` data source) or, in files that
reasoning-gym itself wrote, by `metadata.source_dataset`; `rg_config` (optional) rebuilds the task
with the config the problem was made with, since some scorers read it. Needs the `rg` extra.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from grpo_verifiers.base import Verdict, Verifier
from grpo_verifiers.math import EXTRACTORS as MATH_EXTRACTORS

_ANSWER_TAG = re.compile(r"<answer>\s?(.*?)\s?</answer>", re.DOTALL)


def _answer_tag(text: str) -> str | None:
    """The last `<answer>...</answer>` (reasoning-gym's own prompts ask for it)."""
    found = _ANSWER_TAG.findall(text)
    return found[-1].strip() if found else None


def _last_line(text: str) -> str | None:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else None


def _whole(text: str) -> str | None:
    return text.strip() or None


EXTRACTORS = {
    "answer_tag": _answer_tag,
    "boxed": MATH_EXTRACTORS["boxed"],
    "hash": MATH_EXTRACTORS["hash"],
    "last_line": _last_line,
    "whole": _whole,
}
DEFAULT_EXTRACT = ("answer_tag", "boxed", "hash", "last_line")


class ReasoningGymVerifier(Verifier):
    """The task's own `score_answer(extracted answer, entry)`, a reward in [0, 1].

    extract: how the answer is taken from the completion, methods tried in order (a list or a
        string separated by `|`, commas or spaces): answer_tag (`<answer>...</answer>`), boxed,
        hash (`#### x`), last_line, whole (the stripped completion). When none finds one the task
        scores None (most give 0).
    """

    name = "reasoning_gym"

    def __init__(self, *, extract: Sequence[str] | str = DEFAULT_EXTRACT) -> None:
        try:
            import reasoning_gym  # noqa: F401  (fail at construction, with the install hint)
        except ImportError:
            raise ValueError("needs the reasoning-gym package: pip install 'grpo-cli[rg]'") from None
        if isinstance(extract, str):
            extract = [m for m in re.split(r"[\s,|]+", extract) if m]
        unknown = [m for m in extract if m not in EXTRACTORS]
        if unknown or not extract:
            raise ValueError(f"extract must list some of {list(EXTRACTORS)}, got {list(extract)}")
        self.extract = tuple(extract)
        self._tasks: dict[str, Any] = {}

    def _task(self, name: str, config: dict[str, Any]) -> Any:
        """The task's dataset object, one per (task, config), built at size 1: only its scorer is used."""
        key = name + json.dumps(config, sort_keys=True)
        if key not in self._tasks:
            import reasoning_gym

            self._tasks[key] = reasoning_gym.create_dataset(name, size=1, seed=0, **config)
        return self._tasks[key]

    def verify(self, samples: list[dict[str, Any]]) -> list[Verdict]:
        out = []
        for sample in samples:
            metadata = sample.get("metadata") if isinstance(sample.get("metadata"), dict) else {}
            task = sample.get("rg_task") or metadata.get("source_dataset")
            if not task:
                out.append(Verdict(None, info={"reason": "not a reasoning-gym problem (no rg_task or metadata)"}))
                continue
            completion = str(sample.get("completion", ""))
            answer = next((a for a in (EXTRACTORS[m](completion) for m in self.extract) if a is not None), None)
            entry = {"question": sample.get("prompt"), "answer": sample.get("answer"), "metadata": metadata}
            reward = self._task(task, sample.get("rg_config") or {}).score_answer(answer, entry)
            out.append(Verdict(float(reward), info={"extracted": answer, "canonical": answer, "task": task}))
        return out
