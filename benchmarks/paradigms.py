"""DeepSeekMath section 5.2 on the embedded default: RFT, online RFT, GRPO with outcome rewards and
GRPO with process rewards (the rule-based `prm` step checker), each trained from the shipped model
on the same budget (steps x completions), then evaluated on the held-out split with the same seed.

    python benchmarks/paradigms.py [--steps 60] [--seed 0] [--out runs/paradigms]

Prints one row per method: held-out accuracy (mean over eval_n samples at T=1) before and after,
and the wall time. A benchmark, not a test: it takes about 4 x the time of `grpo train`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from grpo_cli.config import load_config
from grpo_cli.report import Reporter
from grpo_cli.training.trainer import train

METHODS = {
    "rft": ["algorithm=rft"],
    "online_rft": ["algorithm=online_rft"],
    "grpo (outcome)": ["algorithm=grpo"],
    # math scores the outcome (reward, accuracy); prm (weight 0) gives the step rewards.
    "grpo (process)": [
        "algorithm=grpo",
        "train.advantage=process",
        "verifiers=[{name: math}, {name: prm, weight: 0.0}]",
    ],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="steps per method (default: the tiny preset's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/paradigms"))
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    args = parser.parse_args()

    rows = []
    for name in args.methods.split(","):
        sets = [
            *METHODS[name],
            f"seed={args.seed}",
            f"model.threads={args.threads}",
            f"train.out_dir={args.out / name.replace(' ', '_').strip('()')}",
        ]
        if args.steps:
            sets.append(f"train.steps={args.steps}")
        cfg = load_config("tiny", sets)
        start = time.perf_counter()
        result = train(cfg, Reporter.console(quiet=True))
        rows.append((name, result.before["accuracy"], result.after["accuracy"], time.perf_counter() - start))
        print(
            f"{name:<16} before {100 * rows[-1][1]:5.1f}%  after {100 * rows[-1][2]:5.1f}%  ({rows[-1][3]:.0f}s)",
            flush=True,
        )

    print("\nmethod           held-out accuracy before -> after (T=1)   time")
    for name, before, after, seconds in rows:
        print(
            f"{name:<16} {100 * before:5.1f}% -> {100 * after:5.1f}%  ({100 * (after - before):+.1f})   {seconds:.0f}s"
        )
    (args.out / "results.json").write_text(
        json.dumps([dict(zip(("method", "before", "after", "seconds"), r)) for r in rows], indent=2)
    )


if __name__ == "__main__":
    main()
