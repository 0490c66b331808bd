"""What the model wrote: a step's scored samples with their advantages, `rollouts/step-NNNNNN.jsonl`.

The records are the scored-record format of `grpo score` (the problem's fields, `completion`,
`group`, `index`, `finish_reason`, `completion_tokens`, `reward`, `rewards` per verifier, `info`)
plus `step` and `advantage` (the completion's advantage, its token mean under process advantages;
null for a group dynamic sampling dropped), so `grpo score` and `grpo eval --samples` read them back.
"""

from __future__ import annotations

from pathlib import Path

from grpo_cli.pipeline.data import write_jsonl
from grpo_cli.records import Rollout, ScoredSample

FOLDER = "rollouts"


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
