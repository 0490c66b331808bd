"""The scoring stage: weighted sums, not-applicable verdicts, and failures that cost only their samples."""

from __future__ import annotations

import math

import pytest
from grpo_verifiers.base import Verdict, Verifier

from grpo_cli.errors import UserError
from grpo_cli.pipeline.scoring import VerifierSpec, open_verifiers, opened_verifiers, score


class FieldVerifier(Verifier):
    """Reward = sample[field]; None when the sample has no such field. Counts its calls."""

    def __init__(self, field: str) -> None:
        self.field = field
        self.calls: list[int] = []

    def verify(self, samples):
        self.calls.append(len(samples))
        return [Verdict(s.get(self.field), info={"seen": s.get(self.field)}) for s in samples]


class RaisesOnBoom(FieldVerifier):
    def verify(self, samples):
        if any(s.get("boom") for s in samples):
            self.calls.append(len(samples))
            raise RuntimeError("boom\nwith a second line")
        return super().verify(samples)


class DropsOneInBatches(FieldVerifier):
    """Right only for single samples: a batch of n gets n - 1 verdicts."""

    def verify(self, samples):
        verdicts = super().verify(samples)
        return verdicts[:-1] if len(samples) > 1 else verdicts


def spec(name, **kw):
    return VerifierSpec(name=name, **kw)


def test_weighted_sum_and_not_applicable():
    samples = [{"a": 1.0, "b": 0.0}, {"a": 0.0, "b": 1.0}, {"a": 1.0}]
    records, summary = score(samples, [(spec("a"), FieldVerifier("a")), (spec("b", weight=0.5), FieldVerifier("b"))])
    # 1*1 + 0.5*0 = 1.0; 1*0 + 0.5*1 = 0.5; b does not apply to the third: 1*1 = 1.0
    assert [r["reward"] for r in records] == [1.0, 0.5, 1.0]
    assert records[2]["rewards"] == {"a": 1.0, "b": None}
    assert records[0]["info"] == {"a": {"seen": 1.0}, "b": {"seen": 0.0}}
    assert summary.reward_mean == pytest.approx(2.5 / 3)
    assert summary.verifiers["b"].scored == 2 and summary.verifiers["b"].not_applicable == 1
    assert summary.verifiers["b"].reward_mean == 0.5
    assert "steps" not in records[0]
    assert samples[0] == {"a": 1.0, "b": 0.0}  # inputs untouched


def test_a_verifier_raising_on_one_sample_costs_only_that_sample():
    samples = [{"a": 1.0}, {"a": 1.0, "boom": True}, {"a": 0.0}]
    verifier = RaisesOnBoom("a")
    records, summary = score(samples, [(spec("a", failure_value=-1.0), verifier)])
    assert [r["reward"] for r in records] == [1.0, -1.0, 0.0]
    assert records[1]["info"]["a"]["error"] == "RuntimeError: boom with a second line"  # one line
    assert verifier.calls == [3, 1, 1, 1]  # the batch, then sample by sample
    counts = summary.verifiers["a"]
    assert (counts.scored, counts.failed, counts.timed_out) == (2, 1, 0)
    assert counts.first_error.startswith("RuntimeError")


def test_wrong_number_of_verdicts_is_retried_per_sample():
    records, summary = score([{"a": 1.0}, {"a": 0.0}], [(spec("a"), DropsOneInBatches("a"))])
    assert [r["reward"] for r in records] == [1.0, 0.0]
    assert summary.verifiers["a"].failed == 0


@pytest.mark.parametrize("bad", [math.nan, math.inf, "1.0", True])
def test_non_finite_or_non_number_reward_is_a_failure(bad):
    samples = [{"a": 1.0}, {"a": bad}]
    records, summary = score(samples, [(spec("a", failure_value=0.25), FieldVerifier("a"))])
    assert [r["reward"] for r in records] == [1.0, 0.25]
    assert "not a finite number" in records[1]["info"]["a"]["error"]
    assert summary.verifiers["a"].failed == 1


def test_timeout_verdict_gets_failure_value():
    class TimesOut(Verifier):
        def verify(self, samples):
            return [Verdict(0.0, info={"timeout": True, "error": "timed out after 2 s"}) for _ in samples]

    records, summary = score([{}], [(spec("t", failure_value=-0.5), TimesOut())])
    assert records[0]["reward"] == -0.5
    assert summary.verifiers["t"].timed_out == 1 and summary.verifiers["t"].scored == 1


