"""pass@k / maj@k against hand-enumerated values (docs/design.md, "Metrics")."""

import math
import random
import subprocess
import sys
from pathlib import Path

import pytest

from grpo_cli.pipeline.metrics import evaluate_groups, maj_at_k, parse_ks, parse_metrics, pass_at_k

# ---- pass@k ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n, c, k, expected",
    [
        (4, 1, 2, 0.5),  # 1 - C(3,2)/C(4,2) = 1 - 3/6
        (5, 0, 1, 0.0),  # no correct sample: never passes
        (5, 0, 5, 0.0),
        (5, 5, 1, 1.0),  # all correct: always passes
        (5, 2, 1, 0.4),  # pass@1 = c/n = 2/5
        (5, 2, 2, 0.7),  # 1 - C(3,2)/C(5,2) = 1 - 3/10
        (5, 2, 4, 1.0),  # n-c = 3 < 4: every 4-subset holds a correct one
        (10, 3, 4, 5 / 6),  # 1 - C(7,4)/C(10,4) = 1 - 35/210
    ],
)
def test_pass_at_k_hand_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_k_matches_binomials_for_large_n():
    n, c, k = 200, 10, 100
    assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k))


def test_pass_at_k_rejects_bad_arguments():
    with pytest.raises(ValueError, match="k=5"):
        pass_at_k(4, 1, 5)
    with pytest.raises(ValueError, match="c=6"):
        pass_at_k(5, 6, 1)
    with pytest.raises(ValueError):
        pass_at_k(5, 1, 0)


# ---- maj@k -----------------------------------------------------------------------------------

# A, A right; B, C wrong.
ANSWERS = ["A", "A", "B", "C"]
CORRECT = [True, True, False, False]


def test_maj_at_k_with_ties_by_hand():
    # k=2, 6 pairs: {0,1} A wins -> 1; {0,2} {0,3} {1,2} {1,3} A ties B or C -> 1/2 each;
    # {2,3} B ties C -> 0.  (1 + 4 * 0.5 + 0) / 6 = 0.5
    assert maj_at_k(ANSWERS, CORRECT, 2) == pytest.approx(0.5)
    # k=3, 4 triples: {0,1,2} {0,1,3} A wins -> 1; {0,2,3} {1,2,3} three-way tie A,B,C -> 1/3.
    # (2 + 2/3) / 4 = 2/3
    assert maj_at_k(ANSWERS, CORRECT, 3) == pytest.approx(2 / 3)
    # k=4: A has 2 votes, B and C one each -> 1
    assert maj_at_k(ANSWERS, CORRECT, 4) == 1.0


def test_maj_below_pass_when_wrong_answer_dominates():
    answers, correct = ["A", "B", "B", "B"], [True, False, False, False]
    # k=2: {0,1} {0,2} {0,3} tie A/B -> 1/2; the three B/B pairs -> 0.  1.5 / 6 = 0.25
    assert maj_at_k(answers, correct, 2) == pytest.approx(0.25)
    # k=3: every triple has at least two Bs -> 0, while pass@3 = 1 - C(3,3)/C(4,3) = 0.75
    assert maj_at_k(answers, correct, 3) == 0.0
    assert pass_at_k(4, 1, 3) == pytest.approx(0.75)


def test_maj_none_answers_do_not_vote():
    answers, correct = [None, None, "A", "B"], [False, False, True, False]
    # k=2: {0,1} no vote -> 0; {0,2} {1,2} A alone -> 1; {0,3} {1,3} B alone -> 0; {2,3} tie -> 1/2.
    # 2.5 / 6 = 5/12
    assert maj_at_k(answers, correct, 2) == pytest.approx(5 / 12)
    assert maj_at_k([None, None], [False, False], 2) == 0.0


def test_maj_disagreeing_correctness_credits_the_fraction():
    # A is given by one right and one wrong sample: A's credit is 1/2.
    answers, correct = ["A", "A", "B"], [True, False, False]
    assert maj_at_k(answers, correct, 3) == pytest.approx(0.5)  # A wins 2-1 -> 1/2
    assert maj_at_k(answers, correct, 1) == pytest.approx(1 / 3)  # (1/2 + 1/2 + 0) / 3 = accuracy


def test_maj_at_1_is_accuracy_exactly():
    rng = random.Random(3)
    answers = [rng.choice(["1", "2", "3", None]) for _ in range(50)]
    correct = [a == "1" for a in answers]
    assert maj_at_k(answers, correct, 1, samples=10) == sum(correct) / 50


def test_maj_at_2_equals_maj_at_1():
    # A pair votes for its common answer, or splits a 1-1 tie: either way it scores the mean of the
    # two samples' credits, so over all pairs maj@2 = maj@1 (when every sample answered: a None
    # beside a right answer lets it win alone).  The k=2 hand example above agrees: 0.5 = 2/4.
    rng = random.Random(5)
    answers = [rng.choice(["1", "2", "3"]) for _ in range(20)]
    correct = [a == "2" for a in answers]
    assert maj_at_k(answers, correct, 2) == pytest.approx(maj_at_k(answers, correct, 1))  # C(20,2) = 190


def test_maj_at_n_is_exact_even_with_one_sample():
    answers = ["7"] * 5 + ["8"] * 4 + ["9"] * 3
    correct = [a == "7" for a in answers]
    assert maj_at_k(answers, correct, 12, samples=1) == 1.0  # C(12,12) = 1 subset: 7 wins 5-4-3


