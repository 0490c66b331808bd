"""The synthetic multi-step integer arithmetic task behind the embedded default (docs/design.md, "Embedded default").

A problem is an expression of 2 to 4 small non-negative integers joined by `+`, `-` and `*`:

    prompt:   What is 3 + 4 * 5 - 2?
    solution: 4 * 5 = 20
              3 + 20 = 23
              23 - 2 = 21
              #### 21
    answer:   21

The solution rewrites one operation per line, all `*` first (left to right), then `+` and `-`
(left to right), so every line is an equation `a op b = c` that the `prm` rule checker can verify,
and the last line carries the final answer the `math` verifier extracts. Pure Python; no torch.
"""

from __future__ import annotations

import hashlib
import json
import random
from functools import lru_cache
from pathlib import Path

SPLITS = ("train", "test")
"""The names `load_split` accepts."""

MIN_OPERANDS, MAX_OPERANDS = 2, 4
OPERATORS = ("+", "-", "*")
OPERAND_MAX = 12
"""Operands joined by `+` or `-` only are drawn from 0..OPERAND_MAX."""
FACTOR_MAX = 9
"""Operands next to a `*` are drawn from 0..FACTOR_MAX (single-digit products keep the task learnable)."""

DEFAULT_SEED = 0
DEFAULT_N_TRAIN = 20000
DEFAULT_N_TEST = 200


def _apply(a: int, op: str, b: int) -> int:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    return a * b


def solve(operands: list[int], ops: list[str]) -> tuple[list[str], int]:
    """The step lines `a op b = c` and the value of `operands[0] ops[0] operands[1] ...`.

    `*` binds tighter: every `*` is rewritten first, left to right, then `+`/`-` left to right.
    E.g. [3, 4, 5, 2], ["+", "*", "-"] gives ["4 * 5 = 20", "3 + 20 = 23", "23 - 2 = 21"], 21.
    """
    if len(operands) != len(ops) + 1:
        raise ValueError(f"{len(operands)} operands need {len(operands) - 1} operators, got {len(ops)}")
    values, ops = list(operands), list(ops)
    steps: list[str] = []
    for wanted in (("*",), ("+", "-")):
        i = 0
        while i < len(ops):
            if ops[i] in wanted:
                a, op, b = values[i], ops[i], values[i + 1]
                c = _apply(a, op, b)
                steps.append(f"{a} {op} {b} = {c}")
                values[i : i + 2] = [c]
                del ops[i]
            else:
                i += 1
    return steps, values[0]


def expression(operands: list[int], ops: list[str]) -> str:
    """`3 + 4 * 5 - 2` for [3, 4, 5, 2], ["+", "*", "-"]."""
    parts = [str(operands[0])]
    for op, b in zip(ops, operands[1:]):
        parts += [op, str(b)]
    return " ".join(parts)


def problem_from(operands: list[int], ops: list[str]) -> dict:
    """The problem record for one expression; its `id` is derived from the expression text."""
    expr = expression(operands, ops)
    steps, value = solve(operands, ops)
    return {
        "id": "arith-" + hashlib.sha1(expr.encode()).hexdigest()[:12],
        "prompt": f"What is {expr}?",
        "answer": str(value),
        "solution": "\n".join(steps + [f"#### {value}"]),
    }


def make_problem(rng: random.Random) -> dict:
    """One random problem: 2..4 operands, each operator uniform over `+ - *`."""
    n = rng.randint(MIN_OPERANDS, MAX_OPERANDS)
    ops = [rng.choice(OPERATORS) for _ in range(n - 1)]
    operands = []
    for i in range(n):
        next_to_mul = (i > 0 and ops[i - 1] == "*") or (i < n - 1 and ops[i] == "*")
        operands.append(rng.randint(0, FACTOR_MAX if next_to_mul else OPERAND_MAX))
    return problem_from(operands, ops)


def generate(
    n: int,
    seed: int,
    *,
    exclude: set[str] | frozenset[str] = frozenset(),
    unique: bool = False,
    id_prefix: str = "arith",
) -> list[dict]:
    """`n` problems drawn from `random.Random(seed)`, skipping prompts in `exclude`.

    With `unique`, no prompt appears twice. Ids are positional (`arith-00000`, ...), so they are
    unique even where an expression repeats. Deterministic for a seed.
    """
    rng = random.Random(seed)
    seen = set(exclude)
    out: list[dict] = []
    while len(out) < n:
        problem = make_problem(rng)
        if problem["prompt"] in seen:
            continue
        if unique:
            seen.add(problem["prompt"])
        problem["id"] = f"{id_prefix}-{len(out):05d}"
        out.append(problem)
    return out


def splits(
    seed: int = DEFAULT_SEED, n_train: int = DEFAULT_N_TRAIN, n_test: int = DEFAULT_N_TEST
) -> dict[str, list[dict]]:
    """A `train` split and a held-out `test` split that share no expression.

    The test split holds distinct expressions; the train split may repeat one (so the mix of
    operand counts stays as drawn) but never one from the test split.
    """
    test = generate(n_test, seed=seed * 2 + 1, unique=True, id_prefix="test")
    train = generate(n_train, seed=seed * 2, exclude={p["prompt"] for p in test}, id_prefix="train")
    return {"train": train, "test": test}


@lru_cache(maxsize=1)
def _default_splits() -> str:
    return json.dumps(splits(DEFAULT_SEED, DEFAULT_N_TRAIN, DEFAULT_N_TEST))


def load_split(name: str) -> list[dict]:
    """The default split `name` ("train": 20000 problems, "test": 200), seed 0. A fresh copy each call."""
    if name not in SPLITS:
        raise ValueError(f"unknown split {name!r}; expected one of {', '.join(SPLITS)}")
    return json.loads(_default_splits())[name]


def write_splits(
    out_dir: Path, seed: int = DEFAULT_SEED, n_train: int = DEFAULT_N_TRAIN, n_test: int = DEFAULT_N_TEST
) -> dict[str, Path]:
    """Write `train.jsonl` and `test.jsonl` into `out_dir`; returns the path of each split."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, rows in splits(seed, n_train, n_test).items():
        path = out_dir / f"{name}.jsonl"
        with path.open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
        paths[name] = path
    return paths
