"""Throughput of the `code` verifier: samples per second for each test format, by `workers`.

    python benchmarks/code_verifier.py [--samples 24] [--workers 1 2 4] [--sandbox auto]

Each sample is a small right solution with 4 tests; every sample starts fresh sandboxes (function
tests: two processes per sample; stdin/stdout: one per test), so the figure is dominated by
bubblewrap and interpreter start-up. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import time

from grpo_verifiers.code import CodeVerifier

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=24)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--sandbox", default="auto")
    args = parser.parse_args()
    print(f"{'format':<14}" + "".join(f"{f'workers={w}':>14}" for w in args.workers) + "   (samples/s)")
    for name, (completion, tests) in FORMATS.items():
        row = f"{name:<14}"
        for workers in args.workers:
            verifier = CodeVerifier(workers=workers, sandbox=args.sandbox)
            samples = [{"completion": completion, "tests": tests}] * args.samples
            start = time.perf_counter()
            verdicts = verifier.verify(samples)
            elapsed = time.perf_counter() - start
            assert all(v.reward == 1.0 for v in verdicts), verdicts[0].info
            row += f"{args.samples / elapsed:>14.1f}"
        print(row, flush=True)
    print(f"sandbox: {verdicts[0].info['sandbox']}")


if __name__ == "__main__":
    main()
