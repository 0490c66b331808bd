"""The `prm` verifier's rule backend: step splitting and end offsets, equality checks, outcome modes,
the final-answer step, bounds on pathological input, and the arithmetic task end to end."""

from __future__ import annotations

import time

import pytest
from grpo_verifiers.prm import PRMVerifier, SympyClaim, step_claims

from grpo_cli.builtin import arith

# 3 + 4 * 5 - 2, as grpo_cli.builtin.arith writes it. Lines and their [start, end) spans:
#   "4 * 5 = 20"   [0, 10)   newline at 10
#   "3 + 20 = 23"  [11, 22)  newline at 22
#   "23 - 2 = 21"  [23, 34)  newline at 34
#   "#### 21"      [35, 42)  end of text (len 42)
GOLD = "4 * 5 = 20\n3 + 20 = 23\n23 - 2 = 21\n#### 21"
ENDS = [10, 22, 34, 42]


@pytest.fixture(scope="module")
def prm():
    v = PRMVerifier(timeout=1.0)
    yield v
    v.close()


def judge(verifier, completion, answer="21"):
    sample = {"completion": completion} if answer is None else {"completion": completion, "answer": answer}
    (verdict,) = verifier.verify([sample])
    return verdict


def rewards(verdict):
    return [step["reward"] for step in verdict.steps]


def test_correct_solution_scores_every_step(prm):
    verdict = judge(prm, GOLD)
    assert verdict.steps == [{"end": end, "reward": 1.0} for end in ENDS]
    assert verdict.reward == 1.0
    assert verdict.info["steps"] == 4 and verdict.info["equations"] == 3
    assert (verdict.info["extracted"], verdict.info["canonical"], verdict.info["final"]) == ("21", "21", 1.0)
    assert "timeout" not in verdict.info
    # Ends are exclusive: the character before each end is the last one of its line.
    assert [GOLD[end - 1] for end in ENDS] == ["0", "3", "1", "1"]


@pytest.mark.parametrize(
    ("outcome", "reward"),
    [
        # Step rewards [1, 0, 1, 1]: min 0; last 1; product 1*0*1*1 = 0 (with 0/1 rule scores
        # product equals min); mean 3/4.
        ("min", 0.0),
        ("last", 1.0),
        ("product", 0.0),
        ("mean", 0.75),
    ],
)
def test_wrong_middle_line(outcome, reward):
    completion = "4 * 5 = 20\n3 + 20 = 24\n23 - 2 = 21\n#### 21"  # 3 + 20 is 23, not 24
    verdict = judge(PRMVerifier(outcome=outcome), completion)
    assert verdict.steps == [{"end": e, "reward": r} for e, r in zip(ENDS, [1.0, 0.0, 1.0, 1.0])]
    assert verdict.reward == reward


def test_wrong_final_answer(prm):
    # Every equation holds but `#### 20` is not the gold 21: steps [1, 1, 1, 0].
    completion = GOLD.replace("#### 21", "#### 20")
    verdict = judge(prm, completion)
    assert rewards(verdict) == [1.0, 1.0, 1.0, 0.0] and verdict.reward == 0.0
    assert verdict.info["extracted"] == "20" and verdict.info["final"] == 0.0
    assert judge(PRMVerifier(outcome="mean"), completion).reward == 0.75
    # Without the final-answer check, `#### 20` is prose: three steps, all correct.
    unchecked = judge(PRMVerifier(final_answer=False), completion)
    assert unchecked.steps == [{"end": e, "reward": 1.0} for e in ENDS[:3]] and unchecked.reward == 1.0
    assert unchecked.info["final"] is None and unchecked.info["canonical"] == "20"  # still there for maj@k


def test_answer_inside_an_equation_step(prm):
    # No `####`: "the answer is 23" is found in line 2, whose equation also holds -> min(1, 1).
    completion = "4 * 5 = 20\n3 + 20 = 23, so the answer is 23"
    assert rewards(judge(prm, completion, "23")) == [1.0, 1.0]
    assert rewards(judge(prm, completion, "24")) == [1.0, 0.0]  # the answer check fails that step


def test_no_answer_and_no_steps(prm):
    # "I am not sure." (14 chars) holds no equation and no answer: the final check puts 0.0 on it.
    verdict = judge(prm, "I am not sure.")
    assert verdict.steps == [{"end": 14, "reward": 0.0}] and verdict.info["extracted"] is None
    empty = judge(prm, "  \n\n ")
    assert empty.steps == [] and empty.reward == 0.0 and empty.info["steps"] == 0


