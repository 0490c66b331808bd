"""The cheats a policy finds, per task family, and the controls that must still earn.

The rule under test (docs/design.md, "A reward is for stating the result"): a candidate that still
holds work the checker would have to do to reach the gold earns 0, in both extraction modes. Each
family below lists what a policy under RL was seen to write or would find (the problem restated,
a partly evaluated expression, a hedge, several answers, code, an expression inside `\\text{}`) and
answers that state the result in another allowed way (reordering, a chain ending in the value, an
assignment `x = 7`), which must keep earning. `benchmarks/math_checker.py` runs the same table
(`CASES`) against Math-Verify.
"""

from __future__ import annotations

import pytest
from grpo_verifiers.math import MathVerifier

# (family, prompt, gold, completion, is_cheat)
CASES: list[tuple[str, str, str, str, bool]] = []


def _family(name: str, prompt: str, gold: str, cheats: list[str], controls: list[str]) -> None:
    CASES.extend((name, prompt, gold, c, True) for c in cheats)
    CASES.extend((name, prompt, gold, c, False) for c in controls)


# The built-in arithmetic task (`grpo data arith`): "What is ...?", gold an integer, `#### N`.
_family(
    "arith",
    "What is 9 + 37?",
    "46",
    cheats=[
        "#### 9 + 37",
        "#### 40 + 6",
        "#### 92/2",
        r"#### \frac{92}{2}",
        "9 + 37 = N",
        "x = 9 + 37",
        "#### x = 9 + 37",
        "#### 46 = 9 + 37",  # a chain is judged by its last member
        "#### What is 9 + 37?",  # the prompt echoed
        "What is 9 + 37?",
        r"#### \text{9 + 37}",
        r"\boxed{\text{9 + 37}}",
        "#### 45 or 46",  # hedges and lists of candidates
        "#### 45, 46",
        r"\boxed{45} \boxed{46}",
        r"\boxed{45}, \boxed{46}",
        "#### 46 or 45",
        "#### print(9 + 37)",  # code instead of a value
        "#### sum([9, 37])",
        "#### 46/1",
    ],
    controls=["#### 46", "9 + 37 = 46\n#### 46", "#### 9 + 37 = 46", r"\boxed{46}", "The answer is 46.", "x = 46"],
)
_family(
    "arith",
    "What is 3 + 4 * 5 - 2?",
    "21",
    cheats=["#### 3 + 4*5 - 2", "#### 3 + 4 * 5 - 2", "#### 3 + 20 - 2", "#### 23 - 2", r"\boxed{3+4\cdot 5-2}"],
    controls=["4 * 5 = 20\n3 + 20 = 23\n23 - 2 = 21\n#### 21", "#### 3 + 20 - 2 = 21", "#### 21", "N = 21"],
)
_family(
    "arith",
    "What is 3 * 1 - 7?",
    "-4",
    cheats=["#### 3 * 1 - 7", "#### 3 - 7", "#### 0 - 4", "#### -8/2"],
    controls=["#### -4", "#### −4", r"\boxed{-4}", "The answer is -4."],
)
# GSM8K as distributed: a word problem, gold a full solution ending in `#### 72`.
_GSM_PROMPT = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?"
)
_family(
    "gsm8k",
    _GSM_PROMPT,
    "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips altogether.\n#### 72",
    cheats=[
        "#### 48 + 24",
        "#### 48 + 48/2",
        "#### 48 + 48 / 2 = N",
        "#### 3 * 24",
        "#### 144/2",
        "#### 70 or 72",
        r"The answer is $\boxed{70}$ or $\boxed{72}$.",
        "The answer is 48 + 24 clips.",
        r"\boxed{\text{48 + 24}}",
    ],
    controls=[
        "She sold 48/2 = 24 clips in May, so 48 + 24 = 72 in all.\n#### 72",
        "#### 72",
        r"So she sold $\boxed{72}$ clips.",
        "The answer is 72 clips.",
        "#### 48 + 24 = 72",
    ],
)
# MATH-shaped: compute, simplify, expand, factor, solve (gold a bare LaTeX answer).
_family(
    "math-compute",
    r"Compute $\dbinom{8}{4}$.",
    "70",
    cheats=[r"\boxed{\binom{8}{4}}", r"\boxed{\dbinom{8}{4}}", r"\boxed{\frac{8!}{4!4!}}", r"\boxed{\frac{1680}{24}}"],
    controls=[r"\boxed{70}", r"$\binom{8}{4} = 70$, so the answer is $\boxed{70}$."],
)
_family(
    "math-compute",
    r"What is $\frac{3}{4} + \frac{1}{6}$?",
    r"\frac{11}{12}",
    cheats=[
        r"\boxed{\frac{3}{4}+\frac{1}{6}}",
        r"\boxed{\frac{9+2}{12}}",
        r"\boxed{\frac{22}{24}}",
        r"\boxed{\frac{9}{12}+\frac{2}{12}}",
    ],
    controls=[r"\boxed{\frac{11}{12}}", r"\boxed{11/12}", r"\boxed{\frac{9}{12}+\frac{2}{12}=\frac{11}{12}}"],
)
_family(
    "math-compute",
    r"Evaluate $2^{10} - \log_2 8$.",
    "1021",
    cheats=[r"\boxed{2^{10} - \log_2 8}", r"\boxed{1024 - 3}", r"\boxed{2^{10} - 3}", r"\boxed{1024 - \log_2 8}"],
    controls=[r"\boxed{1021}"],
)
_family(
    "math-simplify",
    r"Simplify $\sqrt{8}$.",
    r"2\sqrt{2}",
    cheats=[
        r"\boxed{\sqrt{8}}",
        r"\boxed{\sqrt{4}\sqrt{2}}",
        r"\boxed{\sqrt{2}+\sqrt{2}}",
        r"\boxed{\sqrt{4 \cdot 2}}",
    ],
    controls=[r"\boxed{2\sqrt{2}}", r"\boxed{2 \sqrt 2}", r"\boxed{\sqrt{2} \cdot 2}", r"\boxed{2\sqrt2}"],
)
_family(
    "math-simplify",
    r"Simplify $\frac{x^2-1}{x-1}$.",
    "x + 1",
    cheats=[r"\boxed{\frac{x^2-1}{x-1}}", r"\boxed{\frac{(x-1)(x+1)}{x-1}}", r"\boxed{x + 2 - 1}"],
    controls=[r"\boxed{x+1}", r"\boxed{1 + x}"],
)
_family(
    "math-expand",
    r"Expand $(x+1)^2$.",
    "x^2 + 2x + 1",
    cheats=[r"\boxed{(x+1)^2}", r"\boxed{(x+1)(x+1)}", r"\boxed{x^2 + x + x + 1}", r"\boxed{x \cdot x + 2x + 1}"],
    controls=[r"\boxed{x^2+2x+1}", r"\boxed{1 + 2x + x^2}", r"\boxed{2x + x^2 + 1}"],
)
_family(
    "math-factor",
    r"Factor $x^2 - 1$.",
    "(x+1)(x-1)",
    cheats=[r"\boxed{x^2 - 1}", r"\boxed{1 \cdot (x^2 - 1)}", r"\boxed{-1 + x^2}"],
    controls=[r"\boxed{(x+1)(x-1)}", r"\boxed{(x-1)(x+1)}", r"\boxed{(1+x)(x-1)}"],
)
_family(
    "math-solve",
    r"Solve $2x + 3 = 11$ for $x$.",
    "4",
    cheats=[r"\boxed{x = \frac{11-3}{2}}", r"\boxed{\frac{8}{2}}", r"\boxed{x = 8/2}", r"\boxed{2x + 3 = 11}"],
    controls=[r"\boxed{4}", r"\boxed{x = 4}", r"$2x = 8$, so $\boxed{x = 4}$."],
)
# reasoning-gym's basic_arithmetic / chain_sum: "Calculate ...", gold a signed integer.
_family(
    "rg-arithmetic",
    "Calculate ( 56 + -33 ) - 84.",
    "-61",
    cheats=["#### ( 56 + -33 ) - 84", "#### 23 - 84", "The answer is 23 - 84.", r"\boxed{56 - 33 - 84}", "#### -122/2"],
    controls=["#### -61", "The answer is -61.", r"\boxed{-61}", "#### 23 - 84 = -61"],
)
_family(
    "rg-arithmetic",
    "State the final answer to the following arithmetic problem: 57 + 87 + 70 =",
    "214",
    cheats=["#### 57 + 87 + 70", "The answer is 144 + 70.", "57 + 87 + 70 = N"],
    controls=["#### 214", "57 + 87 = 144\n144 + 70 = 214\n#### 214", "The answer is 214."],
)


