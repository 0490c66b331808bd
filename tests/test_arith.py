"""The synthetic arithmetic task: determinism, held-out split, and solutions that check line by line."""

from __future__ import annotations

import json
import random
import re

import pytest

from grpo_cli.builtin import arith

STEP = re.compile(r"^(-?\d+) ([-+*]) (\d+) = (-?\d+)$")
PROMPT = re.compile(r"^What is (\d+(?: [-+*] \d+)+)\?$")


def _check(a: int, op: str, b: int) -> int:
    return {"+": a + b, "-": a - b, "*": a * b}[op]


def test_worked_example():
    # 3 + 4 * 5 - 2: the product first (4 * 5 = 20), then left to right: 3 + 20 = 23, 23 - 2 = 21.
    problem = arith.problem_from([3, 4, 5, 2], ["+", "*", "-"])
    assert problem["prompt"] == "What is 3 + 4 * 5 - 2?"
    assert problem["solution"] == "4 * 5 = 20\n3 + 20 = 23\n23 - 2 = 21\n#### 21"
    assert problem["answer"] == "21"


@pytest.mark.parametrize(
    ("operands", "ops", "steps", "value"),
    [
        # Products chain left to right before any sum: 2 * 3 = 6, 6 * 4 = 24, then 24 + 1.
        ([2, 3, 4, 1], ["*", "*", "+"], ["2 * 3 = 6", "6 * 4 = 24", "24 + 1 = 25"], 25),
        # Two separate products, then their sum.
        ([2, 3, 4, 5], ["*", "+", "*"], ["2 * 3 = 6", "4 * 5 = 20", "6 + 20 = 26"], 26),
        # Subtraction is left-associative: (1 - 2) - 3, not 1 - (2 - 3).
        ([1, 2, 3], ["-", "-"], ["1 - 2 = -1", "-1 - 3 = -4"], -4),
        # A product after a subtraction binds first: 3 - (4 * 5) = -17.
        ([3, 4, 5], ["-", "*"], ["4 * 5 = 20", "3 - 20 = -17"], -17),
    ],
)
def test_precedence(operands, ops, steps, value):
    assert arith.solve(operands, ops) == (steps, value)
    assert value == eval(arith.expression(operands, ops))  # Python's precedence agrees


def test_generate_is_deterministic_for_a_seed():
    assert arith.generate(50, seed=7) == arith.generate(50, seed=7)
    assert arith.generate(50, seed=7) != arith.generate(50, seed=8)
    assert arith.splits(seed=3, n_train=100, n_test=20) == arith.splits(seed=3, n_train=100, n_test=20)


def test_make_problem_uses_only_the_rng():
    assert arith.make_problem(random.Random(1)) == arith.make_problem(random.Random(1))


def test_every_problem_is_well_formed():
    problems = arith.generate(2000, seed=0)
    counts = set()
    for p in problems:
        assert set(p) == {"id", "prompt", "answer", "solution"}
        expr = PROMPT.match(p["prompt"]).group(1)
        tokens = expr.split(" ")
        operands, ops = [int(t) for t in tokens[::2]], tokens[1::2]
        counts.add(len(operands))
        assert arith.MIN_OPERANDS <= len(operands) <= arith.MAX_OPERANDS
        assert all(0 <= x <= max(arith.OPERAND_MAX, arith.FACTOR_MAX) for x in operands)

        *steps, last = p["solution"].split("\n")
        assert len(steps) == len(ops)  # one rewrite per operator
        for line in steps:
            a, op, b, c = STEP.match(line).groups()
            assert _check(int(a), op, int(b)) == int(c), line
        assert last == f"#### {p['answer']}"
        assert int(p["answer"]) == eval(expr)
        assert int(p["answer"]) == int(STEP.match(steps[-1]).group(4))
    assert counts == {2, 3, 4}


def test_splits_are_disjoint_and_ids_unique():
    data = arith.splits(seed=0, n_train=3000, n_test=200)
    train, test = data["train"], data["test"]
    assert (len(train), len(test)) == (3000, 200)
    test_prompts = {p["prompt"] for p in test}
    assert len(test_prompts) == 200  # no repeats inside the test split
    assert test_prompts.isdisjoint(p["prompt"] for p in train)
    ids = [p["id"] for p in train + test]
    assert len(set(ids)) == len(ids)


def test_load_split_defaults():
    assert arith.SPLITS == ("train", "test")
    test = arith.load_split("test")
    assert len(test) == 200
    assert test == arith.splits(seed=0)["test"]
    assert len(arith.load_split("train")) == arith.DEFAULT_N_TRAIN
    test[0]["prompt"] = "changed"  # callers get a copy
    assert arith.load_split("test")[0]["prompt"] != "changed"
    with pytest.raises(ValueError, match="unknown split"):
        arith.load_split("dev")


def test_write_splits(tmp_path):
    paths = arith.write_splits(tmp_path / "data", seed=5, n_train=30, n_test=10)
    assert set(paths) == {"train", "test"}
    rows = {name: [json.loads(line) for line in path.read_text().splitlines()] for name, path in paths.items()}
    assert rows == arith.splits(seed=5, n_train=30, n_test=10)
