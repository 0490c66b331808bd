"""The GRPO loop (docs/design.md, "Algorithm"), read top to bottom in `train`:

for each step: collect a batch (sample G per prompt, score, DAPO dynamic sampling, advantages or the
gradient coefficients of RFT / SFT), update the policy (`mu` optimizer steps over the batch in
micro-batches with gradient accumulation), let the reward model learn (iterative RL), record the
metrics row, checkpoint. The run's objects live in a `Session` (training/session.py); each stage is
a module: `collect`, `batch`, `update`, `iterative`, `recorder`, `checkpoint`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grpo_cli import ranks
from grpo_cli.config import Config
from grpo_cli.pipeline.scoring import opened_verifiers
from grpo_cli.report import Reporter
from grpo_cli.training.batch import Batch
from grpo_cli.training.checkpoint import latest_checkpoint
from grpo_cli.training.iterative import end_of_step, observe, reward_verifiers
from grpo_cli.training.recorder import METRICS, step_status
from grpo_cli.training.session import Session


@dataclass
class TrainResult:
    run_dir: Path
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    last_checkpoint: Path | None
    steps_done: int


def train(
    cfg: Config,
    report: Reporter,
    *,
    resume: bool = False,
    before: dict[str, Any] | None = None,
    evaluate_before: bool = True,
) -> TrainResult:
    """Run (or resume) training; a run that fails or is interrupted before its first step leaves no
    run folder behind (only when this call created it). `before` / `evaluate_before`: a known
    before-evaluation, or none at all (`Session.open`; a staged run's later stages)."""
    run_dir = Path(cfg.train.run.out_dir)
    fresh = not run_dir.exists()
    try:
        session = Session.open(cfg, report, resume=resume, before=before, evaluate_before=evaluate_before)
        return _train(session)
    except BaseException:
        if fresh and ranks.is_main():
            remove_unstarted_run(run_dir)
        raise


def _train(session: Session) -> TrainResult:
    steps = session.cfg.train.run.steps
    with (
        opened_verifiers(reward_verifiers(session.cfg, session.reward_model)) as verifiers,
        session.report.progress("training", total=steps) as advance,
    ):
        advance(session.start_step)
        for step in range(session.start_step, steps):
            row, batch = run_step(session, step, verifiers)
            session.recorder.step(row, batch)
            advance(1, status=step_status(row))
            if session.checkpoint_due(step + 1):
                session.save(step + 1)
    evaluated = session.eval_problems is not None and session.cfg.train.run.eval_after
    after = session.evaluate("after") if evaluated else None
    session.recorder.finish(session.before, after)
    session.close()
    return TrainResult(session.run_dir, session.before, after, session.checkpoint, steps - session.start_step)


def run_step(session: Session, step: int, verifiers: list[Any]) -> tuple[dict[str, Any], Batch]:
    """One step's stages; its metrics row and batch."""
    t0 = time.perf_counter()
    batch = session.collect(step, verifiers)
    t1 = time.perf_counter()
    update = session.update(batch)
    t2 = time.perf_counter()
    session.sync_reference(step + 1)
    observe(session.reward_model, batch.records)
    rm_row = end_of_step(session.reward_model, step, verifiers, session.policy, session.report)  # Algorithm 1
    row = {"step": step + 1, **batch.stats, **update, **rm_row, "update_time": t2 - t1, "step_time": t2 - t0}
    row["tokens_per_s"] = batch.stats.get("sampled_tokens", 0) / max(t2 - t0, 1e-9)
    row.update(session.periodic_eval(step + 1))
    return row, batch


def remove_unstarted_run(run_dir: Path) -> None:
    """Delete a run folder that holds no checkpoint and no metrics row (config.yaml alone, say)."""
    import shutil

    metrics = run_dir / METRICS
    if latest_checkpoint(run_dir) is None and not (metrics.exists() and metrics.stat().st_size):
        shutil.rmtree(run_dir, ignore_errors=True)