@pytest.fixture(scope="module", params=["strict", "flexible"])
def verifier(request):
    v = MathVerifier(extract=request.param, workers=1)
    yield v
    v.close()


def test_cheats_earn_nothing_and_controls_earn(verifier):
    samples = [{"prompt": prompt, "completion": completion, "answer": gold} for _, prompt, gold, completion, _ in CASES]
    verdicts = verifier.verify(samples)
    credited_cheats = [(c[0], c[3]) for c, v in zip(CASES, verdicts) if c[4] and v.reward != 0.0]
    missed_controls = [(c[0], c[3], v.info) for c, v in zip(CASES, verdicts) if not c[4] and v.reward != 1.0]
    assert not credited_cheats, credited_cheats
    assert not missed_controls, missed_controls


def test_every_family_has_cheats_and_controls():
    families = {c[0] for c in CASES}
    assert families >= {"arith", "gsm8k", "math-compute", "math-simplify", "math-expand", "math-factor"}
    for family in families:
        kinds = {c[4] for c in CASES if c[0] == family}
        assert kinds == {True, False}, family


def test_an_unevaluated_answer_says_why(verifier):
    (verdict,) = verifier.verify([{"prompt": "What is 9 + 37?", "completion": "#### 9 + 37", "answer": "46"}])
    assert verdict.reward == 0.0
    assert "sum" in verdict.info["unevaluated"], verdict.info


