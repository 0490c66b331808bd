"""Agreement of math checkers with the project's labelled sets, and their speed.

    python benchmarks/math_checker.py [--data FILE ...] [--show 20] [--plain 2000]

Runs the `math` verifier and, when it is importable, Math-Verify (`pip install math-verify`; it is
never a dependency of this project) on the same rows: `{"gold", "pred", "label", "category"}`
(optionally `prompt`: the problem), where `pred` is a completion or a bare answer and `label` says
whether it is right. By default both sets of benchmarks/data (README there): `math_pairs.jsonl`,
written with the verifier, and `math_pairs_outside.jsonl`, labelled from outside sources. Prints
per set and checker: agreement with the labels, false positives (accepted a wrong answer), false
negatives (rejected a right one), pairs per second; then the disagreements per category, and the
rows themselves with --show. First of all the reward-hacking suite (`tests/test_reward_hacking.py`:
per task family the cheats a policy finds, labelled wrong, and controls that state the result,
labelled right), reported as cheats credited and controls credited. Then the pairs/s of both on
--plain GSM8K-shaped pairs (`#### N` finals, half wrong), the case most rewards are. Rows marked
`known_failure` are counted apart (our verifier is expected to get them wrong; they say what it
does not do).

Each checker is warmed up on one pair first (process start, imports), then timed on all rows:
ours as one `verify` batch (how `grpo score` calls it, sympy in 2 worker processes), `ours` with
the default strict extraction and `ours-flex` with `extract=flexible` (the unmarked fallbacks too,
never a number the `prompt` wrote); Math-Verify row by row in this process (its `parse` and
`verify` with default settings): `math-verify` with the gold as the dataset gives it, `math-verify$`
with a bare gold wrapped in `$...$` as its documentation writes gold answers.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

DATA = [Path(__file__).parent / "data" / name for name in ("math_pairs.jsonl", "math_pairs_outside.jsonl")]
HACKING = Path(__file__).parent.parent / "tests" / "test_reward_hacking.py"


def hacking_rows() -> list[dict]:
    """The reward-hacking suite's table (`CASES` of tests/test_reward_hacking.py, the one list) as rows."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("reward_hacking_cases", HACKING)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return [
        {"gold": gold, "pred": pred, "prompt": prompt, "label": not cheat, "cheat": cheat, "category": family}
        for family, prompt, gold, pred, cheat in module.CASES
    ]


def load(path: Path) -> list[dict]:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        missing = {"gold", "pred", "label", "category"} - set(row)
        if missing or not isinstance(row["label"], bool):
            raise SystemExit(
                f"{path}:{number}: expected gold, pred, category and a true/false label; missing {sorted(missing)}"
            )
        rows.append(row)
    return rows


def ours(rows: list[dict], workers: int, extract: str = "strict") -> Callable[[], list[bool]]:
    from grpo_verifiers.math import MathVerifier

    verifier = MathVerifier(workers=workers, extract=extract)
    verifier.verify([{"completion": r"\boxed{x^2}", "answer": "x*x"}])  # start the sympy workers

    def run() -> list[bool]:
        samples = [
            {"completion": row["pred"], "answer": row["gold"], **({"prompt": row["prompt"]} if "prompt" in row else {})}
            for row in rows
        ]
        return [verdict.reward == 1.0 for verdict in verifier.verify(samples)]

    return run


def wrap(gold: str) -> str:
    """A bare gold answer in `$...$`, the form Math-Verify's documentation gives gold answers in."""
    if any(marker in gold for marker in ("$", "\\boxed", "####", "\n")):
        return gold
    return f"${gold}$"


def math_verify(rows: list[dict], wrap_gold: bool) -> Callable[[], list[bool]] | None:
    try:
        from math_verify import parse, verify
    except ImportError:
        return None
    logging.getLogger("math_verify").setLevel(logging.CRITICAL)  # one warning line per timeout

    def judge(gold: str, pred: str) -> bool:
        try:
            return bool(verify(parse(gold), parse(pred)))
        except Exception:  # a crash is a rejection, as it would be in a reward function
            return False

    judge(r"$\frac{1}{2}$", "0.5")

    def run() -> list[bool]:
        return [judge(wrap(row["gold"]) if wrap_gold else row["gold"], row["pred"]) for row in rows]

    return run


