"""The `prm` verifier: split a completion into steps and score each step (process supervision).

Steps (the `split` option): the non-empty segments of the completion between separators: newlines
(`line`), blank lines (`blank_line`) or a step tag such as Math-Shepherd's `ки` (`tag`). A step is
its segment without surrounding whitespace, and its `end` is an exclusive character offset:
`completion[start:end]` is the step's text, so its last visible character is at `end - 1`, the
convention of `grpo_cli.algorithms.advantages.char_to_token_ends`.

Backends score the steps (`backend`; a table, so a model-based backend sits beside the rule one):

- `rule` (the default) checks every equality a step states. Each `=` (not `<=`, `>=`, `!=`, `==`,
  `:=`, `=>`) compares the arithmetic written right before it with the arithmetic right after it,
  so `a = b = c` checks `a = b` and `b = c`, and GSM8K's `48/2 = <<48/2=24>>24` checks `48/2 = 24`.
  Plain arithmetic (integers, decimals, `1,234`, `+ - * / ^ ( )`, `\\times`, `\\cdot`, `\\div`, `$`)
  is evaluated exactly with fractions by the small parser below, never `eval`; a number (a power
  included, checked before it is built) over MAX_BITS bits, or a step over MAX_STEP_CHARS that
  contains `=`, is refused unevaluated. Anything else in
  the math (`\\frac`, `\\sqrt`, a fractional power) goes to sympy in a watchdog worker, bounded by
  `timeout` and `memory_mb`. A decimal written with d digits after the point may be the exact
  value rounded or truncated to d digits (`10/3 = 3.33`); everything else must be exact.
  A step scores 1.0 when every equality it states holds and 0.0 when one does not, or when one is
  refused for size or times out (an equality too big to check earns nothing).

  Neutral steps are skipped: a step that states no checkable equality (prose, `x = 5`, `2x + 3 = 7`,
  `half of 80 = 40`) gets no step entry, rather than a made-up score. In process advantages its
  tokens then share the advantage of the scored steps after it. An equality is not checkable when a
  side is empty, has variables (unless sympy finds the equality an identity), is cut
  out of a larger expression (`2x + 3`: the left side would start with `+`; `= 3x`), is a bare number
  after a word (`half of 80`: the word may be an operator), carries `%`, or does not parse.
  Arithmetic spelled in words around symbols (`3 times 4 + 1 = 13`) is misread as `4 + 1 = 13`.

- `hf` scores each step with a Hugging Face process reward model (`model=PATH`): Math-Shepherd style
  (`style=math_shepherd`, the default: the probability of `+` among `+`/`-` at the step tag after
  each step) or Qwen2.5-Math-PRM style (`style=qwen`: the class-1 probability of a 2-class per-token
  head at the `<extra_0>` separator after each step). Options and model shapes: `prm_hf.py`. A step
  gets the model's probability in [0, 1]; none is neutral, except one cut off by `max_length`.

Final answer (`final_answer`, on by default): the step holding the completion's final answer
(`#### N`, `\\boxed{}`, "the answer is", else the last number: the `math` verifier's extraction) is
also scored 1.0 or 0.0 by the `math` verifier's comparison with the gold `answer`, combined by `min`
with the step's own equalities; a completion without an answer gets 0.0 on its last step. With
split=tag the tags are blanked out before extraction, so `#### 23 ки` reads as 23. Samples
without a gold `answer` are scored on their equalities alone.

The outcome reward (`outcome`) is `min`, `last`, `product` or `mean` of the step rewards; 0.0 when
there are no scored steps. `info` holds `steps` (the count), `extracted` and `canonical` (the `math`
verifier's, so maj@k votes the same way when `prm` is the first verifier), `gold`, `final` (the
final-answer check, None when not made), `equations` (equalities judged), and `timeout`/`error`
when a sympy check or the answer comparison failed (the caller then gives the sample its failure
value, as for `math`).
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Protocol

from grpo_verifiers._steps import StepScores
from grpo_verifiers._watchdog import Watchdog
from grpo_verifiers.base import Verdict, Verifier
from grpo_verifiers.math import (
    DEFAULT_EXTRACT,
    MAX_SYMPY_CHARS,
    MathVerifier,
    canonical,
    extract_answer,
    normalize,
)

MAX_STEP_CHARS = 10_000
"""A step this long that contains `=` scores 0.0 without being parsed."""
MAX_BITS = 10_000
"""Largest numerator or denominator (in bits) the exact evaluator builds; beyond it the equality fails."""
MAX_DEPTH = 60
"""Deepest nesting of brackets, signs and powers the exact evaluator accepts (else: not checkable)."""
MAX_SYMPY_CLAIMS = 32
"""Sympy checks per sample; further equalities that need sympy score 0.0 (bounds a sample's time)."""


# -------------------------------------------------------------------- steps


@dataclass(frozen=True)
class Step:
    """One step: `completion[start:end] == text` (end exclusive), stripped of surrounding whitespace."""

    start: int
    end: int
    text: str


SPLITS: dict[str, Callable[[str], re.Pattern[str]]] = {
    "line": lambda tag: re.compile(r"\n"),
    "blank_line": lambda tag: re.compile(r"\n[^\S\n]*\n"),
    "tag": lambda tag: re.compile(re.escape(tag)),
}
"""Split mode -> the separator pattern (given the step tag)."""


def split_steps(completion: str, separator: re.Pattern[str]) -> list[Step]:
    """The non-empty segments of `completion` between matches of `separator`, whitespace-stripped."""
    steps, start = [], 0
    bounds = [(m.start(), m.end()) for m in separator.finditer(completion)] + [(len(completion), len(completion))]
    for sep_start, sep_end in bounds:
        segment = completion[start:sep_start]
        stripped = segment.strip()
        if stripped:
            first = start + len(segment) - len(segment.lstrip())
            steps.append(Step(first, first + len(stripped), stripped))
        start = sep_end
    return steps


OUTCOMES: dict[str, Callable[[list[float]], float]] = {
    "min": min,
    "last": lambda rewards: rewards[-1],
    "product": math.prod,
    "mean": statistics.fmean,
}
"""Outcome mode -> the sample's reward from its (non-empty) step rewards."""


# ----------------------------------------------------- exact arithmetic (in process)


class _NotCheckable(ValueError):
    """The text is not an arithmetic claim this checker understands: the equality is neutral."""


class _TooLarge(ValueError):
    """The arithmetic is well formed but too big to evaluate: the equality fails."""


class _NeedsSympy(ValueError):
    """Beyond exact rational arithmetic (a fractional power): ask sympy."""


_ARITH_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)|(?P<op>\*\*|[-+*/^()\[\]]))"
)


