"""The `math` verifier on the answer forms an independent labelled set caught (issue 14), each
category with equal cases and near misses. A case is `(completion, gold, reward)`."""

from __future__ import annotations

import pytest
from grpo_verifiers.math import MathVerifier, extract_answer


@pytest.fixture(scope="module")
def verifier():
    v = MathVerifier(timeout=3.0, workers=1)
    yield v
    v.close()


def reward(verifier, completion, gold, **sample):
    (verdict,) = verifier.verify([{"completion": completion, "answer": gold, **sample}])
    return verdict.reward


CASES = {
    "number_words": [
        (r"\boxed{twelve}", "12", 1.0),
        ("The answer is twenty-one.", "21", 1.0),
        (r"\boxed{none}", "0", 1.0),  # "how many are left? none"
        (r"\boxed{zero}", "0", 1.0),
        (r"\boxed{one hundred and five}", "105", 1.0),
        (r"\boxed{eleven}", "12", 0.0),
        (r"\boxed{twenty}", "21", 0.0),
        (r"\boxed{none}", "1", 0.0),
        (r"\boxed{one}", "12", 0.0),  # not "one" of something: 1
    ],
    "word_multipliers": [
        (r"\boxed{2.5 million}", "2500000", 1.0),
        (r"\boxed{2500000}", "2.5 million", 1.0),
        (r"\boxed{3 dozen}", "36", 1.0),
        (r"\boxed{1.2 billion}", "1200000000", 1.0),
        (r"\boxed{2.5 thousand}", "2500000", 0.0),
        (r"\boxed{2.5 million}", "250000", 0.0),
        (r"\boxed{2.5}", "2.5 million", 0.0),
    ],
    "thousands_separators": [
        (r"\boxed{1 234 567}", "1234567", 1.0),  # a space
        ("\\boxed{1\u2009234}", "1234", 1.0),  # a thin space
        ("\\boxed{1\u202f234}", "1234", 1.0),  # a narrow no-break space
        (r"\boxed{1,\!234}", "1234", 1.0),  # MATH's `,\!`
        (r"\boxed{12,\!345.5}", "12345.5", 1.0),
        (r"\boxed{1 234 567}", "1234568", 0.0),
        (r"\boxed{1,\!234}", "1243", 0.0),
        (r"\boxed{1 23}", "123", 0.0),  # not a group of three: not a thousands separator
    ],
    "unicode": [
        (r"\boxed{−5}", "-5", 1.0),
        (r"\boxed{3 × x}", "3x", 1.0),
        (r"\boxed{3 × 4}", "12", 0.0),  # a product left to compute
        (r"\boxed{x ÷ 4}", r"\frac{x}{4}", 1.0),
        (r"\boxed{12 ÷ 4}", "3", 0.0),
        (r"\boxed{x ≤ 3}", r"x \le 3", 1.0),
        (r"\boxed{x ≥ 3}", r"x \geq 3", 1.0),
        (r"\boxed{x ≠ 2}", r"x \neq 2", 1.0),
        (r"\boxed{2√3}", r"2\sqrt{3}", 1.0),
        (r"\boxed{√(2)}", r"\sqrt{2}", 1.0),
        (r"\boxed{2π}", r"2\pi", 1.0),
        (r"\boxed{30°}", r"30^\circ", 1.0),
        (r"\boxed{−5}", "5", 0.0),
        (r"\boxed{x ≤ 3}", r"x < 3", 0.0),
        (r"\boxed{x ≠ 2}", r"x \neq 3", 0.0),
        (r"\boxed{3√2}", r"2\sqrt{3}", 0.0),
    ],
    "repeating_decimals": [
        (r"\boxed{0.\overline{3}}", r"\frac{1}{3}", 1.0),
        (r"\boxed{0.1\overline{6}}", r"\frac{1}{6}", 1.0),
        (r"\boxed{0.\overline{12}}", r"\frac{4}{33}", 1.0),
        (r"\boxed{\frac{1}{3}}", r"0.\overline{3}", 1.0),
        (r"\boxed{0.\overline{3}}", r"\frac{3}{10}", 0.0),
        (r"\boxed{0.\overline{12}}", r"\frac{1}{8}", 0.0),
        (r"\boxed{0.1\overline{6}}", r"\frac{1}{3}", 0.0),
    ],
    "precision": [
        # Decimals at the gold's written precision: 12345.67 is "to the cent", so 12345.66 is a cent off.
        (r"\boxed{12345.66}", "12345.67", 0.0),
        (r"\boxed{12345.67}", "12345.67", 1.0),
        (r"\boxed{12,345.67}", "12345.67", 1.0),
        (r"\boxed{12345.671}", "12345.67", 0.0),  # a decimal the model wrote is taken at its word
        (r"\boxed{0.3333}", "0.333", 0.0),
        (r"\boxed{3.1}", "3.14", 0.0),  # coarser than the gold
        (r"\boxed{0.50}", "0.5", 1.0),
        # A value with no finite decimal is rounded at the gold's precision: 1/3 to 2 places is 0.33.
        (r"\boxed{\frac{1}{3}}", "0.33", 1.0),
        (r"\boxed{\frac{2}{3}}", "0.67", 1.0),  # 0.6666... rounds up
        (r"\boxed{\frac{2}{3}}", "0.66", 0.0),
        (r"\boxed{0.\overline{3}}", "0.333", 1.0),
        (r"\boxed{\frac{\sqrt{2}}{2}}", "0.71", 1.0),  # 0.7071...
        (r"\boxed{\frac{\sqrt{2}}{2}}", "0.70", 0.0),
        (r"\boxed{\frac{1}{16}}", "0.06", 0.0),  # 1/16 has a finite decimal, 0.0625: exact
        (r"\boxed{2^{-4}}", "0.06", 0.0),
        # Integers and fractions are exact: no tolerance at all.
        (r"\boxed{7.000000001}", "7", 0.0),
        (r"\boxed{7.0}", "7", 1.0),
        (r"\boxed{0.3333333}", r"\frac{1}{3}", 0.0),
        (r"\boxed{0.125}", r"\frac{1}{8}", 1.0),
        (r"\boxed{1000000008}", "1000000007", 0.0),
        # Irrational golds: a decimal within rel_tol (1e-6) of the value.
        (r"\boxed{3.14159265}", r"\pi", 1.0),
        (r"\boxed{3.1416}", r"\pi", 0.0),
        (r"\boxed{1.41421356}", r"\sqrt{2}", 1.0),
        (r"\boxed{1.414}", r"\sqrt{2}", 0.0),
    ],
    "prose_in_box": [
        (r"\boxed{\text{The answer is } 6}", "6", 1.0),
        (r"\boxed{36\pi \text{ square units}}", r"36\pi", 1.0),
        (r"\boxed{\text{6 apples}}", "6", 1.0),
        ("Final Answer: The largest $n$ is 34.", "34", 1.0),
        ("The answer is 7, not 8.", "7", 1.0),
        (r"\boxed{\text{The answer is } 7}", "6", 0.0),
        (r"\boxed{36 \text{ square units}}", r"36\pi", 0.0),
        ("Final Answer: The largest $n$ is 34.", "35", 0.0),
        ("The answer is 7, not 8.", "8", 0.0),
    ],
    "equations": [
        (r"\boxed{2x - y + 3 = 0}", "y = 2x + 3", 1.0),  # general form vs slope-intercept
        (r"\boxed{y = 2x + 3}", "2x - y + 3 = 0", 1.0),
        (r"\boxed{y = 5 - x}", "x + y = 5", 1.0),
        (r"\boxed{2x - y - 3 = 0}", "y = 2x + 3", 0.0),
        (r"\boxed{y = 2x + 3}", "y = 2x - 3", 0.0),
    ],
    "inequalities": [
        (r"\boxed{-x < -3}", "x > 3", 1.0),  # negated: both sides times -1, the sign flipped
        (r"\boxed{3 < x}", "x > 3", 1.0),  # written the other way round
        (r"\boxed{2x + 1 \le 7}", r"x \le 3", 1.0),
        (r"\boxed{-x > -3}", "x > 3", 0.0),
        (r"\boxed{x \ge 3}", "x > 3", 0.0),
        (r"\boxed{3 > x}", "x > 3", 0.0),
    ],
    "chains": [
        (r"\boxed{5 > x > 1}", "1 < x < 5", 1.0),
        (r"\boxed{c > b > a}", "a < b < c", 1.0),
        (r"\boxed{1 < x \le 5}", "1 < x < 5", 0.0),
        (r"\boxed{5 > x > 2}", "1 < x < 5", 0.0),
    ],
    "ascii_operators": [
        (r"\boxed{x != 2}", r"x \ne 2", 1.0),
        (r"\boxed{x <= 3}", r"x \leq 3", 1.0),
        (r"\boxed{x >= 3}", r"x \geq 3", 1.0),
        (r"\boxed{x != 2}", r"x \ne 3", 0.0),
        (r"\boxed{x <= 3}", r"x < 3", 0.0),
    ],
    "sets": [
        (r"\boxed{\{1, 2\} \cup \{3\}}", r"\{1, 2, 3\}", 1.0),  # a union, evaluated
        (r"\boxed{(-\infty, 2] \cup [2, 5)}", r"(-\infty, 5)", 1.0),
        (r"\boxed{(-\infty, 2) \cup (2, 5)}", r"(-\infty, 5)", 0.0),  # 2 is missing
        (r"\boxed{\{1, 2\} \cup \{4\}}", r"\{1, 2, 3\}", 0.0),
        ("The solutions are $\\boxed{2}$ and $\\boxed{3}$.", r"\{2, 3\}", 1.0),  # several boxes: one set
        (r"$x = \boxed{-1}$ or $x = \boxed{4}$", "-1, 4", 1.0),
        ("The solutions are $\\boxed{2}$ and $\\boxed{3}$.", "2", 0.0),  # a hedge is not the answer
        ("The solutions are $\\boxed{2}$ and $\\boxed{4}$.", r"\{2, 3\}", 0.0),
        (r"\boxed{\{5\}}", "5", 1.0),  # a singleton set and its element
        (r"\boxed{5}", r"\{5\}", 1.0),
        (r"\boxed{\{5, 6\}}", "5", 0.0),
        (r"\boxed{\{6\}}", "5", 0.0),
    ],
    "matrices": [
        (
            r"\boxed{2\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}}",
            r"\begin{pmatrix} 2 & 4 \\ 6 & 8 \end{pmatrix}",
            1.0,
        ),
        (
            r"\boxed{\frac{1}{2}\begin{pmatrix} 2 & 4 \\ 6 & 8 \end{pmatrix}}",
            r"\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}",
            1.0,
        ),
        (
            r"\boxed{2\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}}",
            r"\begin{pmatrix} 2 & 4 \\ 6 & 9 \end{pmatrix}",
            0.0,
        ),
        (
            r"\boxed{3\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}}",
            r"\begin{pmatrix} 2 & 4 \\ 6 & 8 \end{pmatrix}",
            0.0,
        ),
    ],
    "complex_modulus": [
        # A modulus is read, but one left to evaluate earns nothing against a stated value.
        (r"\boxed{|3 + 4i|}", "|4 + 3i|", 1.0),
        (r"\boxed{\left| 1 + i \right|}", r"|1 - i|", 1.0),
        (r"\boxed{|3 - 4i|}", "5", 0.0),
        (r"\boxed{|3 + 4i|}", "7", 0.0),
        (r"\boxed{|1 + i|}", "2", 0.0),
    ],
    "units": [
        (r"\boxed{60 \text{ mph}}", r"60 \text{ miles per hour}", 1.0),
        (r"\boxed{60 \text{ km/h}}", r"60 \text{ kilometers per hour}", 1.0),
        (r"\boxed{5 \text{ meters}}", r"5 \text{ m}", 1.0),
        (r"\boxed{60 \text{ mph}}", r"60 \text{ km/h}", 0.0),
        (r"\boxed{\frac{\pi}{6}}", r"30^\circ", 0.0),  # radians vs degrees: never equal
        (r"\boxed{30 \text{ radians}}", r"30^\circ", 0.0),
        (r"\boxed{30^\circ}", r"\frac{\pi}{6} \text{ radians}", 0.0),
        (r"\boxed{5 \text{ cm}^2}", r"5 \text{ cm}", 0.0),  # a different dimension
        (r"\boxed{5 \text{ seconds}}", r"5 \text{ m}", 0.0),
    ],
    "multiple_choice": [
        (r"\boxed{(C) 24}", "C", 1.0),
        (r"\boxed{C. 24}", "C", 1.0),
        ("The answer is (C) $\\frac{1}{2}$.", "C", 1.0),
        (r"\boxed{\text{(C) } 24}", r"\text{(C)}", 1.0),
        (r"\boxed{(B) 24}", "C", 0.0),
        (r"\boxed{C or D}", "C", 0.0),
    ],
    "text": [
        (r"\boxed{tuesday.}", "Tuesday", 1.0),
        (r"\boxed{\text{No Solution!}}", r"\text{no solution}", 1.0),
        (r"\boxed{\text{north-east}}", "North East", 1.0),
        ("The answer is yes.", "Yes", 1.0),
        (r"\boxed{Thursday}", "Tuesday", 0.0),
        (r"\boxed{\text{odd}}", r"\text{even}", 0.0),
        ("The answer is no.", "Yes", 0.0),
    ],
    "base_subscripts": [
        (r"\boxed{204_5}", "204", 1.0),
        (r"\boxed{204}", "204_5", 1.0),
        (r"\boxed{204_{5}}", "204_5", 1.0),
        (r"\boxed{1011_2}", r"1011_{2}", 1.0),
        (r"\boxed{204_6}", "204_5", 0.0),  # the digits agree but not the base
        (r"\boxed{205_5}", "204_5", 0.0),
        (r"\boxed{204_5}", "54", 0.0),  # its value, not its digits: left to the problem's base
    ],
}


