"""A contract test suite for verifier plugins (docs/design.md, "Verifiers"): run it against your class.

Two ways in, the same checks behind both:

    from grpo_verifiers.testing import VerifierContract

    class TestMyVerifier(VerifierContract):          # pytest collects one test per check
        verifier_class = MyVerifier
        options = {"threshold": 0.5}                   # accepted options (built with these)
        bad_options = ({"threshold": "high"},)         # each must raise TypeError or ValueError
        entry_point = "my_verifier"                    # its name in the `grpo.verifiers` group
        samples = [{"prompt": ..., "answer": ..., "completion": ...}, ...]   # your domain's rows

or, outside pytest, `problems = check_verifier(MyVerifier, options=..., entry_point=...)`: a list of
`"check: what is wrong"` lines, empty when the verifier keeps the contract.

The checks (`CHECKS`, by name):

- verdicts: `verify(samples)` returns one `Verdict` per sample (a list or tuple).
- order: verdict i is about sample i: each sample's verdict in the batch equals its verdict alone,
  and the batch reversed gives the verdicts reversed (so the verifier must be deterministic for the
  same input, up to `tolerance`).
- rewards: each reward is None (not applicable) or a finite number, not a bool.
- steps: None or a list of `{"end": int, "reward": finite number}` with `0 < end <= len(completion)`
  (an exclusive character offset) and ends strictly increasing.
- info: a dict that `json.dumps` can write (scored records are JSONL).
- no_mutation: `verify` leaves the sample dicts as it found them (other verifiers read them next).
- empty_batch: `verify([])` returns no verdicts.
- edge_samples: an empty completion, unicode (accents, CJK, emoji, right-to-left, combining marks),
  a completion that is only whitespace, and a row with nothing but `completion` each get one
  well-formed verdict, not an exception (reward None where the verifier does not apply).
- close: `close()` can be called before any `verify`, and twice.
- options: the class builds with `options`; each of `bad_options` raises TypeError or ValueError
  with a one-line message (the registry turns those into a one-line user error). By default an
  unknown option must be refused.
- entry_point: when `entry_point` is set, the installed `grpo.verifiers` group lists that name,
  it loads without error, and `grpo_cli.plugins.load_verifier(name, options)` builds this class.

A verifier that raises or hangs costs only its samples in a run; this suite is how you find out
before your users do.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Sequence
from numbers import Real
from typing import Any

from grpo_verifiers.base import Verdict, Verifier

SAMPLES: list[dict[str, Any]] = [
    {"id": "p1", "prompt": "What is 3 + 4 * 5?", "answer": "23", "completion": "4 * 5 = 20\n3 + 20 = 23\n#### 23"},
    {"id": "p1", "prompt": "What is 3 + 4 * 5?", "answer": "23", "completion": "3 + 4 = 7\n7 * 5 = 35\n#### 35"},
    {"id": "p2", "prompt": "Simplify 6/8.", "answer": "\\frac{3}{4}", "completion": "6/8 = 3/4, so \\boxed{\\frac34}."},
    {
        "id": "p3",
        "prompt": [{"role": "user", "content": "Name the capital of France."}],
        "answer": "Paris",
        "completion": "The answer is Paris.",
    },
    {"id": "p4", "prompt": "Is 7 prime?", "answer": "yes", "completion": "I am not sure."},
]
"""Default sample rows (docs/design.md, "Records"): math-flavoured, one chat prompt. Plugins for other
domains pass their own."""

EDGE_COMPLETIONS: dict[str, str] = {
    "empty": "",
    "whitespace": " \n\n\t ",
    "unicode": "Ça fait 3 × 4 = 12 ✓ 😀\nשלום 12\n数学 e\u0301 = 12\n#### 12",
}

DEFAULT_BAD_OPTIONS: tuple[dict[str, Any], ...] = ({"no_such_option_for_the_contract": 1},)


class Subject:
    """What the checks run against: builds verifiers and remembers the settings."""

    def __init__(
        self,
        target: type[Verifier] | Callable[[], Verifier] | Verifier,
        samples: Sequence[dict[str, Any]] | None = None,
        *,
        options: dict[str, Any] | None = None,
        bad_options: Sequence[dict[str, Any]] = DEFAULT_BAD_OPTIONS,
        entry_point: str | None = None,
        tolerance: float = 1e-6,
    ) -> None:
        self.target, self.options = target, dict(options or {})
        self.samples = [dict(s) for s in (samples if samples is not None else SAMPLES)]
        self.bad_options, self.entry_point, self.tolerance = tuple(bad_options), entry_point, tolerance
        self._shared: Verifier | None = None

    @property
    def cls(self) -> type[Verifier] | None:
        if isinstance(self.target, type):
            return self.target
        return type(self.target) if isinstance(self.target, Verifier) else None

    def build(self) -> Verifier:
        """A new verifier (for an instance target: the instance itself)."""
        if isinstance(self.target, Verifier):
            return self.target
        return self.target(**self.options) if isinstance(self.target, type) else self.target()

    def shared(self) -> Verifier:
        """One verifier reused by the read-only checks (model-based verifiers are slow to build)."""
        if self._shared is None:
            self._shared = self.build()
        return self._shared

    def close(self) -> None:
        if self._shared is not None and self._shared is not self.target:
            self._shared.close()
        self._shared = None


# ------------------------------------------------------------------ helpers


def _err(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:300]


def _reward_problem(reward: Any) -> str | None:
    if reward is not None and (isinstance(reward, bool) or not isinstance(reward, Real) or not math.isfinite(reward)):
        return f"reward {reward!r} is not None or a finite number"
    return None


def _steps_problem(steps: Any, completion: str) -> str | None:
    if steps is None:
        return None
    if not isinstance(steps, list):
        return f"steps is a {type(steps).__name__}, not a list"
    previous = 0
    for k, step in enumerate(steps):
        if not isinstance(step, dict) or not {"end", "reward"} <= set(step):
            return f"step {k} {step!r} is not a dict with 'end' and 'reward'"
        end, reward = step["end"], step["reward"]
        if isinstance(end, bool) or not isinstance(end, int):
            return f"step {k} end {end!r} is not an int"
        if not previous < end <= len(completion):
            return (
                f"step {k} end {end} is not after the previous end ({previous}) and within the completion"
                f" (length {len(completion)})"
            )
        if isinstance(reward, bool) or not isinstance(reward, Real) or not math.isfinite(reward):
            return f"step {k} reward {reward!r} is not a finite number"
        previous = end
    return None


def _info_problem(info: Any) -> str | None:
    if not isinstance(info, dict):
        return f"info is a {type(info).__name__}, not a dict"
    try:
        json.dumps(info)
    except (TypeError, ValueError) as exc:
        return f"info cannot be written as JSON ({_err(exc)})"
    return None


def _verdict_problem(verdict: Any, completion: str) -> str | None:
    """Why a verdict breaks the contract, or None."""
    if not isinstance(verdict, Verdict):
        return f"got {type(verdict).__name__}, not a Verdict"
    return _reward_problem(verdict.reward) or _steps_problem(verdict.steps, completion) or _info_problem(verdict.info)


def _verify(verifier: Verifier, samples: list[dict[str, Any]], what: str) -> tuple[list[Any] | None, list[str]]:
    """The verdicts, or None and the problem (raised, not a sequence, wrong count). The verifier gets
    a copy of the rows, so one that writes to them cannot change what the next check sees."""
    try:
        verdicts = verifier.verify(copy.deepcopy(samples))
    except Exception as exc:  # the contract says: do not raise on these inputs
        return None, [f"verify({what}) raised {_err(exc)}"]
    if not isinstance(verdicts, (list, tuple)):
        return None, [f"verify({what}) returned a {type(verdicts).__name__}, not a list"]
    if len(verdicts) != len(samples):
        return None, [f"verify({what}) returned {len(verdicts)} verdicts for {len(samples)} samples"]
    return list(verdicts), []


def _same(a: Any, b: Any, tol: float) -> bool:
    if isinstance(a, Real) and isinstance(b, Real) and not isinstance(a, bool) and not isinstance(b, bool):
        return math.isclose(a, b, rel_tol=tol, abs_tol=tol)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y, tol) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k], tol) for k in a)
    return a == b


def _summary(verdict: Verdict) -> dict[str, Any]:
    return {"reward": verdict.reward, "steps": verdict.steps}


# ------------------------------------------------------------------ checks


def check_verdicts(subject: Subject) -> list[str]:
    verdicts, problems = _verify(subject.shared(), subject.samples, f"{len(subject.samples)} samples")
    if verdicts is not None:
        for i, verdict in enumerate(verdicts):
            if not isinstance(verdict, Verdict):
                problems.append(f"verdict {i} is a {type(verdict).__name__}, not a Verdict")
    return problems


def check_order(subject: Subject) -> list[str]:
    verifier, samples = subject.shared(), subject.samples
    batch, problems = _verify(verifier, samples, "the samples")
    if batch is None:
        return problems
    for i, sample in enumerate(samples):
        alone, more = _verify(verifier, [sample], f"sample {i} alone")
        if alone is None:
            return more
        if isinstance(batch[i], Verdict) and isinstance(alone[0], Verdict):
            if not _same(_summary(batch[i]), _summary(alone[0]), subject.tolerance):
                problems.append(
                    f"sample {i}: its verdict in the batch {_summary(batch[i])} differs from its verdict alone "
                    f"{_summary(alone[0])}"
                )
    reversed_batch, more = _verify(verifier, samples[::-1], "the samples reversed")
    if reversed_batch is None:
        return problems + more
    for i, verdict in enumerate(reversed_batch[::-1]):
        if isinstance(verdict, Verdict) and isinstance(batch[i], Verdict):
            if not _same(_summary(verdict), _summary(batch[i]), subject.tolerance):
                problems.append(f"sample {i}: reversing the batch changed its verdict to {_summary(verdict)}")
    return problems


def _each(subject: Subject, problem: Callable[[Verdict, str], str | None]) -> list[str]:
    """`problem(verdict, completion)` for each sample's verdict (verdicts that are not a Verdict are
    the `verdicts` check's to report)."""
    verdicts, problems = _verify(subject.shared(), subject.samples, "the samples")
    for i, (sample, verdict) in enumerate(zip(subject.samples, verdicts or [])):
        found = problem(verdict, str(sample.get("completion", ""))) if isinstance(verdict, Verdict) else None
        if found is not None:
            problems.append(f"sample {i}: {found}")
    return problems