def _arith_tokens(text: str) -> list[str]:
    tokens, pos, text = [], 0, text.rstrip()
    while pos < len(text):
        m = _ARITH_TOKEN.match(text, pos)
        if m is None:
            raise _NotCheckable(f"unexpected {text[pos : pos + 10]!r}")
        pos = m.end()
        token = m.group("num") or m.group("op")
        tokens.append("^" if token == "**" else token)
    return tokens


def _bounded(value: Fraction) -> Fraction:
    if value.numerator.bit_length() > MAX_BITS or value.denominator.bit_length() > MAX_BITS:
        raise _TooLarge(f"a number over {MAX_BITS} bits")
    return value


class _Arith:
    """Exact rational value of `+ - * / ^ ( ) [ ]` arithmetic; `^` is right-associative and binds
    tighter than a sign (`-2^2 = -4`); a bracket right after a factor multiplies (`2(3 + 4)`).

    expr := term (+|- term)*; term := unary ((*|/) unary | implicit power)*;
    unary := (-|+) unary | power; power := atom (^ unary)?; atom := number | (expr) | [expr]
    """

    def __init__(self, text: str) -> None:
        self.tokens = _arith_tokens(text)
        self.pos = 0
        self.depth = 0

    def value(self) -> Fraction:
        if not self.tokens:
            raise _NotCheckable("empty")
        value = self.expr()
        if self.pos != len(self.tokens):
            raise _NotCheckable(f"unexpected {self.tokens[self.pos]!r}")
        return value

    def peek(self) -> str:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else ""

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if not token or (expected is not None and token != expected):
            raise _NotCheckable(f"expected {expected or 'more'}, got {token!r}")
        self.pos += 1
        return token

    def nested(self, parse: Callable[[], Fraction]) -> Fraction:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _NotCheckable(f"nested deeper than {MAX_DEPTH}")
        try:
            return parse()
        finally:
            self.depth -= 1

    def expr(self) -> Fraction:
        value = self.term()
        while self.peek() in ("+", "-"):
            op = self.take()
            value = _bounded(value + self.term() if op == "+" else value - self.term())
        return value

    def term(self) -> Fraction:
        value = self.unary()
        while True:
            token = self.peek()
            if token in ("*", "/"):
                self.take()
                right = self.unary()
                if token == "/" and right == 0:
                    raise ZeroDivisionError("division by zero")
                value = _bounded(value * right if token == "*" else value / right)
            elif token in ("(", "["):
                value = _bounded(value * self.power())
            else:
                return value

    def unary(self) -> Fraction:
        if self.peek() in ("-", "+"):
            sign = self.take()
            value = self.nested(self.unary)
            return -value if sign == "-" else value
        return self.power()

    def power(self) -> Fraction:
        base = self.atom()
        if self.peek() != "^":
            return base
        self.take()
        exponent = self.nested(self.unary)
        if exponent.denominator != 1:
            raise _NeedsSympy("a fractional power")
        if base == 0 and exponent < 0:
            raise ZeroDivisionError("0 to a negative power")
        if base in (0, 1) or exponent == 0:
            return base**0 if exponent == 0 else base
        if base == -1:
            return base ** (exponent.numerator % 2)
        size = max(base.numerator.bit_length(), base.denominator.bit_length())
        if size * abs(exponent.numerator) > MAX_BITS:  # checked before the power is built
            raise _TooLarge(f"a power over {MAX_BITS} bits")
        return _bounded(base**exponent.numerator)

    def atom(self) -> Fraction:
        token = self.take()
        if token in ("(", "["):
            value = self.nested(self.expr)
            self.take(")" if token == "(" else "]")
            return value
        if token[0].isdigit() or token[0] == ".":
            if len(token) > 4000:  # Python parses at most 4300 digits; 4000 are ~13,000 bits anyway
                raise _TooLarge(f"a number of {len(token)} digits")
            return _bounded(Fraction(token.replace(",", "")))
        raise _NotCheckable(f"unexpected {token!r}")