def report(name: str, rows: list[dict], verdicts: list[bool], seconds: float) -> Counter:
    plain = [(row, v) for row, v in zip(rows, verdicts) if not row.get("known_failure")]
    agree = sum(row["label"] == v for row, v in plain)
    false_pos = sum(v and not row["label"] for row, v in plain)
    false_neg = sum(row["label"] and not v for row, v in plain)
    known = [(row, v) for row, v in zip(rows, verdicts) if row.get("known_failure")]
    known_agree = sum(row["label"] == v for row, v in known)
    tail = f"{known_agree}/{len(known)}"
    if any("cheat" in row for row in rows):
        cheats = [v for row, v in plain if row["cheat"]]
        controls = [v for row, v in plain if not row["cheat"]]
        tail = f"cheats credited {sum(cheats)}/{len(cheats)}, controls credited {sum(controls)}/{len(controls)}"
    print(
        f"{name:<12} {len(plain):>5} {agree:>6} {100 * agree / len(plain):>9.1f}% {false_pos:>7} {false_neg:>7}"
        f" {len(rows) / seconds:>9.1f}   {tail}"
    )
    return Counter(row["category"] for row, v in zip(rows, verdicts) if row["label"] != v)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, nargs="+", default=DATA)
    parser.add_argument("--workers", type=int, default=2, help="sympy worker processes for our verifier")
    parser.add_argument("--show", type=int, default=0, help="print up to N disagreeing rows per checker")
    parser.add_argument("--no-hacking", action="store_true", help="skip the reward-hacking suite")
    parser.add_argument(
        "--plain",
        type=int,
        default=2000,
        help="GSM8K-shaped pairs for the plain-number timing (0: skip)",
    )
    args = parser.parse_args()
    if not args.no_hacking:
        one_set(f"the reward-hacking suite ({HACKING.name})", hacking_rows(), args)
    for path in args.data:
        one_set(str(path), load(path), args)
    plain_numbers(args)


def one_set(source: str, rows: list[dict], args: argparse.Namespace) -> None:
    checkers = {
        "ours": ours(rows, args.workers),
        "ours-flex": ours(rows, args.workers, "flexible"),
        "math-verify": math_verify(rows, wrap_gold=False),
        "math-verify$": math_verify(rows, wrap_gold=True),
    }
    print(f"\n{len(rows)} rows from {source}, {sum(bool(r.get('known_failure')) for r in rows)} marked known_failure")
    print(
        f"{'checker':<12} {'rows':>5} {'agree':>6} {'agreement':>10} {'false+':>7} {'false-':>7} "
        f"{'pairs/s':>9}   known failures agreeing"
    )
    disagreements: dict[str, Counter] = {}
    details: dict[str, list] = {}
    for name, run in checkers.items():
        if run is None:
            print(f"{name:<12} not installed (pip install math-verify)")
            continue
        start = time.perf_counter()
        verdicts = run()
        seconds = time.perf_counter() - start
        disagreements[name] = report(name, rows, verdicts, seconds)
        details[name] = [(row, v) for row, v in zip(rows, verdicts) if row["label"] != v]
    categories = sorted({row["category"] for row in rows})
    print("\ndisagreements per category (rows in category; known failures included)")
    sizes = Counter(row["category"] for row in rows)
    print(f"{'category':<34}" + "".join(f"{name:>13}" for name in disagreements))
    for category in categories:
        counts = [disagreements[name][category] for name in disagreements]
        if any(counts):
            print(f"{category + f' ({sizes[category]})':<34}" + "".join(f"{c:>13}" for c in counts))
    for name, wrong in details.items():
        if args.show and wrong:
            print(f"\n{name}: disagreements (first {args.show})")
            for row, verdict in wrong[: args.show]:
                pred = (
                    row["pred"] if len(row["pred"]) < 90 else "..." + row["pred"][-70:] + f" ({len(row['pred'])} chars)"
                )
                print(
                    f"  [{row['category']}] label={row['label']} got={verdict} gold={row['gold'][-60:]!r} pred={pred!r}"
                )


def plain_numbers(args: argparse.Namespace) -> None:
    # Most gold answers are plain numbers: the same checkers on GSM8K-shaped rows (half of them wrong).
    plain = [
        {
            "gold": f"She sells {n} eggs.\n#### {n}",
            "pred": f"She has 16 - 3 = 13, so {n + n % 2} eggs.\n#### {n + n % 2}",
            "label": n % 2 == 0,
            "category": "plain",
        }
        for n in range(args.plain)
    ]
    if args.plain:
        print(f"\nplain numbers ({args.plain} GSM8K-shaped pairs)")
        for name, make in (
            ("ours", lambda: ours(plain, args.workers)),
            ("math-verify", lambda: math_verify(plain, False)),
        ):
            run = make()
            if run is None:
                continue
            start = time.perf_counter()
            verdicts = run()
            seconds = time.perf_counter() - start
            agree = sum(v == row["label"] for v, row in zip(verdicts, plain))
            print(f"{name:<12} agreement {100 * agree / len(plain):.1f}%  {len(plain) / seconds:>9.0f} pairs/s")


if __name__ == "__main__":
    main()
