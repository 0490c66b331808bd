"""The `math` verifier on hostile input: each costs its sample a 0.0 with a reason, within the
bound, and the verifier keeps working."""

from __future__ import annotations

import json
import time

import pytest
from grpo_verifiers.math import MAX_ANSWER_CHARS, MathVerifier


@pytest.fixture(scope="module")
def verifier():
    v = MathVerifier(timeout=1.0, workers=1)
    yield v
    v.close()


def test_huge_values_are_refused_before_evaluating(verifier):
    answers = [
        r"9^9^9^9",
        r"9^{9^{9^{9}}}",
        r"(10^8)!",
        r"2^{100000} + 1",  # a power tower is compared exactly (below), not an expression with one
        r"1e999999",
        r"1\times10^{99999}",
        "(" * 140 + "1" + ")" * 140,  # nested deeper than the parser goes
    ]
    start = time.monotonic()
    verdicts = verifier.verify([{"completion": rf"\boxed{{{a}}}", "answer": "1"} for a in answers])
    assert time.monotonic() - start < 15.0  # a worker start on a busy machine; each refusal takes ms
    for answer, verdict in zip(answers, verdicts):
        assert verdict.reward == 0.0, answer
        assert verdict.info["refused"].startswith("refused: "), (answer, verdict.info)
        assert "timeout" not in verdict.info


@pytest.mark.parametrize(
    "completion, gold, expected",
    [
        # 2^(2^(2^(2^2))) = 2^(2^16) = 2^65536, a 19,729-digit number: compared as (root 2, exponent 65536).
        (r"\boxed{2^{2^{2^{2^{2}}}}}", "2^{65536}", 1.0),
        (r"\boxed{4^{32768}}", "2^{65536}", 1.0),  # 4^32768 = (2^2)^32768 = 2^65536
        (r"\boxed{2^{2^{2^{2^{2}}}}}", "2^{65537}", 0.0),
        (r"\boxed{2^{100000}}", "1", 0.0),
        (r"\boxed{3^{65536}}", "2^{65536}", 0.0),
    ],
)
def test_power_towers_are_compared_exactly(verifier, completion, gold, expected):
    (verdict,) = verifier.verify([{"completion": completion, "answer": gold}])
    assert verdict.reward == expected and "refused" not in verdict.info and "timeout" not in verdict.info


def test_the_nesting_limit_counts_brackets_and_exponents(verifier):
    from grpo_verifiers._mathparse import MAX_DEPTH

    samples = [
        ("(" * MAX_DEPTH + "1" + ")" * MAX_DEPTH, "1"),  # 100 brackets: within the limit
        ("(" * (MAX_DEPTH + 1) + "1" + ")" * (MAX_DEPTH + 1), "1"),  # 101: refused
        ("-" * 250 + "1", "1"),  # signs are not nesting: 250 minus signs are +1
        ("-" * 251 + "1", "1"),
    ]
    verdicts = verifier.verify([{"completion": rf"\boxed{{{c}}}", "answer": g} for c, g in samples])
    assert [v.reward for v in verdicts] == [1.0, 0.0, 1.0, 0.0]
    assert ["refused" in v.info for v in verdicts] == [False, True, False, False]
    assert f"nested deeper than {MAX_DEPTH}" in verdicts[1].info["refused"]


def test_a_comparison_sympy_cannot_finish_times_out(verifier):
    # Expanding (x+y+z+w)^30 takes sympy about a minute; the worker is killed at 1 s.
    start = time.monotonic()
    slow, after = verifier.verify(
        [
            {"completion": r"\boxed{(x+y+z+w)^{30}}", "answer": "(x+y+z+w)^{29}(x+y+z+w+1)"},
            {"completion": r"\boxed{\sqrt{3} \cdot 2}", "answer": r"2\sqrt{3}"},  # a fresh worker decides the next
        ]
    )
    assert time.monotonic() - start < 1.0 + 15.0
    assert slow.reward == 0.0 and slow.info["timeout"] is True and "timed out" in slow.info["error"]
    assert after.reward == 1.0


def test_megabyte_strings_cost_the_caller_little(verifier):
    samples = [
        ("#### " + "9" * 150_000, "1"),  # a 150 kB number: refused by length
        (r"\boxed{" * 150_000, "1"),  # boxes that never close
        ("\\(" * 500_000, "1"),  # math spans that never close
        ("$" * 1_000_000, "1"),
        ("The answer is " * 70_000, "1"),
        ("x" * 1_000_000 + r" \boxed{2}", "2"),  # a long completion with its answer at the end
        (r"\boxed{1}", "1" * 1_000_000),  # a megabyte gold
    ]
    start = time.monotonic()
    verdicts = verifier.verify([{"completion": c, "answer": g} for c, g in samples])
    assert time.monotonic() - start < 10.0  # about 1 s on one busy core; no sympy involved
    assert [v.reward for v in verdicts] == [0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    assert verdicts[0].info["refused"] == f"answer or gold longer than {MAX_ANSWER_CHARS} characters"
    assert len(verdicts[0].info["extracted"]) < 300  # info stays small
    assert "refused" in verdicts[6].info


def test_invalid_text_is_read_with_replacements(verifier):
    verdicts = verifier.verify(
        [
            {"completion": b"\\boxed{2} \xff\xfe", "answer": "2"},  # bytes that are not UTF-8
            {"completion": "\\boxed{2} \udc80", "answer": "2"},  # a lone surrogate
            {"completion": "\\boxed{2\udc80}", "answer": "2"},  # ... inside the answer
            {"completion": "\\boxed{2}", "answer": "2\ud800"},
        ]
    )
    assert [v.reward for v in verdicts] == [1.0, 1.0, 0.0, 0.0]
    assert [v.info.get("sanitized", False) for v in verdicts] == [True, True, True, False]
    for verdict in verdicts:  # records are written as UTF-8 JSON
        json.dumps(verdict.info, ensure_ascii=False).encode("utf-8")


def test_fast_path_stays_in_process(verifier):
    # 2,000 plain-number samples decide without a worker (a broken watchdog would not matter).
    samples = [{"completion": f"... so she has {n} apples.\n#### {n}", "answer": f"#### {n}"} for n in range(2000)]
    verifier._watchdog.map = None  # any sympy job would now raise
    try:
        verdicts = verifier.verify(samples)
    finally:
        del verifier._watchdog.map
    assert all(v.reward == 1.0 for v in verdicts)