# ------------------------------------------------------- equalities in a step

_EQUALS = re.compile(r"(?<![<>!=:])=(?![=>])")
# Runs of characters that can belong to written math: digits, operators, brackets, `$`, LaTeX
# commands and escapes, spaces (not newlines); `.` and `,` only inside numbers. Never `=`.
_RUN = re.compile(r"(?:[\d+\-*/^()\[\]{}$×÷·⋅−]|[^\S\n]|[.,](?=\d)|\\[A-Za-z]+|\\[^A-Za-z\s=])+")
_BULLET = re.compile(r"(?:[-*]|\d+\))\s+")  # `- `, `* `, `1) ` opening a step
_LATEX_NOISE = re.compile(r"\$|\\[()\[\]]|\\(?:left|right)(?![A-Za-z])|\\[,;:! ]")
_LATEX_OPS = re.compile(r"\\(times|cdot|div)(?![A-Za-z])")
_UNICODE_OPS = str.maketrans({"×": "*", "·": "*", "⋅": "*", "÷": "/", "−": "-"})
_BARE = re.compile(r"[-+]?\s*(?:\d[\d,]*(?:\.\d+)?|\.\d+)")
_DECIMAL = re.compile(r"[-+]?\s*\d[\d,]*\.(\d+)|[-+]?\s*\.(\d+)")


def _glued(char: str | None) -> bool:
    """Whether a character touching a side means the expression goes on (`3x`, `f(3)`, `20%`)."""
    return char is not None and (char.isalnum() or char in "_%!'\\")


def _clean(side: str) -> str:
    side = _LATEX_NOISE.sub(" ", side)
    side = _LATEX_OPS.sub(lambda m: "/" if m.group(1) == "div" else "*", side)
    side = side.translate(_UNICODE_OPS)
    if "\\" not in side:  # bare braces group, as in `2^{10}`
        side = side.replace("{", "(").replace("}", ")")
    return side.strip()


