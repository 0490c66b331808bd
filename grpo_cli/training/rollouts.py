"""What the model wrote: a step's scored samples with their advantages, `rollouts/step-NNNNNN.jsonl`.

The records are the scored-record format of `grpo score` (the problem's fields, `completion`,
`group`, `index`, `finish_reason`, `completion_tokens`, `reward`, `rewards` per verifier, `info`)
plus `step` and `advantage` (the completion's advantage, its token mean under process advantages;
null for a group dynamic sampling dropped), so `grpo score` and `grpo eval --samples` read them back.

When the run ends, `rewarded-samples.jsonl` holds `REWARDED_COUNT` of the rollouts' samples that
earned a positive reward, drawn at random (seeded): what the reward paid for, to read for cheats.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from grpo_cli.pipeline.data import read_jsonl, write_jsonl
from grpo_cli.records import Rollout, ScoredSample

FOLDER = "rollouts"
REWARDED = "rewarded-samples.jsonl"
REWARDED_COUNT = 20


def due(step: int, total: int, save_every: int, every: int) -> bool:
    """Whether step `step` (1-based) writes its rollouts: each checkpoint step, every `every`
    steps, and the last step."""
    return step == total or any(n and step % n == 0 for n in (save_every, every))


def path_of(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / FOLDER / f"step-{step:06d}.jsonl"


def write(run_dir: Path, step: int, records: list[ScoredSample], group_size: int) -> Path:
    """Write the step's records (whole groups of `group_size`, in sampling order); `group` is
    numbered across the whole step, since each sampling round and rank numbers its own from 0."""
    path = path_of(run_dir, step)
    rows: list[Rollout] = [
        {**r, "step": step, "group": i // group_size, "advantage": r.get("advantage")} for i, r in enumerate(records)
    ]
    write_jsonl(path, rows)
    return path


def rewarded_sample(rows: list[dict[str, Any]], count: int, seed: int) -> list[dict[str, Any]]:
    """`count` of the `rows` whose reward is positive, drawn at random with `seed` (all of them
    where there are fewer), in the order they came. A completion repeated for the same prompt (a
    converged group writes the same text G times) counts once: each one drawn is a new text to read."""
    seen: set[tuple[Any, Any]] = set()
    paid = []
    for r in rows:
        key = (r.get("prompt"), r.get("completion"))
        if isinstance(r.get("reward"), int | float) and r["reward"] > 0 and key not in seen:
            seen.add(key)
            paid.append(r)
    picked = sorted(random.Random(seed).sample(range(len(paid)), min(count, len(paid))))
    return [paid[i] for i in picked]


def write_rewarded(run_dir: Path, seed: int, count: int = REWARDED_COUNT) -> Path | None:
    """`rewarded_sample` of every rollout file of the run to `run_dir/REWARDED`; None (and no file)
    where nothing was rewarded or nothing sampled (an SFT run)."""
    files = sorted((Path(run_dir) / FOLDER).glob("step-*.jsonl"))
    picked = rewarded_sample([row for f in files for row in read_jsonl(f)], count, seed)
    if not picked:
        return None
    path = Path(run_dir) / REWARDED
    write_jsonl(path, picked)
    return path
