"""The `math` verifier: extraction, equivalence (fast path and sympy), timeouts, and its watchdog."""

from __future__ import annotations

import math
import threading
import time

import pytest

from grpo_verifiers._watchdog import Watchdog
from grpo_verifiers.math import MathVerifier, canonical, extract_answer, extract_gold, normalize


@pytest.fixture(scope="module")
def verifier():
    v = MathVerifier(timeout=2.0, workers=1)
    yield v
    v.close()


def judge(verifier, completion, answer):
    (verdict,) = verifier.verify([{"completion": completion, "answer": answer}])
    return verdict


@pytest.mark.parametrize(
    "text, expected",
    [
        (r"so $\boxed{\frac{1}{\sqrt{2}}}$.", ("boxed", r"\frac{1}{\sqrt{2}}")),
        (r"first \boxed{1}, finally \boxed{\{1, 2\}}", ("boxed", r"\{1, 2\}")),  # the last one, escaped braces
        (r"\boxed{12", ("last_number", "12")),  # truncated: never closes
        ("Natalia sold 48/2 = 24 clips.\n#### 72", ("hash", "72")),
        ("The answer is 3.5. Done.", ("answer_is", "3.5")),
        ("**Answer:** 42", ("answer_is", "42")),
        ("2023-2020 = 3 years later", ("last_number", "3")),  # not -2020
        ("so x = -3", ("last_number", "-3")),
        ("total $1,234.50.", ("last_number", "1,234.50")),
        ("no digits here", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_extract_order_is_configurable():
    text = r"The answer is 5. Or rather \boxed{6}"
    assert extract_answer(text, ["answer_is", "boxed"]) == ("answer_is", "5")
    assert extract_answer(text, ["boxed"]) == ("boxed", "6")


def test_gold_from_full_solutions():
    assert extract_gold("She has 3 + 4 = 7 apples, 7 * 10 = 70 ...\n#### 72") == "72"
    assert extract_gold(r"So the ratio is $\boxed{\frac{3}{4}}$.") == r"\frac{3}{4}"
    # No marker: the whole string, never its last number (a gold \frac{3}{4} is not 4).
    assert extract_gold(r" \frac{3}{4} ") == r"\frac{3}{4}"


@pytest.mark.parametrize(
    "raw, key",
    [
        ("21", "21"),
        ("21.00", "21"),
        ("$21", "21"),
        ("21 apples", "21"),
        ("1,234", "1234"),
        ("0.75", "3/4"),
        ("6/8", "3/4"),
        (r"\dfrac{3}{4}", "3/4"),
        (r"\frac34", "3/4"),
        (r"-\frac{1}{2}", "-1/2"),
        ("50%", "50"),  # a percent sign is a unit: 50% is 50, not 1/2
        (r"50\%", "50"),
        (r"90^\circ", "90"),
        ("x = 5", "5"),
        (r"\left( 1, 2 \right)", "(1,2)"),  # not a plain number: the text without spaces
    ],
)
def test_canonical(raw, key):
    assert canonical(normalize(raw)) == key


@pytest.mark.parametrize(
    "completion, gold, reward",
    [
        (r"\boxed{7}", "7", 1.0),
        (r"\boxed{7.01}", "7", 0.0),  # near miss: 0.14% off, far above rel_tol 1e-6
        (r"\boxed{7.000000001}", "7", 1.0),  # within rel_tol
        (r"\boxed{1/2}", "0.5", 1.0),
        (r"\boxed{\frac{1}{2}}", "0.5", 1.0),
        ("The answer is 1,234.", "1234", 1.0),
        ("#### 1234", "1,234", 1.0),
        ("The answer is -3.", "3", 0.0),
        (r"\boxed{50\%}", "50", 1.0),
        (r"\boxed{50\%}", "0.5", 0.0),  # documented choice: % is a unit, not /100
        ("so she earns $18 dollars.", "Janet sells 16 - 3 - 4 = 9 eggs ... 9 * 2 = 18\n#### 18", 1.0),
        ("He needs 70 more.", "Natalia sold 48/2 = 24 clips in May.\n#### 72", 0.0),
        (r"The ratio is $\boxed{0.75}$", r"so $\boxed{\frac{3}{4}}$", 1.0),
        (r"\boxed{\dfrac{3}{4}}", r"The probability is $\boxed{\frac{3}{4}}$.", 1.0),
    ],
)
def test_fast_path(verifier, completion, gold, reward):
    verdict = judge(verifier, completion, gold)
    assert verdict.reward == reward, verdict.info
    assert "timeout" not in verdict.info  # decided without sympy


@pytest.mark.parametrize(
    "completion, gold, reward",
    [
        (r"\boxed{\frac{\sqrt{2}}{2}}", r"\frac{1}{\sqrt{2}}", 1.0),
        (r"\boxed{\frac{\sqrt{2}}{2}}", r"\frac{1}{2}", 0.0),
        (r"\boxed{2x+1}", "1 + 2x", 1.0),
        (r"\boxed{x^2 - 1}", "(x-1)(x+1)", 1.0),
        (r"\boxed{2\pi}", r"2 \pi", 1.0),
        (r"\boxed{6.28}", r"2\pi", 0.0),  # 0.05% off: not within rel_tol
        (r"\boxed{\sqrt[3]{8}}", "2", 1.0),
        (r"\boxed{(1, 2)}", r"\left(1,2\right)", 1.0),
        (r"\boxed{(2, 1)}", "(1, 2)", 0.0),  # tuples are ordered
        (r"\boxed{[0, 1)}", "(0, 1]", 0.0),  # intervals keep their brackets
        (r"\boxed{-2, 1}", "1, -2", 1.0),  # a list of solutions is unordered
        (r"\boxed{\{1, 2\}}", r"\{2, 1\}", 1.0),
        (r"\boxed{x = 5}", "5", 1.0),
        (r"\boxed{x + y = 3}", "3 - y = x", 1.0),  # equations up to sign
        (r"\boxed{5\text{ cm}^2}", "5", 1.0),
        (r"\boxed{\text{Tuesday}}", r"\text{Tuesday}", 1.0),
        (r"\boxed{Tuesday}", "Monday", 0.0),
    ],
)
def test_sympy_path(verifier, completion, gold, reward):
    verdict = judge(verifier, completion, gold)
    assert verdict.reward == reward, verdict.info
    assert "error" not in verdict.info


def test_no_answer_extracted(verifier):
    verdict = judge(verifier, "I am not sure.", "7")
    assert verdict.reward == 0.0
    assert verdict.info["extracted"] is None


def test_no_gold_is_not_applicable(verifier):
    (verdict,) = verifier.verify([{"completion": r"\boxed{7}"}])
    assert verdict.reward is None


def test_pathological_input_times_out(verifier):
    start = time.monotonic()
    verdicts = verifier.verify(
        [
            {"completion": r"\boxed{9^{9^{9^{9}}}}", "answer": "1"},
            {"completion": r"\boxed{\frac{\sqrt{2}}{2}}", "answer": r"\frac{1}{\sqrt{2}}"},  # the next item still works
        ]
    )
    elapsed = time.monotonic() - start
    assert verdicts[0].reward == 0.0
    assert verdicts[0].info["refused"].startswith("refused: a power with more than")  # refused before evaluating
    assert verdicts[1].reward == 1.0
    assert elapsed < 2.0 + 15.0  # the timeout plus a worker restart on a busy machine


def test_verify_from_a_thread(verifier):
    results = []
    thread = threading.Thread(target=lambda: results.append(judge(verifier, r"\boxed{x^2}", "x*x")))
    thread.start()
    thread.join(timeout=30)
    assert [v.reward for v in results] == [1.0]


def test_bad_options():
    with pytest.raises(ValueError, match="extract"):
        MathVerifier(extract=["boxed", "nope"])
    with pytest.raises(TypeError):
        MathVerifier(tolerance=0.1)
    assert MathVerifier(extract="hash, boxed").extract == ("hash", "boxed")


def test_watchdog_kills_overruns_off_the_main_thread():
    with Watchdog(workers=2) as dog:
        outcomes = []
        thread = threading.Thread(target=lambda: outcomes.extend(dog.map(time.sleep, [0.01, 30, 0.01], timeout=1.0)))
        start = time.monotonic()
        thread.start()
        thread.join(timeout=30)
        assert time.monotonic() - start < 15
        assert [o.timed_out for o in outcomes] == [False, True, False]
        # The killed worker was replaced; errors come back as values, not exceptions.
        again = dog.map(math.sqrt, [4, -1], timeout=5.0)
        assert again[0].value == 2.0
        assert again[1].error == "ValueError: math domain error"