def _left_side(text: str, run: re.Match[str] | None) -> str | None:
    """The expression before an `=`, or None when there is none that can be checked."""
    if run is None:
        return None
    raw, at_start = run.group(), run.start() == 0
    before = text[run.start() - 1] if run.start() > 0 else None
    bullet = _BULLET.match(raw) if at_start else None
    if bullet:
        raw = raw[bullet.end() :]
    elif not at_start and not raw[0].isspace() and _glued(before):  # `f(3) =`, `x^2 =`
        return None
    side = _clean(raw).lstrip("*").strip()  # markdown emphasis `**3 + 4 = 7**`
    while side[:1] in ("(", "[") and side.count(side[0]) > side.count(")" if side[0] == "(" else "]"):
        side = side[1:].lstrip()  # `(so 3 + 4 = 7)`
    if not side or side[0] in "+*/^" or (side[0] == "-" and not at_start and side[1:2].isspace()):
        return None  # cut out of a larger expression: `2x + 3 =`, `x - 3 =`
    if not at_start and _BARE.fullmatch(side) and before is not None and before.isalpha():
        return None  # `half of 80 =`: the word before may be an operator
    return side


def _right_side(text: str, run: re.Match[str] | None) -> str | None:
    """The expression after an `=`, or None when there is none that can be checked."""
    if run is None:
        return None
    raw = run.group()
    after = text[run.end()] if run.end() < len(text) else None
    parenthetical = re.search(r"\s[(\[]$", raw)  # `= 20 (since ...`
    if parenthetical:
        raw = raw[: parenthetical.start()]
    elif not raw[-1].isspace() and _glued(after):  # `= 3x`, `= 20%`
        return None
    side = _clean(raw).rstrip("*").strip()
    while side[-1:] in (")", "]") and side.count(side[-1]) > side.count("(" if side[-1] == ")" else "["):
        side = side[:-1].rstrip()
    if not side or side[-1] in "+-*/^([":  # `= 7 + x`
        return None
    return side


@dataclass(frozen=True)
class SympyClaim:
    """An equality for sympy: `lhs = rhs` within absolute `tol` (0: exact)."""

    lhs: str
    rhs: str
    tol: float


Claim = bool | None | SympyClaim
"""An equality's judgement: holds, fails, neutral (None), or to be decided by sympy."""


def _tolerance(lhs: str, rhs: str) -> Fraction:
    """10^-d when a side is a decimal written with d digits after the point (rhs first), else 0."""
    for side in (rhs, lhs):
        m = _DECIMAL.fullmatch(side)
        if m:
            return Fraction(1, 10 ** len(m.group(1) or m.group(2)))
    return Fraction(0)


def check_equality(lhs: str, rhs: str) -> Claim:
    """Judge `lhs = rhs` (cleaned sides) exactly, or hand it to sympy."""
    tol = _tolerance(lhs, rhs)
    try:
        a, b = _Arith(lhs).value(), _Arith(rhs).value()
    except _NotCheckable:
        if "\\" not in lhs + rhs:
            return None
    except _NeedsSympy:
        pass
    except (_TooLarge, ZeroDivisionError):
        return False
    else:
        return a == b or abs(a - b) < tol
    if len(lhs) > MAX_SYMPY_CHARS or len(rhs) > MAX_SYMPY_CHARS:
        return False
    return SympyClaim(normalize(lhs), normalize(rhs), float(tol))


def step_claims(text: str) -> list[Claim]:
    """One judgement per `=` in a step (see the module docstring)."""
    if "=" not in text:
        return []
    if len(text) > MAX_STEP_CHARS:
        return [False]
    runs = list(_RUN.finditer(text))
    ending = {run.end(): run for run in runs}
    starting = {run.start(): run for run in runs}
    claims: list[Claim] = []
    for eq in _EQUALS.finditer(text):
        lhs = _left_side(text, ending.get(eq.start()))
        rhs = _right_side(text, starting.get(eq.end()))
        claims.append(None if lhs is None or rhs is None else check_equality(lhs, rhs))
    return claims


def sympy_claim(claim: SympyClaim) -> bool | None:
    """Whether a `SympyClaim` holds (None: it has variables and is no identity). Runs in a worker."""
    import sympy

    # The math verifier's expression parser, shared so both read LaTeX alike.
    from grpo_verifiers.math import ParseError, Parser, expressions_equal

    try:
        a, b = Parser(claim.lhs).parse(), Parser(claim.rhs).parse()
    except (ParseError, ZeroDivisionError, TypeError, ValueError):
        return None
    if a.free_symbols or b.free_symbols:
        return True if sympy.simplify(a - b) == 0 else None
    if claim.tol:
        try:
            return abs(complex((a - b).evalf(30))) < claim.tol
        except (TypeError, ValueError, OverflowError):
            return False
    return expressions_equal(a, b, 1e-12)