def check_rewards(subject: Subject) -> list[str]:
    return _each(subject, lambda verdict, _: _reward_problem(verdict.reward))


def check_steps(subject: Subject) -> list[str]:
    return _each(subject, lambda verdict, completion: _steps_problem(verdict.steps, completion))


def check_info(subject: Subject) -> list[str]:
    return _each(subject, lambda verdict, _: _info_problem(verdict.info))


def _well_formed(subject: Subject, samples: list[dict[str, Any]], what: str) -> list[str]:
    verdicts, problems = _verify(subject.shared(), samples, what)
    for sample, verdict in zip(samples, verdicts or []):
        problem = _verdict_problem(verdict, str(sample.get("completion", "")))
        if problem is not None:
            problems.append(f"{what}: {problem}")
    return problems


def check_no_mutation(subject: Subject) -> list[str]:
    samples = copy.deepcopy(subject.samples)
    try:
        subject.shared().verify(samples)
    except Exception as exc:
        return [f"verify(the samples) raised {_err(exc)}"]
    problems = []
    for i, (before, after) in enumerate(zip(subject.samples, samples)):
        if before != after:
            changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
            problems.append(f"sample {i}: verify changed its fields {changed}")
    return problems


def check_empty_batch(subject: Subject) -> list[str]:
    return _verify(subject.shared(), [], "[]")[1]