def test_without_gold_only_equations_count(prm):
    verdict = judge(prm, "4 * 5 = 20\n3 + 20 = 24\n#### 24", answer=None)
    assert rewards(verdict) == [1.0, 0.0]  # `#### 24` is not checked, so it is not a step
    assert verdict.info["final"] is None and verdict.info["canonical"] == "24"


def test_prose_lines_are_skipped(prm):
    # "Multiply first."        [0, 15)   no `=`: skipped
    # "4 * 5 = 20"             [16, 26)
    # "Then add: 3 + 20 = 23"  [27, 48)
    # "#### 23"                [49, 56)
    completion = "Multiply first.\n4 * 5 = 20\nThen add: 3 + 20 = 23\n#### 23"
    verdict = judge(prm, completion, "23")
    assert verdict.steps == [{"end": e, "reward": 1.0} for e in (26, 48, 56)]


def test_blank_line_split(prm):
    # "Multiply.\n4 * 5 = 20"  [0, 20)   one step across a single newline
    # "\n\n" at 20-21; "3 + 20 = 23" [22, 33); "\n \n" (a blank line with a space) at 33-35
    # "#### 23"                [36, 43)
    completion = "Multiply.\n4 * 5 = 20\n\n3 + 20 = 23\n \n#### 23"
    verdict = judge(PRMVerifier(split="blank_line"), completion, "23")
    assert verdict.steps == [{"end": e, "reward": 1.0} for e in (20, 33, 43)]


def test_tag_split():
    # "4 * 5 = 20" [0, 10), " ки" at 10-12, "\n3 + 20 = 23 ки" -> "3 + 20 = 23" [14, 25),
    # "\n#### 23 ки" -> "#### 23" [29, 36); nothing after the last tag.
    completion = "4 * 5 = 20 ки\n3 + 20 = 23 ки\n#### 23 ки"
    verdict = judge(PRMVerifier(split="tag"), completion, "23")
    assert verdict.steps == [{"end": e, "reward": 1.0} for e in (10, 25, 36)]
    # A custom tag: "4 * 5 = 20" [0, 10), "<step>" 10-15, "3 + 20 = 22" [16, 27), "<step>" 27-32,
    # "#### 22" [33, 40).
    custom = judge(PRMVerifier(split="tag", step_tag="<step>"), "4 * 5 = 20<step>3 + 20 = 22<step>#### 22", "23")
    assert custom.steps == [{"end": 10, "reward": 1.0}, {"end": 27, "reward": 0.0}, {"end": 40, "reward": 0.0}]


@pytest.mark.parametrize(
    ("step", "claims"),
    [
        ("4 * 5 = 20", [True]),
        ("3 - 20 = -17", [True]),
        ("3 + 20 = 24", [False]),
        ("3 + 4 = 7 = 8", [True, False]),  # chained: each consecutive pair
        ("-2^2 = -4", [True]),  # ^ binds tighter than the sign
        ("2^3^2 = 512", [True]),  # right-associative: 2^9
        ("2(3 + 4) = 14", [True]),
        ("2^{10} = 1024", [True]),
        ("$3 \\times 4 = 12$", [True]),
        ("1,234 + 1 = 1,235", [True]),
        ("10 / 3 = 3.33", [True]),  # a decimal may be rounded or cut to the digits it shows
        ("2/3 = 0.65", [False]),
        ("5 / 0 = 1", [False]),
        ("Natalia sold 48/2 = <<48/2=24>>24 clips.", [None, True]),  # GSM8K calculator annotation
        ("3 + 4 = 7, 7 * 2 = 15", [True, False]),
        ("- 3 + 4 = 7", [True]),  # a markdown bullet, not a minus
        ("(so 3 + 4 = 7).", [True]),
        ("total = 20 (since 4 * 5 = 20)", [None, True]),
        ("The answer is 3 + 4 = 7 apples", [True]),
        # Neutral (None): not an arithmetic claim the checker can read.
        ("x = 5", [None]),
        ("2x + 3 = 7", [None]),  # the left side would start with `+`
        ("x - 3 = 7", [None]),
        ("4 = 2(x+1)", [None]),
        ("f(3) = 7", [None]),
        ("half of 80 = 40", [None]),  # a bare number after a word
        ("0.2 * 100 = 20%", [None]),
        ("a <= b", []),
        ("no equation here", []),
    ],
)
def test_step_claims(step, claims):
    assert step_claims(step) == claims