# ------------------------------------------------------------------ backends


class Backend(Protocol):
    def score(self, samples: Sequence[dict[str, Any]], steps: Sequence[list[Step]]) -> list[StepScores]: ...

    def close(self) -> None: ...


class RuleBackend:
    """Checks the equalities each step states (module docstring); sympy runs in watchdog workers."""

    def __init__(self, *, timeout: float, workers: int, memory_mb: int, step_tag: str = "", **options: Any) -> None:
        del step_tag  # only the hf backend reads the tag itself
        if options:
            raise TypeError(f"the rule backend takes no options of its own, got {sorted(options)}")
        self.timeout, self.workers, self.memory_mb = timeout, workers, memory_mb
        self._watchdog = Watchdog(
            self.workers, memory_mb=self.memory_mb, preload=("sympy",)
        )  # starts workers on first use

    def score(self, samples: Sequence[dict[str, Any]], steps: Sequence[list[Step]]) -> list[StepScores]:
        judged: list[list[list[Claim]]] = []  # [sample][step][equality]
        infos: list[dict[str, Any]] = []
        jobs: list[tuple[list[Claim], int, int, SympyClaim]] = []  # (claims, position, sample, claim)
        for i, sample_steps in enumerate(steps):
            info: dict[str, Any] = {}
            per_step, sympy_count = [], 0
            for step in sample_steps:
                claims = step_claims(step.text)
                for k, claim in enumerate(claims):
                    if isinstance(claim, SympyClaim):
                        sympy_count += 1
                        if sympy_count > MAX_SYMPY_CLAIMS:
                            claims[k] = False
                            info["error"] = f"over {MAX_SYMPY_CLAIMS} equalities need sympy; the rest fail"
                        else:
                            jobs.append((claims, k, i, claim))
                per_step.append(claims)
            judged.append(per_step)
            infos.append(info)
        if jobs:
            outcomes = self._watchdog.map(sympy_claim, [job[3] for job in jobs], self.timeout)
            for (claims, k, i, _), outcome in zip(jobs, outcomes):
                claims[k] = outcome.value if outcome.ok else False
                if not outcome.ok:
                    infos[i]["error"] = outcome.error
                    infos[i]["timeout"] = infos[i].get("timeout", False) or outcome.timed_out
        results = []
        for per_step, info in zip(judged, infos):
            rewards: list[float | None] = []
            equations = 0
            for claims in per_step:
                decided = [claim for claim in claims if claim is not None]
                equations += len(decided)
                rewards.append(None if not decided else 1.0 if all(decided) else 0.0)
            results.append(StepScores(rewards, {"equations": equations, **info}))
        return results

    def close(self) -> None:
        self._watchdog.close()


def _hf_backend(**options: Any) -> Backend:
    from grpo_verifiers.prm_hf import HFBackend  # imports transformers only when asked for

    return HFBackend(**options)


BACKENDS: dict[str, Callable[..., Backend]] = {"rule": RuleBackend, "hf": _hf_backend}
"""Backend name -> factory, called with `timeout`, `workers`, `memory_mb`, `step_tag` and the
backend's own options."""


# ------------------------------------------------------------------ verifier


def _answer_offset(completion: str, method: str, raw: str) -> int:
    """Where the extracted final answer sits in the completion."""
    if method == "hash":
        return completion.rfind("####")
    if method == "boxed":
        return max(completion.rfind("\\boxed"), completion.rfind("\\fbox"))
    return completion.rfind(raw)


def _step_at(steps: list[Step], offset: int) -> int:
    """The index of the step holding `offset`, else the last step."""
    return next((j for j, step in enumerate(steps) if step.start <= offset < step.end), len(steps) - 1)