def check_edge_samples(subject: Subject) -> list[str]:
    base = subject.samples[0] if subject.samples else {"prompt": "", "answer": ""}
    problems = []
    for label, completion in EDGE_COMPLETIONS.items():
        problems += _well_formed(subject, [{**base, "completion": completion}], f"a {label} completion")
    problems += _well_formed(subject, [{"completion": base.get("completion", "42")}], "a row with only 'completion'")
    return problems


def check_close(subject: Subject) -> list[str]:
    if isinstance(subject.target, Verifier):
        return []  # an instance is the caller's to close
    problems = []
    for calls, what in ((1, "close() before any verify"), (2, "a second close()")):
        try:
            verifier = subject.build()
            for _ in range(calls):
                verifier.close()
        except Exception as exc:
            problems.append(f"{what} raised {_err(exc)}")
    try:
        verifier = subject.build()
        verifier.verify(subject.samples[:1])
        verifier.close()
        verifier.close()
    except Exception as exc:
        problems.append(f"verify then close() twice raised {_err(exc)}")
    return problems


def check_options(subject: Subject) -> list[str]:
    cls = subject.target if isinstance(subject.target, type) else None
    if cls is None:
        return []  # a factory or an instance: the options are the caller's
    problems = []
    if not isinstance(getattr(cls, "name", ""), str):
        problems.append(f"{cls.__name__}.name is not a string")
    for bad in subject.bad_options:
        try:
            verifier = cls(**{**subject.options, **bad})
        except (TypeError, ValueError) as exc:
            if "\n" in str(exc).strip():
                problems.append(f"options {bad}: the error is more than one line: {str(exc)!r}")
        except Exception as exc:
            problems.append(f"options {bad}: raised {_err(exc)}, not TypeError or ValueError")
        else:
            verifier.close()
            problems.append(f"options {bad} were accepted; they should raise TypeError or ValueError")
    return problems