def test_latex_goes_to_sympy():
    (claim,) = step_claims("\\frac{1}{2} + \\frac{1}{2} = 1")
    assert isinstance(claim, SympyClaim) and claim.rhs == "1"


def test_pathological_steps_are_bounded(prm):
    start = time.perf_counter()
    # 9^9^9^9 = 9^(9^387420489): refused before it is built, so the equality fails at once.
    assert rewards(judge(prm, "9^9^9^9 = 1\n#### 1", "1")) == [0.0, 1.0]
    assert step_claims("9" * 5000 + " = 1") == [False]  # past Python's 4300-digit int parsing limit
    assert step_claims("(" * 100 + "1" + ")" * 100 + " = 1") == [None]  # nested too deep to read
    assert time.perf_counter() - start < 1.0
    start = time.perf_counter()
    one_line = "1 + " * 250_000 + "1 = 250001"  # a megabyte-long equation: refused, scored 0.0
    verdict = judge(prm, one_line, "250001")
    assert verdict.steps == [{"end": len(one_line), "reward": 0.0}]
    prose = ("word " * 20 + "\n") * 10_000  # a megabyte of prose lines: nothing to score but the answer
    assert judge(prm, prose).steps == [{"end": len(prose) - 2, "reward": 0.0}]
    assert time.perf_counter() - start < 5.0


def test_sympy_checks_and_timeout(prm):
    # One batch, so the sympy worker starts once. Sample 1: LaTeX steps, decided by sympy;
    # `\frac{1}{3} = 0.5` is false. Sample 2: a tower sympy cannot evaluate in 1 s.
    latex = "\\frac{1}{2} + \\frac{1}{2} = 1\n\\sqrt{16} = 4\n\\sqrt{2} = 1.414\n\\frac{1}{3} = 0.5\n#### 1"
    tower = "\\sqrt{9^{9^{9^{9}}}} = 1\n#### 1"
    start = time.perf_counter()
    good, slow = prm.verify([{"completion": latex, "answer": "1"}, {"completion": tower, "answer": "1"}])
    assert time.perf_counter() - start < 8.0
    assert rewards(good) == [1.0, 1.0, 1.0, 0.0, 1.0] and "timeout" not in good.info
    assert rewards(slow) == [0.0, 1.0] and slow.info["timeout"] is True and "timed out" in slow.info["error"]


def test_arith_task_end_to_end(prm):
    problems = arith.generate(30, seed=5)
    samples = [{**p, "completion": p["solution"]} for p in problems]
    for problem, verdict in zip(problems, prm.verify(samples)):
        lines = problem["solution"].split("\n")
        ends = [len("\n".join(lines[: k + 1])) for k in range(len(lines))]
        assert verdict.steps == [{"end": end, "reward": 1.0} for end in ends]
        assert verdict.reward == 1.0 and verdict.info["canonical"] == problem["answer"]
    # Off by one in the final answer: only the last step fails.
    wrong = [
        {**s, "completion": s["completion"].rsplit("#### ", 1)[0] + f"#### {int(s['answer']) + 1}"} for s in samples
    ]
    for verdict in prm.verify(wrong):
        assert rewards(verdict)[:-1] == [1.0] * (len(verdict.steps) - 1) and rewards(verdict)[-1] == 0.0


def test_steps_reach_scored_records(prm):
    from grpo_cli.pipeline.scoring import VerifierSpec, score

    records, summary = score([{"completion": GOLD, "answer": "21"}], [(VerifierSpec("prm"), prm)])
    assert records[0]["steps"] == [{"end": end, "reward": 1.0} for end in ENDS]
    assert records[0]["rewards"] == {"prm": 1.0} and summary.verifiers["prm"].scored == 1


def test_options():
    with pytest.raises(ValueError, match="backend=hf needs model=PATH"):
        PRMVerifier(backend="hf")  # the hf backend itself: tests/test_prm_hf.py
    with pytest.raises(ValueError, match="backend must be one of rule, hf"):
        PRMVerifier(backend="model")
    with pytest.raises(ValueError, match="split must be one of"):
        PRMVerifier(split="sentence")
    with pytest.raises(ValueError, match="outcome must be one of min, last, product, mean"):
        PRMVerifier(outcome="max")
    with pytest.raises(TypeError, match="final_answer"):
        PRMVerifier(final_answer="false")
    with pytest.raises(ValueError, match="step_tag"):
        PRMVerifier(split="tag", step_tag="")
    with pytest.raises(TypeError, match="rule backend takes no options"):
        PRMVerifier(model="some/prm")
    assert PRMVerifier.name == "prm"
