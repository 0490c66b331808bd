"""`answer_format`: a format reward for grpo. 1.0 (or `bonus`) when the completion is shaped the way
the task asks, else 0.0. It says nothing about whether the answer is right: pair it with `math`.

Options:
  style: `hash` (the last line is `#### <answer>`; the default), `boxed` (exactly one `\\boxed{...}`)
         or `r1` (`<think>...</think>` then `<answer>...</answer>` and nothing else).
  pattern: your own regular expression instead of a style; the whole completion, stripped of
         surrounding whitespace, must match it (`re.fullmatch`, `.` matches newlines).
  bonus: the reward for a match (default 1.0).
"""

from __future__ import annotations

import re
from numbers import Real
from typing import Any

from grpo_verifiers import Verdict, Verifier

STYLES = {
    "hash": r".*(?:^|\n)####[ \t]*\S[^\n]*",
    "boxed": r"(?:(?!\\boxed\{).)*\\boxed\{(?:(?!\\boxed\{).)*",
    "r1": r"<think>.*?</think>\s*<answer>.*?</answer>",
}


class AnswerFormatVerifier(Verifier):
    name = "answer_format"

    def __init__(self, style: str = "hash", pattern: str | None = None, bonus: float = 1.0) -> None:
        # Bad options raise ValueError/TypeError with one line: grpo shows it as the user's error.
        if pattern is None and style not in STYLES:
            raise ValueError(f"style must be one of {', '.join(STYLES)}, got {style!r}")
        if isinstance(bonus, bool) or not isinstance(bonus, Real):
            raise TypeError(f"bonus must be a number, got {bonus!r}")
        try:
            self.regex = re.compile(pattern if pattern is not None else STYLES[style], re.DOTALL)
        except re.error as exc:
            raise ValueError(f"pattern {pattern!r} is not a regular expression: {exc}") from None
        self.style = "pattern" if pattern is not None else style
        self.bonus = float(bonus)

    def verify(self, samples: list[dict[str, Any]]) -> list[Verdict]:
        # One Verdict per sample, in order; info is JSON-ready (it goes into the scored records).
        verdicts = []
        for sample in samples:
            matched = self.regex.fullmatch(str(sample.get("completion", "")).strip()) is not None
            verdicts.append(Verdict(self.bonus if matched else 0.0, info={"matched": matched, "style": self.style}))
        return verdicts