@pytest.mark.parametrize(
    "category, completion, gold, expected",
    [(category, *case) for category, cases in CASES.items() for case in cases],
    ids=[f"{category}-{i}" for category, cases in CASES.items() for i in range(len(cases))],
)
def test_category(verifier, category, completion, gold, expected):
    assert reward(verifier, completion, gold) == expected


def test_every_category_has_equal_and_near_miss_cases():
    for category, cases in CASES.items():
        assert {expected for _, _, expected in cases} == {0.0, 1.0}, category


# ------------------------------------------------------------- extraction that cannot be gamed

PROBLEM = "Natalia sold clips to 48 of her friends in April, and then half as many in May. How many in May?"


@pytest.mark.parametrize(
    "completion, gold, expected",
    [
        # Strict (the default): only a marked answer (`\boxed{}`, `####`, "the answer is") or a
        # completion that is nothing but an answer counts; an unmarked last number never does.
        ("She sold 48 clips in April and half as many in May, that is 24", "24", 0.0),
        ("24", "24", 1.0),
        (r"$24$", "24", 1.0),
        ("#### 24", "24", 1.0),
        ("The answer is 24.", "24", 1.0),
        ("So in May she sold 24 clips.", "24", 0.0),  # right, but unmarked: strict rejects it
    ],
)
def test_strict_extraction_is_the_default(verifier, completion, gold, expected):
    assert reward(verifier, completion, gold, prompt=PROBLEM) == expected