def test_maj_monte_carlo_is_seeded_and_close_to_exact():
    rng = random.Random(0)
    answers = [rng.choice(["1", "1", "2", "3"]) for _ in range(16)]
    correct = [a == "1" for a in answers]
    exact = maj_at_k(answers, correct, 8, samples=math.comb(16, 8))  # 12870 subsets, enumerated
    mc = maj_at_k(answers, correct, 8, samples=2000, rng=random.Random(1))
    assert mc == maj_at_k(answers, correct, 8, samples=2000, rng=random.Random(1))
    assert mc != exact  # really sampled
    assert mc == pytest.approx(exact, abs=0.03)


def test_maj_rejects_bad_arguments():
    with pytest.raises(ValueError, match="k=5"):
        maj_at_k(ANSWERS, CORRECT, 5)
    with pytest.raises(ValueError, match="correctness"):
        maj_at_k(ANSWERS, CORRECT[:3], 2)


# ---- evaluate_groups -------------------------------------------------------------------------


def rec(reward, canonical=None, extracted=None):
    info = {"format": {"ok": True}}  # a verifier with no answer: skipped for the vote key
    if canonical is not None or extracted is not None:
        info["math"] = {"canonical": canonical, "extracted": extracted}
    return {"reward": reward, "info": info}


GROUPS = [
    # problem 0: one right answer among four different ones (c = 1)
    [rec(1.0, "2"), rec(0.0, "3"), rec(0.0, "4"), rec(0.5, "5")],
    # problem 1: "7" right three times, "8" wrong (c = 3); one key comes from `extracted`
    [rec(1.0, "7"), rec(1.0, "7"), rec(1.0, extracted="7"), rec(0.0, "8")],
    # problem 2: nothing right (c = 0); one sample gave no answer
    [rec(0.0), rec(0.0, "1"), rec(0.0, "1"), rec(0.0, "2")],
]


def test_evaluate_groups_by_hand():
    out = evaluate_groups(GROUPS, [1, 2, 4], ["pass@k", "maj@k"])
    assert out["problems"] == 3 and out["n"] == 4
    assert out["accuracy"] == pytest.approx(4 / 12)  # the 0.5 reward is below threshold 1.0
    # pass@1 = mean(1/4, 3/4, 0); pass@2 = mean(1 - 3/6, 1, 0); pass@4 = mean(1, 1, 0)
    assert out["pass@k"] == pytest.approx({1: 1 / 3, 2: 1 / 2, 4: 2 / 3})
    # maj@2: p0 = 3 tied pairs hold the right "2" -> 1.5/6 = 1/4; p1 = (3 "7,7" pairs + 3 ties * 1/2)/6
    # = 3/4; p2 = 0 -> mean 1/3.  maj@4: p0 four-way tie -> 1/4; p1 "7" wins -> 1; p2 0 -> 5/12.
    assert out["maj@k"] == pytest.approx({1: 1 / 3, 2: 1 / 3, 4: 5 / 12})
    pass_k = [out["pass@k"][k] for k in (1, 2, 4)]
    assert pass_k == sorted(pass_k) and pass_k[0] < pass_k[-1]


def test_evaluate_groups_threshold_and_metric_subset():
    out = evaluate_groups(GROUPS, [1], ["pass@k"], threshold=0.5)
    assert out["accuracy"] == pytest.approx(5 / 12)  # the 0.5 reward now counts
    assert "maj@k" not in out


def test_flexible_accuracy_beside_the_strict_one():
    # Strict: 1 of 4 right. The math verifier's info says flexible extraction would also accept the
    # second sample (its unmarked last number) -> 2 of 4; the fourth reports nothing, so its strict
    # verdict counts for both.
    group = [
        {"reward": 1.0, "info": {"math": {"flexible": 1.0}}},
        {"reward": 0.0, "info": {"math": {"flexible": 1.0}}},
        {"reward": 0.0, "info": {"math": {"flexible": 0.0}}},
        {"reward": 0.0, "info": {}},
    ]
    out = evaluate_groups([group], [1], ["pass@k"])
    assert out["accuracy"] == pytest.approx(1 / 4) and out["accuracy_flexible"] == pytest.approx(2 / 4)
    assert "accuracy_flexible" not in evaluate_groups(GROUPS, [1], ["pass@k"])  # no verifier reported one


def test_evaluate_groups_errors():
    with pytest.raises(ValueError, match=r"k=16 > n=4 samples per problem"):
        evaluate_groups(GROUPS, [1, 16], ["pass@k"])
    with pytest.raises(ValueError, match="problem 1"):
        evaluate_groups([GROUPS[0], GROUPS[1][:3]], [1], ["pass@k"])
    with pytest.raises(ValueError, match="valid: pass@k, maj@k"):
        evaluate_groups(GROUPS, [1], ["avg@k"])
    with pytest.raises(ValueError, match="no problems"):
        evaluate_groups([], [1], ["pass@k"])


# ---- CLI strings -----------------------------------------------------------------------------


def test_parse_metrics_and_ks():
    assert parse_metrics("maj@k, pass@k,maj@k") == ["maj@k", "pass@k"]
    assert parse_ks("16,1,4,4") == [1, 4, 16]
    for bad in ["", "pass@k,foo"]:
        with pytest.raises(ValueError, match="valid: pass@k, maj@k"):
            parse_metrics(bad)
    for bad in ["", "1,x", "0", "-2", "1.5", "²"]:
        with pytest.raises(ValueError, match="positive integers"):
            parse_ks(bad)


def test_metrics_module_does_not_import_torch():
    code = "import sys, grpo_cli.pipeline.metrics; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])