def check_entry_point(subject: Subject) -> list[str]:
    if subject.entry_point is None:
        return []
    from grpo_cli.errors import UserError
    from grpo_cli.plugins import GROUP, discover, load_verifier

    name = subject.entry_point
    found = [info for info in discover() if info.name == name]
    if not found:
        return [f"no entry point {name!r} in the {GROUP!r} group (is the package installed?)"]
    if found[0].status != "ok":
        return [f"entry point {name!r} does not load: {found[0].error}"]
    try:
        verifier = load_verifier(name, subject.options)
    except UserError as exc:
        return [f"load_verifier({name!r}, {subject.options}) failed: {exc}"]
    problems = []
    if subject.cls is not None and type(verifier) is not subject.cls:
        problems.append(f"entry point {name!r} builds {type(verifier).__name__}, not {subject.cls.__name__}")
    verifier.close()
    return problems


CHECKS: dict[str, Callable[[Subject], list[str]]] = {
    "verdicts": check_verdicts,
    "order": check_order,
    "rewards": check_rewards,
    "steps": check_steps,
    "info": check_info,
    "no_mutation": check_no_mutation,
    "empty_batch": check_empty_batch,
    "edge_samples": check_edge_samples,
    "close": check_close,
    "options": check_options,
    "entry_point": check_entry_point,
}
"""Check name -> check; each returns its problems (empty: passed). Module docstring for what each checks."""


def check_verifier(
    target: type[Verifier] | Callable[[], Verifier] | Verifier,
    samples: Sequence[dict[str, Any]] | None = None,
    *,
    options: dict[str, Any] | None = None,
    bad_options: Sequence[dict[str, Any]] = DEFAULT_BAD_OPTIONS,
    entry_point: str | None = None,
    tolerance: float = 1e-6,
    checks: Sequence[str] | None = None,
) -> list[str]:
    """Run the contract checks (all, or the named `checks`) and return the problems, each as
    `"check: what is wrong"`; an empty list means the verifier keeps the contract.

    target: a Verifier subclass (built with `options`), a no-argument factory, or an instance (the
    options and close checks are then skipped). samples: rows for your domain (default `SAMPLES`).
    """
    unknown = [name for name in checks or () if name not in CHECKS]
    if unknown:
        raise ValueError(f"unknown checks {unknown}; known: {', '.join(CHECKS)}")
    subject = Subject(
        target, samples, options=options, bad_options=bad_options, entry_point=entry_point, tolerance=tolerance
    )
    problems: list[str] = []
    try:
        for name in checks or CHECKS:
            try:
                problems += [f"{name}: {p}" for p in CHECKS[name](subject)]
            except Exception as exc:  # building the verifier failed, or a check met something odd
                problems.append(f"{name}: {_err(exc)}")
    finally:
        subject.close()
    return problems


class VerifierContract:
    """pytest mixin: subclass it as `TestSomething`, set `verifier_class` (and the rest as needed),
    and pytest runs one test per contract check (module docstring)."""

    verifier_class: type[Verifier] | None = None
    options: dict[str, Any] = {}
    bad_options: Sequence[dict[str, Any]] = DEFAULT_BAD_OPTIONS
    entry_point: str | None = None
    samples: Sequence[dict[str, Any]] | None = None
    tolerance: float = 1e-6

    def make_verifier(self) -> Verifier:
        """Override to build the verifier another way (then the options check is skipped)."""
        if self.verifier_class is None:
            raise TypeError(f"{type(self).__name__}: set verifier_class or override make_verifier")
        return self.verifier_class(**self.options)

    def _check(self, name: str) -> None:
        overridden = type(self).make_verifier is not VerifierContract.make_verifier
        target = self.make_verifier if overridden else self.verifier_class
        problems = check_verifier(
            target,  # type: ignore[arg-type]
            self.samples,
            options=self.options,
            bad_options=self.bad_options,
            entry_point=self.entry_point,
            tolerance=self.tolerance,
            checks=[name],
        )
        assert not problems, "\n".join(problems)

    def test_verdicts(self) -> None:
        self._check("verdicts")

    def test_order(self) -> None:
        self._check("order")

    def test_rewards(self) -> None:
        self._check("rewards")

    def test_steps(self) -> None:
        self._check("steps")

    def test_info(self) -> None:
        self._check("info")

    def test_no_mutation(self) -> None:
        self._check("no_mutation")

    def test_empty_batch(self) -> None:
        self._check("empty_batch")

    def test_edge_samples(self) -> None:
        self._check("edge_samples")

    def test_close(self) -> None:
        self._check("close")

    def test_options(self) -> None:
        self._check("options")

    def test_entry_point(self) -> None:
        self._check("entry_point")


__all__ = ["CHECKS", "SAMPLES", "VerifierContract", "check_verifier"]
