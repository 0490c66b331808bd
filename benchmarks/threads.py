"""Seconds per training step of the default run (`grpo train`, tiny preset, no held-out evaluation)
by torch thread count, with and without other CPU-bound processes on the machine.

    python benchmarks/threads.py --steps 5 --threads 0,1,2 --burners 0,2

For each burner count B it starts B busy-looping processes (as many other jobs), waits for the load
average to see them, then runs `grpo train --threads T` for each T in turn, interleaved `--repeats`
times so drift hits every T alike, and prints the median step time over steps 2.. (step 1 warms up).
`--threads 0` is grpo's default: the available cores less those other processes keep busy now
(`grpo_cli.config.auto_threads`, CPU time sampled from /proc/stat); the thread count it chose at
launch is printed beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from grpo_cli.config import auto_threads


def burn() -> None:
    while True:
        pass


def step_times(steps: int, threads: int, folder: Path) -> list[float]:
    out = folder / f"run-{threads}-{time.monotonic_ns()}"
    command = [sys.executable, "-m", "grpo_cli", "train", "--out", str(out), "--steps", str(steps), "-q"]
    command += ["--threads", str(threads), "--set", "train.run.eval_n=0"]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["step_time"] for r in rows[1:]]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", default="0,1,2")
    p.add_argument("--burners", default="0,2")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--settle", type=float, default=40.0, help="seconds for the load average to see the burners")
    args = p.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    print(f"cores available: {len(os.sched_getaffinity(0))}; load average now: {os.getloadavg()[0]:.1f}")
    print("| other busy processes (ours) | load avg at start | --threads | threads used | s/step (median) |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for burners in (int(b) for b in args.burners.split(",")):
            burner = [sys.executable, "-c", "import threads; threads.burn()"]
            procs = [subprocess.Popen(burner, cwd=Path(__file__).parent) for _ in range(burners)]
            if burners:
                time.sleep(args.settle)
            try:
                times: dict[int, list[float]] = {t: [] for t in threads}
                chosen: dict[int, int] = {}
                loads: dict[int, float] = {}
                for _ in range(args.repeats):
                    for t in threads:
                        loads[t] = os.getloadavg()[0]
                        chosen[t] = t or auto_threads()
                        times[t] += step_times(args.steps, t, Path(tmp))
            finally:
                for proc in procs:
                    proc.kill()
                    proc.wait()
            for t in threads:
                print(
                    f"| {burners} | {loads[t]:.1f} | {t} | {chosen[t]} | {statistics.median(times[t]):.2f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