class PRMVerifier(Verifier):
    """Process rewards: one reward per step of the completion, and an outcome reward from them.

    backend: `rule` (check each step's equalities; the default) or `hf` (a process reward model:
        `model=PATH`, `style=math_shepherd|qwen`, `batch_size`, `device`, `dtype`, ...; see `prm_hf.py`).
    split: `line` (default), `blank_line` or `tag` (segments between `step_tag`s).
    step_tag: the step separator for split=tag (default `ки`, Math-Shepherd's); also the tag the
        math_shepherd model reads after each step.
    outcome: the sample's reward from its step rewards: `min` (default), `last`, `product`, `mean`.
    final_answer: also score the step holding the final answer against the gold `answer` (default true).
    timeout: seconds per sympy check (a step's equality, or the final answer's comparison).
    workers: sympy worker processes (started on first need), for the steps and for the answer.
    memory_mb: address-space limit of each worker.
    Further options go to the backend (the rule backend takes none). `timeout` does not bound a
    model's forward pass.
    """

    name = "prm"

    def __init__(
        self,
        *,
        backend: str = "rule",
        split: str = "line",
        step_tag: str = "ки",
        outcome: str = "min",
        final_answer: bool = True,
        timeout: float = 3.0,
        workers: int = 1,
        memory_mb: int = 2048,
        **backend_options: Any,
    ) -> None:
        for option, value, table in (
            ("backend", backend, BACKENDS),
            ("split", split, SPLITS),
            ("outcome", outcome, OUTCOMES),
        ):
            if value not in table:
                raise ValueError(f"{option} must be one of {', '.join(table)}, got {value!r}")
        if not isinstance(step_tag, str) or not step_tag:
            raise ValueError(f"step_tag must be a non-empty string, got {step_tag!r}")
        if not isinstance(final_answer, bool):
            raise TypeError(f"final_answer must be true or false, got {final_answer!r}")
        self.backend_name, self.split, self.step_tag, self.outcome = backend, split, step_tag, outcome
        self.final_answer = final_answer
        self.timeout, self.workers, self.memory_mb = float(timeout), int(workers), int(memory_mb)
        if not (self.timeout > 0 and self.workers >= 1 and self.memory_mb > 0):
            raise ValueError("timeout must be > 0, workers >= 1 and memory_mb > 0")
        self._separator = SPLITS[split](step_tag)
        self._backend = BACKENDS[backend](
            timeout=self.timeout, workers=self.workers, memory_mb=self.memory_mb, step_tag=step_tag, **backend_options
        )
        self._math = MathVerifier(timeout=self.timeout, workers=self.workers, memory_mb=self.memory_mb)

    def verify(self, samples: list[dict[str, Any]]) -> list[Verdict]:
        completions = [str(sample["completion"]) for sample in samples]
        steps = [split_steps(completion, self._separator) for completion in completions]
        scored = self._backend.score(samples, steps)
        if self.split == "tag":  # blank the tags out (same length) so `#### 23 ки` reads as 23
            completions = [c.replace(self.step_tag, " " * len(self.step_tag)) for c in completions]
        answers: list[Verdict | None] = [None] * len(samples)
        if self.final_answer:
            answers = list(
                self._math.verify([{"completion": c, "answer": s.get("answer")} for c, s in zip(completions, samples)])
            )
        return [
            self._verdict(completion, sample_steps, step_scores, answer)
            for completion, sample_steps, step_scores, answer in zip(completions, steps, scored, answers)
        ]

    def _verdict(self, completion: str, steps: list[Step], scored: StepScores, answer: Verdict | None) -> Verdict:
        rewards = list(scored.rewards)
        found = extract_answer(completion, DEFAULT_EXTRACT)
        info: dict[str, Any] = {
            "steps": 0,
            "extracted": found[1] if found else None,
            "canonical": canonical(normalize(found[1])) if found else None,
            "gold": None,
            "final": None,
            **scored.info,
        }
        if answer is not None and answer.reward is not None:
            info["gold"] = answer.info.get("gold")
            if steps:
                j = _step_at(steps, _answer_offset(completion, *found)) if found else len(steps) - 1
                rewards[j] = answer.reward if rewards[j] is None else min(rewards[j], answer.reward)
                info["final"] = answer.reward
            if "error" in answer.info:
                info["error"] = answer.info["error"]
                info["timeout"] = info.get("timeout", False) or bool(answer.info.get("timeout"))
        kept = [(step.end, float(r)) for step, r in zip(steps, rewards) if r is not None]
        info["steps"] = len(kept)
        reward = OUTCOMES[self.outcome]([r for _, r in kept]) if kept else 0.0
        return Verdict(float(reward), steps=[{"end": end, "reward": r} for end, r in kept], info=info)

    def close(self) -> None:
        self._backend.close()
        self._math.close()


__all__ = [
    "BACKENDS",
    "OUTCOMES",
    "SPLITS",
    "PRMVerifier",
    "RuleBackend",
    "Step",
    "check_equality",
    "split_steps",
    "step_claims",
]
