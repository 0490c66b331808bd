"""A staged run (docs/design.md, "Stages"): the stages of a preset trained in order, each an ordinary
run in `<out_dir>/<i+1>-<name>/` that starts from the previous stage's final checkpoint, with
`<out_dir>/stages.json` recording each finished stage (a resumed staged run skips those).
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from grpo_cli import ranks
from grpo_cli.config import Config
from grpo_cli.report import Reporter
from grpo_cli.training.checkpoint import checkpoint_path, latest_checkpoint

STAGES_FILE = "stages.json"


def chain(configs: list[tuple[str, Config]]) -> list[tuple[str, Config]]:
    """Each stage after the first starts from the previous stage's final checkpoint (its model.path);
    new configs, the given ones untouched."""
    out: list[tuple[str, Config]] = []
    for i, (name, cfg) in enumerate(configs):
        cfg = copy.deepcopy(cfg)
        if i:
            prev = out[-1][1].train.run
            cfg.model.path = str(checkpoint_path(Path(prev.out_dir), prev.steps))
        out.append((name, cfg))
    return out


@dataclass
class StageResult:
    """One stage's figures in stages.json: `wall_time_s` of the invocation that finished it, the
    held-out evaluations before and after it (None without eval), `done` once its final checkpoint
    and after-evaluation are written."""

    name: str
    run_dir: str
    steps: int
    wall_time_s: float
    checkpoint: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    done: bool = True

    @property
    def accuracy_after(self) -> float | None:
        return float(self.after["accuracy"]) if self.after else None


@dataclass
class StagesSummary:
    stages: list[StageResult]

    @property
    def before(self) -> dict[str, Any] | None:
        return self.stages[0].before if self.stages else None

    @property
    def after(self) -> dict[str, Any] | None:
        return self.stages[-1].after if self.stages else None

    @property
    def wall_time_s(self) -> float:
        return sum(s.wall_time_s for s in self.stages)

    def to_json(self) -> dict[str, Any]:
        return {
            "stages": [{**asdict(s), "accuracy_after": s.accuracy_after} for s in self.stages],
            "accuracy_before": float(self.before["accuracy"]) if self.before else None,
            "accuracy_after": float(self.after["accuracy"]) if self.after else None,
            "wall_time_s": self.wall_time_s,
        }


def read_finished(out_dir: Path) -> dict[str, StageResult]:
    """The stages stages.json marks done whose final checkpoint is still there, by name."""
    path = out_dir / STAGES_FILE
    if not path.is_file():
        return {}
    known = set(StageResult.__dataclass_fields__)
    rows = json.loads(path.read_text(encoding="utf-8")).get("stages", [])
    results = [StageResult(**{k: v for k, v in row.items() if k in known}) for row in rows]
    return {r.name: r for r in results if r.done and r.checkpoint and Path(r.checkpoint).is_dir()}


def train_stages(
    configs: list[tuple[str, Config]], out_dir: Path, report: Reporter, *, resume: bool = False
) -> StagesSummary:
    """Train the chained stages in order. The first stage evaluates before training (when eval is
    configured); each later stage takes the previous stage's after-evaluation as its before. With
    `resume`, finished stages are skipped and the first unfinished one resumes from its last
    checkpoint, or starts afresh when it has none."""
    from grpo_cli.training.trainer import train  # torch: only when training

    finished = read_finished(out_dir) if resume else {}
    summary = StagesSummary([])
    for i, (name, cfg) in enumerate(configs):
        run_dir = Path(cfg.train.run.out_dir)
        if name in finished and Path(finished[name].run_dir).resolve() == run_dir.resolve():
            report.log(f"stage {i + 1}: {name} finished earlier ({finished[name].checkpoint}); skipped")
            summary.stages.append(finished[name])
            continue
        report.log(f"stage {i + 1}/{len(configs)}: {name} -> {run_dir}")
        prev_after = summary.stages[-1].after if summary.stages else None
        t0 = time.perf_counter()
        result = train(
            cfg,
            report,
            resume=resume and latest_checkpoint(run_dir) is not None,
            before=prev_after,
            evaluate_before=i == 0,
        )
        checkpoint = str(result.last_checkpoint) if result.last_checkpoint else None
        stage = StageResult(
            name, str(run_dir), cfg.train.run.steps, time.perf_counter() - t0, checkpoint, result.before, result.after
        )
        summary.stages.append(stage)
        if ranks.is_main():
            (out_dir / STAGES_FILE).write_text(json.dumps(summary.to_json(), indent=2) + "\n", encoding="utf-8")
    return summary
