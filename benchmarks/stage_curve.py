"""The README's SmolLM2 curve: held-out accuracy against wall time of a staged run (its stages.json)
and, optionally, of an SFT-alone run of the same data; the per-step NLL (SFT) and mean reward (GRPO)
beside it.

    python benchmarks/stage_curve.py RUN OUT.png [SFT_ALONE_RUN]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)


def main(run: Path, out: Path, alone: Path | None) -> None:
    summary = json.loads((run / "stages.json").read_text())
    fig, (acc, steps) = plt.subplots(1, 2, figsize=(10, 3.6))
    start = 0.0
    points = [(0.0, summary["accuracy_before"] * 100)]
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
        points.append((start / 60, stage["accuracy_after"] * 100))
    acc.plot([p[0] for p in points], [p[1] for p in points], "o-", label="smollm2 preset: SFT then GRPO")
    for (x, y), label in zip(points, ["start", "after SFT", "after GRPO"]):
        acc.annotate(f"{label}\n{y:.1f}%", (x, y), textcoords="offset points", xytext=(4, -24), fontsize=8)
    if alone is not None:
        other = json.loads((alone / "stages.json").read_text())
        x, y = other["wall_time_s"] / 60, other["accuracy_after"] * 100
        acc.plot([0, x], [other["accuracy_before"] * 100, y], "s--", label="SFT alone (evaluated at start and end)")
        acc.annotate(f"SFT alone\n{y:.1f}%", (x, y), textcoords="offset points", xytext=(-60, -30), fontsize=8)
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
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]) if len(sys.argv) > 3 else None)
