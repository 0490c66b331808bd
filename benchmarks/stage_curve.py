"""The README's SmolLM2 curve: held-out accuracy against wall time of a staged run (its stages.json)
and, optionally, of an SFT-alone run of the same data; the per-step NLL (SFT) and mean reward (GRPO)
beside it.

    python benchmarks/stage_curve.py RUN OUT.png [--alone SFT_ALONE_RUN] [--stage-eval sft=RESULTS.json]

A stage that skipped its after-evaluation (`train.run.eval_after: false`) gets its point from a
`grpo eval --out` results.json of its checkpoint when one is given, else none.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)


def eval_accuracy(results: Path) -> float:
    """The accuracy of a `grpo eval --out` results.json that evaluated one model."""
    document = json.loads(results.read_text())
    (only,) = document["results"].values()
    return float(only["accuracy"])


def main(run: Path, out: Path, alone: Path | None, stage_evals: dict[str, Path]) -> None:
    summary = json.loads((run / "stages.json").read_text())
    fig, (acc, steps) = plt.subplots(1, 2, figsize=(10, 3.6))
    start = 0.0
    points = [(0.0, summary["accuracy_before"] * 100, "start")]
    for stage in summary["stages"]:
        rows = [json.loads(line) for line in (Path(stage["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
        key = "nll" if stage["name"] == "sft" else "reward_mean"
        t, xs, ys = start, [], []
        for row in rows:
            t += row.get("step_time", 0.0)
            xs.append(t / 60)
            ys.append(row.get(key))
        steps.plot(xs, ys, lw=0.8, label=f"{stage['name']}: {'NLL' if key == 'nll' else 'mean reward'} per step")
        start += stage["wall_time_s"]
        after = stage["accuracy_after"]
        if after is None and stage["name"] in stage_evals:
            after = eval_accuracy(stage_evals[stage["name"]])
        if after is not None:
            points.append((start / 60, after * 100, f"after {stage['name'].upper()}"))
    acc.plot([p[0] for p in points], [p[1] for p in points], "o-", label="smollm2 preset: SFT then GRPO")
    for x, y, label in points:
        acc.annotate(f"{label}\n{y:.1f}%", (x, y), textcoords="offset points", xytext=(4, -24), fontsize=8)
    if alone is not None:
        other = json.loads((alone / "stages.json").read_text())
        x, y = other["wall_time_s"] / 60, other["accuracy_after"] * 100
        acc.plot([0, x], [other["accuracy_before"] * 100, y], "s--", label="SFT alone (evaluated at start and end)")
        acc.annotate(f"SFT alone\n{y:.1f}%", (x, y), textcoords="offset points", xytext=(-30, 8), fontsize=8)
    acc.legend(fontsize=8, loc="lower right")
    acc.set_xlabel("wall time (min), 2 CPU cores")
    acc.set_ylabel("held-out accuracy (%), 200 x 4 at T=0.7")
    acc.set_ylim(0, 100)
    acc.grid(alpha=0.3)
    steps.set_xlabel("wall time (min)")
    steps.legend(fontsize=8)
    steps.grid(alpha=0.3)
    fig.suptitle("grpo train --preset smollm2: SmolLM2-135M-Instruct on the built-in arithmetic task", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=90)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="the staged run's folder (its stages.json)")
    p.add_argument("out", type=Path, help="the PNG to write")
    p.add_argument("--alone", type=Path, help="an SFT-alone run's folder, drawn beside it")
    p.add_argument(
        "--stage-eval", action="append", default=[], metavar="STAGE=RESULTS", help="a stage's grpo eval results.json"
    )
    args = p.parse_args()
    evals = dict(item.split("=", 1) for item in args.stage_eval)
    main(args.run, args.out, args.alone, {k: Path(v) for k, v in evals.items()})