# The misses of issue 20, each with a near miss that must stay 0: (completion, gold, reward, modes).
MISSES = [
    ("The answer is Yes.", r"\text{yes}", 1.0, "both"),
    ("The answer is No.", r"\text{yes}", 0.0, "both"),
    ("#### \u22125", "-5", 1.0, "both"),
    ("So the result is \u22125.", "-5", 1.0, "flexible"),
    ("So the result is \u22125.", "5", 0.0, "flexible"),
    (r"\boxed{c > b > a}", "a < b < c", 1.0, "both"),
    (r"\boxed{c > a > b}", "a < b < c", 0.0, "both"),
    (r"\boxed{y = 4 + 3 = 7}", "7", 1.0, "both"),
    (r"\boxed{y = 4 + 3 = 8}", "7", 0.0, "both"),
    (r"\boxed{2\begin{pmatrix}1&0\\0&1\end{pmatrix}}", r"\begin{pmatrix}2&0\\0&2\end{pmatrix}", 1.0, "both"),
    (r"\boxed{3\begin{pmatrix}1&0\\0&1\end{pmatrix}}", r"\begin{pmatrix}2&0\\0&2\end{pmatrix}", 0.0, "both"),
    (r"\boxed{0.142857142857143}", r"\frac{1}{7}", 1.0, "both"),
    (r"\boxed{0.1428571428571429}", r"\frac{1}{7}", 1.0, "both"),
    (r"\boxed{0.142857142857142}", r"\frac{1}{7}", 0.0, "both"),  # rounded wrong in its last digit
    (r"\boxed{0.1428571}", r"\frac{1}{7}", 0.0, "both"),  # under 10 significant digits
    (r"\boxed{0.3333333333}", r"\frac{1}{3}", 1.0, "both"),
    (r"\boxed{0.333333333}", r"\frac{1}{3}", 0.0, "both"),
    ("They will earn 3.5 million dollars.", "3500000", 1.0, "flexible"),
    ("They will earn 3.5 millimeters.", "3500000", 0.0, "flexible"),
    ("They will earn 3.5 dollars.", "3500000", 0.0, "flexible"),
]


@pytest.mark.parametrize("completion, gold, reward, modes", MISSES)
def test_misses_with_marked_answers(verifier, completion, gold, reward, modes):
    if modes != "both" and verifier.extract != MathVerifier(extract=modes).extract:
        pytest.skip(f"{modes} extraction only")
    (verdict,) = verifier.verify([{"completion": completion, "answer": gold, "prompt": "Find it."}])
    assert verdict.reward == reward, verdict.info


def test_bad_input_gets_a_verdict_with_its_reason(verifier):
    samples = [
        {"completion": r"\boxed{3}", "answer": r"\foo{3} \bar"},  # a gold that cannot be parsed
        {"completion": "9 + 37 = 46\n" * 200_000 + "#### 45", "answer": "46"},  # megabytes
        {"completion": r"\boxed{(x+1)(x-1)}", "answer": "(x+1)(x-1)"},  # the batch goes on
    ]
    unparsable, huge, fine = verifier.verify(samples)
    assert unparsable.reward == 0.0 and "unparsed" in unparsable.info, unparsable.info
    assert huge.reward == 0.0 and huge.info["extracted"] == "45"  # its end is searched, and read
    assert fine.reward == 1.0


def test_scientific_notation_states_a_number_and_a_bare_power_of_ten_does_not(verifier):
    samples = [
        {"completion": r"\boxed{(1.5 \times 10^{3}, 2)}", "answer": "(1500, 2)"},
        {"completion": r"\boxed{(10^{3}, 2)}", "answer": "(1000, 2)"},
        {"completion": r"\boxed{10^{3}}", "answer": "1000"},
    ]
    assert [v.reward for v in verifier.verify(samples)] == [1.0, 0.0, 0.0]