def test_steps_and_routing():
    class Stepper(Verifier):
        def verify(self, samples):
            return [Verdict(0.5, steps=[{"end": 3, "reward": 1.0}, {"end": 9, "reward": 0.0}]) for _ in samples]

    samples = [{"a": 1.0, "verifier": "a"}, {"a": 1.0}]
    records, summary = score(samples, [(spec("a"), FieldVerifier("a")), (spec("prm"), Stepper())])
    assert records[0]["rewards"] == {"a": 1.0, "prm": None} and "steps" not in records[0]
    assert records[1]["reward"] == 1.5 and records[1]["steps"][1] == {"end": 9, "reward": 0.0}
    assert summary.verifiers["prm"].not_applicable == 1
    with pytest.raises(UserError, match="row 7 asks for verifier 'code'"):
        score([{"id": 7, "verifier": "code"}], [(spec("a"), FieldVerifier("a"))])


def test_rescoring_replaces_old_scores():
    first, _ = score([{"a": 1.0}], [(spec("a"), FieldVerifier("a"))])
    again, _ = score(first, [(spec("b"), FieldVerifier("b"))])
    assert again[0]["rewards"] == {"b": None} and again[0]["reward"] == 0.0


def test_spec_checks():
    with pytest.raises(UserError):
        VerifierSpec("a", weight=math.nan)
    with pytest.raises(UserError, match="listed twice"):
        open_verifiers([VerifierSpec("math"), VerifierSpec("math")])
    with pytest.raises(UserError, match="did you mean 'math'"):
        open_verifiers([VerifierSpec("maths")])


def test_math_end_to_end_through_the_registry():
    samples = [
        {"completion": r"so \boxed{72}", "answer": "... 48 + 24 = 72\n#### 72"},
        {"completion": "The answer is 70.", "answer": "#### 72"},
    ]
    with opened_verifiers([VerifierSpec("math", options={"timeout": 2})]) as verifiers:
        records, summary = score(samples, verifiers)
    assert [r["reward"] for r in records] == [1.0, 0.0]
    assert records[0]["info"]["math"]["canonical"] == "72"
    assert summary.verifiers["math"].scored == 2


class HangsOnSlow(FieldVerifier):
    """Never returns for a batch holding a `slow` sample (until the test releases it)."""

    def __init__(self, field: str, release) -> None:
        super().__init__(field)
        self.release = release

    def verify(self, samples):
        if any(s.get("slow") for s in samples):
            self.calls.append(len(samples))
            self.release.wait(30)
            return [Verdict(1.0) for _ in samples]  # too late: the caller has moved on
        return super().verify(samples)


def test_a_hanging_verifier_costs_only_its_samples():
    import threading
    import time

    release = threading.Event()
    verifier = HangsOnSlow("r", release)
    samples = [{"r": 1.0}, {"r": 0.5, "slow": True}, {"r": 0.25}]
    spec = VerifierSpec(name="hangs", failure_value=-1.0, hang_timeout=0.1)
    start = time.monotonic()
    records, summary = score(samples, [(spec, verifier)])
    elapsed = time.monotonic() - start
    release.set()
    # the batch (3 x 0.1 s allowed) hangs, then each sample alone: only the slow one hangs again
    assert [r["reward"] for r in records] == [1.0, -1.0, 0.25]
    assert records[1]["info"]["hangs"]["timeout"] is True
    assert "still running after 0.1 s" in records[1]["info"]["hangs"]["error"]
    counts = summary.verifiers["hangs"]
    assert (counts.scored, counts.failed, counts.timed_out) == (2, 0, 1)
    assert "1 timed out" in summary.describe()
    assert elapsed < 5


def test_a_verifier_that_always_hangs_is_given_up_after_three_hangs():
    import threading

    release = threading.Event()
    verifier = HangsOnSlow("r", release)
    samples = [{"r": 1.0, "slow": True} for _ in range(6)]
    records, summary = score(samples, [(VerifierSpec(name="hangs", hang_timeout=0.05), verifier)])
    release.set()
    assert [r["reward"] for r in records] == [0.0] * 6
    assert summary.verifiers["hangs"].timed_out == 6
    # the batch call and two single samples hung; the other four were never asked
    assert verifier.calls == [6, 1, 1]
    assert "hung 3 times" in records[-1]["info"]["hangs"]["error"]
