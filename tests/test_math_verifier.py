"""The `math` verifier: extraction, equivalence (fast path and sympy), timeouts, and its watchdog."""

from __future__ import annotations

import math
import threading
import time

import pytest
from grpo_verifiers._watchdog import Watchdog
from grpo_verifiers.math import FLEXIBLE_EXTRACT, MathVerifier, canonical, extract_answer, extract_gold, normalize


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
        (r"so the answer is \fbox{12}.", ("boxed", "12")),
        ("Final Answer: The final answer is $3$. I hope it is correct.", ("answer_is", "$3$")),  # the last marker
        ("The correct option is (C).", ("answer_is", "(C)")),
        (r"Dividing gives $\frac{6}{8}$, that is $\frac{3}{4}$.", ("dollars", r"\frac{3}{4}")),  # the last span
        (r"Adding gives \(2 + 3 = 5\) apples", ("dollars", "5")),  # the right side of an equation
        (r"so $y = 2x + 1$", ("dollars", "y = 2x + 1")),  # but a lone letter's equation stays whole
        ("She pays $5 for eggs and $13 for flour, $18 in all.", ("last_number", "18")),  # prices, not math
        ("Let $x$ be the number of apples: there are 5.", ("last_number", "5")),  # a number after the span
        ("The speed is 1.5e3 m/s", ("last_number", "1.5e3")),
    ],
)
def test_extract_answer(text, expected):
    # Flexible extraction (the unmarked fallbacks too); the default is strict (test_math_categories).
    assert extract_answer(text, FLEXIBLE_EXTRACT) == expected


def test_extract_order_is_configurable():
    text = r"The answer is 5. Or rather \boxed{6}"
    assert extract_answer(text, ["answer_is", "boxed"]) == ("answer_is", "5")
    assert extract_answer(text, ["boxed"]) == ("boxed", "6")


def test_gold_from_full_solutions():
    assert extract_gold("She has 3 + 4 = 7 apples, 7 * 10 = 70 ...\n#### 72") == "72"
    assert extract_gold(r"So the ratio is $\boxed{\frac{3}{4}}$.") == r"\frac{3}{4}"
    # No marker: the whole string, never its last number (a gold \frac{3}{4} is not 4).
    assert extract_gold(r" \frac{3}{4} ") == r"\frac{3}{4}"
    assert extract_gold(r"2\sqrt{3}") == r"2\sqrt{3}"
    assert extract_gold(r"$\frac{1}{2}$") == r"\frac{1}{2}"


@pytest.mark.parametrize(
    "raw, key",
    [
        ("21", "21"),
        ("21.00", "21"),
        ("$21", "21"),
        ("21 apples", "21"),
        ("1,234", "1234"),
        ("0.75", "3/4"),
        ("6/8", "6/8"),  # a fraction left to reduce keeps its form: it votes apart from 3/4
        ("3/4", "3/4"),
        (r"\dfrac{3}{4}", "3/4"),
        (r"\frac34", "3/4"),
        (r"-\frac{1}{2}", "-1/2"),
        ("50%", "50"),  # a percent sign is a unit: 50% is 50, not 1/2
        (r"50\%", "50"),
        (r"90^\circ", "90"),
        ("x = 5", "5"),
        (r"\left( 1, 2 \right)", "(1,2)"),  # not a plain number: the text without spaces
        (r"2\frac{1}{2}", "5/2"),
        ("2 1/2", "5/2"),
        (r"1.5\times 10^{3}", "1500"),
        ("1.5e3", "1500"),
        (r"\text{(C)}", "C"),
        (r"\text{ Tuesday }", "tuesday"),
    ],
)
def test_canonical(raw, key):
    assert canonical(normalize(raw)) == key


@pytest.mark.parametrize(
    "raw, key",
    [
        ("x = 5", "x=5"),  # `y = 5` may be wrong where `x = 5` is right: the letter stays in the key
        ("21 apples", "21 apple"),
        ("10 million", "10000000"),  # a word that changes the value is no unit: it scales the number
        ("50 percent", "50"),
        (r"7\text{ kg}", "7 kg"),
        (r"7 \text{ kilograms}", "7 kg"),
        (r"90 \text{ square units}", "90"),  # generic units are no unit
        ("2 3", "2 3"),  # the product 6, not 23
    ],
)
def test_canonical_keeps_letters_and_units(raw, key):
    assert canonical(raw) == key