@pytest.fixture(scope="module")
def flexible():
    v = MathVerifier(extract="flexible", timeout=3.0, workers=1)
    yield v
    v.close()


@pytest.mark.parametrize(
    "completion, gold, expected",
    [
        ("So in May she sold 24 clips.", "24", 1.0),  # the last number, not in the problem
        # Restating the problem: the last number is one the problem wrote, never rewarded.
        ("Natalia sold clips to 48 of her friends in April", "48", 0.0),
        ("Let $x$ be the clips in May; she sold 48 in April", "48", 0.0),
        (r"In April she sold $48$", "48", 0.0),  # a math span is unmarked too
        ("In April she sold 48, so in May 24", "25", 0.0),
        ("#### 48", "48", 1.0),  # a marked answer is the model's claim, even when the problem has it
    ],
)
def test_flexible_fallback_never_rewards_a_restated_number(flexible, completion, gold, expected):
    assert reward(flexible, completion, gold, prompt=PROBLEM) == expected


def test_the_restated_number_is_said(flexible):
    (verdict,) = flexible.verify([{"completion": "She sold 48 in April", "answer": "48", "prompt": PROBLEM}])
    assert verdict.reward == 0.0 and "restates the problem" in verdict.info["restated"]


def test_strict_verdicts_say_what_flexible_would_give(verifier):
    # `grpo eval` reports both scores (as lm-eval-harness does strict-match and flexible-extract).
    samples = [
        {"completion": "So in May she sold 24 clips.", "answer": "24", "prompt": PROBLEM},
        {"completion": r"\boxed{24}", "answer": "24", "prompt": PROBLEM},
        {"completion": "She sold 48 in April", "answer": "48", "prompt": PROBLEM},
    ]
    verdicts = verifier.verify(samples)
    assert [v.reward for v in verdicts] == [0.0, 1.0, 0.0]
    assert [v.info["flexible"] for v in verdicts] == [1.0, 1.0, 0.0]


def test_the_bare_answer_extractor():
    assert extract_answer("  24.  ", ["bare"]) == ("bare", "24.")
    assert extract_answer(r"\frac{3}{4}", ["bare"]) == ("bare", r"\frac{3}{4}")
    assert extract_answer("She sold 24 clips in May", ["bare"]) is None  # a sentence
    assert extract_answer("24\n\nbecause 48 / 2 = 24", ["bare"]) is None  # more than one line