@pytest.mark.parametrize(
    "completion, gold, reward",
    [
        (r"\boxed{7}", "7", 1.0),
        (r"\boxed{7.01}", "7", 0.0),  # near miss: 0.14% off, far above rel_tol 1e-6
        (r"\boxed{7.000000001}", "7", 0.0),  # an integer gold is exact (the precision rule)
        (r"\boxed{1/2}", "0.5", 1.0),
        (r"\boxed{\frac{1}{2}}", "0.5", 1.0),
        ("The answer is 1,234.", "1234", 1.0),
        ("#### 1234", "1,234", 1.0),
        ("The answer is -3.", "3", 0.0),
        (r"\boxed{50\%}", "50", 1.0),
        (r"\boxed{50\%}", "0.5", 0.0),  # documented choice: % is a unit, not /100
        ("so she earns $18 dollars.", "Janet sells 16 - 3 - 4 = 9 eggs ... 9 * 2 = 18\n#### 18", 0.0),  # unmarked
        ("so she earns $18 dollars.\n#### 18", "Janet sells 16 - 3 - 4 = 9 eggs ... 9 * 2 = 18\n#### 18", 1.0),
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
        (r"\boxed{x^2 - 1}", "(x-1)(x+1)", 0.0),  # a factored gold wants a factored answer
        (r"\boxed{(x+1)(x-1)}", "(x-1)(x+1)", 1.0),
        (r"\boxed{2\pi}", r"2 \pi", 1.0),
        (r"\boxed{6.28}", r"2\pi", 0.0),  # 0.05% off: not within rel_tol
        (r"\boxed{\sqrt[3]{8}}", "2", 0.0),  # a radical left to evaluate
        (r"\boxed{\sqrt[3]{2}}", "2^{1/3}", 1.0),
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


# Every category of the issue: (completion, gold, reward), equivalent forms and near misses.
CATEGORIES = {
    "thousands": [
        (r"\boxed{1,234}", "1234", 1.0),
        (r"\boxed{1{,}234}", "1234", 1.0),
        (r"\boxed{1\,234}", "1234", 1.0),
        (r"\boxed{12,34}", "1234", 0.0),
        (r"\boxed{\{1, 2\}}", "1,2", 1.0),  # `1,2` is a list, `1,234` a number
        (r"\boxed{1000000008}", "1000000007", 0.0),  # integers are exact: no rel_tol
        (r"\boxed{1000000008.0}", "1000000007", 0.0),  # judged by value: the same key as 1000000008
    ],
    "decimals": [(r"\boxed{.5}", "0.50", 1.0), (r"\boxed{2.750}", "2.75", 1.0), (r"\boxed{2.57}", "2.75", 0.0)],
    "fractions": [
        (r"\boxed{\dfrac{3}{4}}", r"\frac{3}{4}", 1.0),
        (r"\boxed{6/8}", r"\frac{3}{4}", 0.0),  # a fraction left to reduce
        (r"\boxed{3/4}", r"\frac{3}{4}", 1.0),
        (r"\boxed{\frac{1}{-2}}", r"-\frac{1}{2}", 1.0),
        (r"\boxed{\frac{4}{3}}", r"\frac{3}{4}", 0.0),
    ],
    "mixed numbers": [
        (r"\boxed{2\frac{1}{2}}", r"\frac{5}{2}", 1.0),
        (r"\boxed{2.5}", "2 1/2", 1.0),
        (r"\boxed{-3\frac{1}{4}}", "-3.25", 1.0),
        (r"\boxed{1}", r"2\frac{1}{2}", 0.0),  # not 2 * 1/2
    ],
    "percentages": [
        (r"\boxed{12.5\%}", "12.5", 1.0),
        ("So it is 25 percent.", "25", 0.0),  # unmarked: strict extraction finds no answer
        ("The answer is 25 percent.", "25", 1.0),
        (r"\boxed{0.5}", r"50\%", 0.0),
    ],
    "scientific": [
        (r"\boxed{1.5e3}", "1500", 1.0),
        (r"\boxed{1.5\times10^3}", "1500", 1.0),
        (r"\boxed{0.0003}", r"3 \times 10^{-4}", 1.0),
        (r"\boxed{1.5e4}", "1500", 0.0),
    ],
    "negatives": [(r"\boxed{−3}", "-3", 1.0), (r"\boxed{-(3)}", "-3", 1.0), (r"\boxed{3}", "-3", 0.0)],
    "radicals": [
        (r"\boxed{\sqrt{12}}", r"2\sqrt{3}", 0.0),  # a square factor left in the radical
        (r"\boxed{\sqrt{3} \cdot 2}", r"2\sqrt{3}", 1.0),
        (r"\boxed{2\sqrt[3]{2}}", r"\sqrt[3]{16}", 1.0),
        (r"\boxed{1+\sqrt{2}}", r"\sqrt{3+2\sqrt{2}}", 1.0),
        (r"\boxed{\sqrt{6}}", r"2\sqrt{3}", 0.0),
        (r"\boxed{1.414}", r"\sqrt{2}", 0.0),
    ],
    "pi and e": [
        (r"\boxed{\pi/2}", r"\frac{\pi}{2}", 1.0),
        (r"\boxed{\exp(2)}", "e^2", 1.0),
        (r"\boxed{e^{-1}}", r"\frac{1}{e}", 1.0),
        (r"\boxed{2e}", "e^2", 0.0),
        (r"\boxed{3.14}", r"\pi", 0.0),
    ],
    "symbolic": [
        (r"\boxed{\sin(2x)}", r"2\sin x \cos x", 1.0),
        (r"\boxed{1}", r"\sin^2 x + \cos^2 x", 1.0),
        (r"\boxed{3}", r"\log_2 8", 1.0),
        (r"\boxed{1073741825}", "2^{30}", 0.0),  # exact, not within rel_tol
        (r"\boxed{(x-y)^2}", "x^2+2xy+y^2", 0.0),
    ],
    "equations": [
        (r"\boxed{x = 3}", "3", 1.0),
        (r"\boxed{2x+1}", "y = 2x+1", 1.0),
        (r"\boxed{5 = x}", "5", 1.0),
        (r"\boxed{2x+2y=6}", "x+y=3", 1.0),
        (r"\boxed{y=3}", "x=3", 0.0),
        (r"\boxed{x-y=3}", "x+y=3", 0.0),
        (r"\boxed{x=4 \text{ or } x=-4}", "4, -4", 1.0),
        (r"\boxed{f(x) = 2x}", "2x", 1.0),
    ],
    "inequalities": [
        (r"\boxed{3<x}", "x>3", 1.0),
        (r"\boxed{3 \le x}", r"x \ge 3", 1.0),
        (r"\boxed{x > 3}", r"(3, \infty)", 1.0),
        (r"\boxed{4 \ge x > -1}", r"-1 < x \le 4", 1.0),
        (r"\boxed{x \geq 3}", "x>3", 0.0),
        (r"\boxed{x+y<1}", "x+y>1", 0.0),
    ],
    "intervals": [
        (r"\boxed{\left(1, 2\right]}", "(1,2]", 1.0),
        (r"\boxed{(2,\infty)\cup(-\infty,1)}", r"(-\infty,1)\cup(2,\infty)", 1.0),
        (r"\boxed{[1,2]}", "(1,2]", 0.0),
        (r"\boxed{(-\infty,1]\cup(2,\infty)}", r"(-\infty,1)\cup(2,\infty)", 0.0),
    ],
    "sets and tuples": [
        (r"\boxed{\{2, 1\}}", r"\{1, 2\}", 1.0),
        (r"\boxed{-2, 1}", "1, -2", 1.0),
        (r"\boxed{\{1, 2, 3\}}", r"\{1, 2\}", 0.0),
        (r"\boxed{(2, 1)}", "(1, 2)", 0.0),
        (r"\boxed{\{1, 2\}}", "(1, 2)", 0.0),
        (r"\boxed{x=1, y=2}", "(1, 2)", 1.0),
    ],
    "matrices": [
        (r"\boxed{\begin{bmatrix}1&2\\3&4\end{bmatrix}}", r"\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}", 1.0),
        (r"\boxed{\begin{pmatrix}1&3\\2&4\end{pmatrix}}", r"\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}", 0.0),
        (r"\boxed{\begin{pmatrix}1&2&3&4\end{pmatrix}}", r"\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}", 0.0),
    ],
    "plus-minus": [
        (r"\boxed{\pm 2}", "2, -2", 1.0),
        (r"\boxed{-2, 2}", r"\pm 2", 1.0),
        (r"\boxed{1+\sqrt2, 1-\sqrt2}", r"1 \pm \sqrt{2}", 1.0),
        (r"\boxed{2}", r"\pm 2", 0.0),
        (r"\boxed{-1 \pm \sqrt{2}}", r"1 \pm \sqrt{2}", 0.0),
    ],
    "infinity": [
        (r"\boxed{+\infty}", r"\infty", 1.0),
        (r"\boxed{∞}", r"\infty", 1.0),
        (r"\boxed{\text{infinity}}", r"\infty", 1.0),
        (r"\boxed{-\infty}", r"\infty", 0.0),
        (r"\boxed{[0, \infty)}", r"(0, \infty)", 0.0),
    ],
    "complex": [
        (r"\boxed{2i+3}", "3+2i", 1.0),
        (r"\boxed{i^2}", "-1", 0.0),  # a power left to evaluate
        (r"\boxed{-i}", r"-1 \cdot i", 1.0),
        (r"\boxed{\frac{1}{1+i}}", r"\frac{1-i}{2}", 1.0),
        (r"\boxed{3-2i}", "3+2i", 0.0),
        (r"\boxed{3+2}", "3+2i", 0.0),
    ],
    "degrees": [
        (r"\boxed{30^{\circ}}", "30", 1.0),
        (r"\boxed{120 \text{ degrees}}", r"120^\circ", 1.0),
        (r"\boxed{60^\circ}", "30", 0.0),
    ],
    "units": [
        (r"\boxed{5\text{ cm}}", "5", 1.0),
        (r"\boxed{5}", "5 cm", 1.0),
        (r"\boxed{5 \text{ centimeters}}", r"5\text{ cm}", 1.0),
        (r"\boxed{10 \text{ m}}", "10", 1.0),
        (r"\boxed{7\text{ kg}}", r"7\text{ g}", 0.0),
        (r"\boxed{12 \text{ cm}}", r"12\text{ cm}^2", 0.0),
        (r"\boxed{6 \text{ cm}}", "5", 0.0),
        (r"\boxed{10 \text{ million}}", "10", 0.0),
    ],
    "multiple choice": [
        (r"\boxed{(C)}", "C", 1.0),
        (r"\boxed{\text{(C)}}", "C", 1.0),
        ("The answer is (C) 24.", "C", 1.0),
        (r"\boxed{C}", r"\text{(C)}", 1.0),
        ("The answer is C or D.", "C", 0.0),
        (r"\boxed{C, D}", "C", 0.0),
        ("The answer is (C) or (D).", "C", 0.0),
        (r"\boxed{D}", "C", 0.0),
    ],
    "text": [
        (r"\boxed{tuesday}", r"\text{Tuesday}", 1.0),
        (r"\boxed{\text{No Solution}}", r"\text{no solution}", 1.0),
        (r"\boxed{Thursday}", r"\text{Tuesday}", 0.0),
        (r"\boxed{\text{York}}", "New York", 0.0),
    ],
}


@pytest.mark.parametrize("category", list(CATEGORIES))
def test_categories(verifier, category):
    cases = CATEGORIES[category]
    verdicts = verifier.verify([{"completion": completion, "answer": gold} for completion, gold, _ in cases])
    got = [(completion, gold, verdict.reward) for (completion, gold, _), verdict in zip(cases, verdicts)]
    assert got == cases
    assert {reward for *_, reward in cases} == {0.0, 1.0}  # equivalent forms and near misses


def test_relative_tolerance_is_configurable():
    # rel_tol is for decimals against irrational values: 1.4142 is 1.5e-5 off sqrt(2), wrong at the
    # default 1e-6, right at 1e-4; integers stay exact and a decimal gold keeps its precision rule.
    loose = MathVerifier(rel_tol=1e-4, workers=1)
    try:
        assert [
            v.reward
            for v in loose.verify(
                [
                    {"completion": r"\boxed{1.4142}", "answer": r"\sqrt{2}"},
                    {"completion": r"\boxed{70001}", "answer": "70000"},
                    {"completion": r"\boxed{7.0001}", "answer": "7"},
                ]
            )
        ] == [1.0, 0.0, 0.0]
    finally:
        loose.close()


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
    assert MathVerifier(extract="boxed|dollars").extract == ("boxed", "dollars")  # from --verifier


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
