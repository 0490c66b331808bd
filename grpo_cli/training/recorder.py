"""The run recorder (docs/design.md, "Ecosystem"): everything a training run writes about itself,
through one object on rank 0. metrics.jsonl (appended each step; truncated on resume to the
checkpoint's step, the file the reward model's rows share), the trackers (`tracking`), the rollout
files (`rollouts`), the step's warnings, the sign-of-life lines, eval.json and the run's
training-curves plot, whose drawing `grpo train --plot` shares (`plot_run`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from grpo_cli import ranks
from grpo_cli.config import Config, dump_config
from grpo_cli.report import Reporter
from grpo_cli.training import rollouts
from grpo_cli.training.batch import Batch
from grpo_cli.training.tracking import Trackers

TIMING_KEYS = ("step_time", "sampling_time", "scoring_time", "update_time", "tokens_per_s")
"""Metrics that measure wall time: everything else in metrics.jsonl is reproducible for a seed."""

METRICS = "metrics.jsonl"


class Recorder:
    """What the run writes; on ranks other than 0 it writes nothing and only the reporter (a
    silent one there) is used."""

    def __init__(self, cfg: Config, run_dir: Path, report: Reporter, start_step: int) -> None:
        self.cfg, self.run_dir, self.report = cfg, run_dir, report
        self.main = ranks.is_main()
        self.trackers: Trackers | None = None
        self.no_signal: list[float] = []  # each step's share of groups with equal rewards
        self.advised = False  # the no-signal advice is given once
        if self.main:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "config.yaml").write_text(dump_config(cfg), encoding="utf-8")
            truncate_metrics(run_dir / METRICS, start_step)

    def start(self, before: dict[str, Any] | None) -> None:
        """Open the trackers (an unavailable one is an error now) and log the before-evaluation."""
        if self.main:
            self.trackers = Trackers(self.cfg, self.run_dir, self.report)
            self.trackers.log_eval(before, 0)

    def step(self, row: dict[str, Any], batch: Batch) -> None:
        """The log stage: the metrics row to metrics.jsonl and the trackers, and on the steps
        `rollouts.due` picks, what the model wrote; then the step's warnings and sign of life."""
        step, t = row["step"], self.cfg.train
        if self.main:
            append_metrics(self.run_dir / METRICS, row)
            if self.trackers is not None:
                self.trackers.log(row, step)
            if batch.records and rollouts.due(step, t.run.steps, t.run.save_every, t.run.log_completions):
                rollouts.write(self.run_dir, step, batch.records, self.cfg.sampling.n)
        warn_about(row, step, self.report)
        if "zero_std_frac" in row and not self.advised:
            self.no_signal.append(row["zero_std_frac"])
            advice = no_signal_advice(self.no_signal, t.filtering.dynamic_sampling)
            if advice:
                self.report.warn(advice)
                self.advised = True
        if not self.report.interactive and _sign_of_life_due(row, t):
            self.report.log(f"step {step}/{t.run.steps}  {step_status(row)}")

    def finish(self, before: dict[str, Any] | None, after: dict[str, Any] | None) -> None:
        """eval.json, the after-evaluation to the trackers, a random few of the rewarded samples
        (`rollouts.write_rewarded`) and the training curves."""
        if not self.main:
            return
        rollouts.write_rewarded(self.run_dir, self.cfg.seed)
        if before is not None and after is not None:
            text = json.dumps({"before": before, "after": after}, indent=2)
            (self.run_dir / "eval.json").write_text(text, encoding="utf-8")
        if self.trackers is not None:
            self.trackers.log_eval(after, self.cfg.train.run.steps)
            self.trackers.close()
        plot_run(self.run_dir, self.cfg, before, after, self.report)


def append_metrics(path: Path, row: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(row) + "\n")


def truncate_metrics(path: Path, keep_until: int) -> None:
    """Keep the rows of steps <= keep_until (a resumed run rewrites what followed its checkpoint)."""
    if not path.exists():
        return
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a kill
            continue
        if row.get("step", 0) <= keep_until:
            rows.append(line)
    path.write_text("".join(r + "\n" for r in rows), encoding="utf-8")


def warn_about(row: dict[str, Any], step: int, report: Reporter) -> None:
    if row.get("skipped_updates"):
        report.warn(
            f"step {step}: {int(row['skipped_updates'])} update(s) skipped: non-finite gradient (weights unchanged)"
        )
    if row.get("skipped"):
        report.warn(f"step {step}: no group with unequal rewards after dynamic sampling; update skipped")
    elif row.get("zero_std_frac") == 1.0:
        report.warn(f"step {step}: every group has equal rewards: no learning signal this step")
    failed = row.get("verifier_failures", 0) + row.get("verifier_timeouts", 0)
    if failed:
        report.warn(
            f"step {step}: verifiers failed or timed out on {int(failed)} of {int(row['samples_scored'])} "
            "samples (they got the failure value)"
        )


def step_status(row: dict[str, Any]) -> str:
    """The last step in the figures a user watches: a sampled step's mean reward, accuracy, KL,
    gradient norm and share of groups without signal (equal rewards); a supervised step's NLL; then
    tokens/s, seconds per step and held-out accuracy. Not the surrogate loss: with mu = 1 it is 0 by
    construction (its gradient is not), and SFT's is -1 (metrics.jsonl keeps it)."""
    if "reward_mean" in row:
        parts = [f"reward {row['reward_mean']:.3f}"]
        parts += [f"acc {100 * row['accuracy']:.1f}%"] if "accuracy" in row else []
        parts += [f"kl {row['kl']:.4f}"] if "kl" in row else []
    else:
        parts = [f"nll {row['nll']:.3f}"] if "nll" in row else []
    parts += [f"gnorm {row['grad_norm']:.3f}"] if "grad_norm" in row else []
    parts += [f"no-signal {100 * row['zero_std_frac']:.0f}%"] if "zero_std_frac" in row else []
    parts += [f"{row['tokens_per_s']:.0f} tok/s"] if "tokens_per_s" in row else []
    parts += [f"{row['step_time']:.2f} s/step"]
    parts += [f"held-out {100 * row['eval_accuracy']:.1f}%"] if "eval_accuracy" in row else []
    return "  ".join(parts)


NO_SIGNAL_WINDOW = 10  # steps over which the share of groups without signal is judged
NO_SIGNAL_SHARE = 0.5  # above it, the run is told once what to change


def no_signal_advice(shares: list[float], dynamic_sampling: bool = False) -> str | None:
    """Once the last `NO_SIGNAL_WINDOW` steps' mean share of equal-reward groups is over
    `NO_SIGNAL_SHARE`, what to change (not what is already on); None before that or below it."""
    if len(shares) < NO_SIGNAL_WINDOW:
        return None
    share = sum(shares[-NO_SIGNAL_WINDOW:]) / NO_SIGNAL_WINDOW
    if share <= NO_SIGNAL_SHARE:
        return None
    said = f"{100 * share:.0f}% of groups had equal rewards over the last {NO_SIGNAL_WINDOW} steps: they carry no "
    if dynamic_sampling:  # already dropped from the update, but each costs a sampling round
        return said + (
            "learning signal and dynamic sampling spends extra sampling rounds replacing them. Raise "
            "sampling.temperature or sampling.n, or train on problems the model solves sometimes"
        )
    return said + (
        "learning signal. Raise sampling.temperature or sampling.n, set train.filtering.dynamic_sampling=true, "
        "or train on problems the model solves sometimes (an SFT warm-up first, or easier data)"
    )


def _sign_of_life_due(row: dict[str, Any], t: Any) -> bool:
    """Where no progress bar is drawn (output to a file): a line every `log_every` steps, every
    held-out evaluation, and the last step."""
    step = row["step"]
    return bool((t.run.log_every and step % t.run.log_every == 0) or "eval_accuracy" in row or step == t.run.steps)


def training_title(cfg: Config) -> str:
    from grpo_cli.pipeline.plot import training_title as title

    return title(str(cfg.model.path), cfg.data.train, cfg.algorithm)


def plot_run(
    run_dir: Path,
    cfg: Config,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    report: Reporter,
    path: Path | None = None,
) -> Path | None:
    """The training curves (reward, accuracy with the held-out before/after, KL, length, zero-std
    fraction per step) to `path`, by default the run folder's training-curves.png. A plotting
    failure warns; the run stands."""
    from grpo_cli.pipeline.data import read_jsonl
    from grpo_cli.pipeline.plot import plot_training

    path = path or run_dir / "training-curves.png"
    try:
        rows = read_jsonl(run_dir / METRICS)
        plot_training(rows, path, title=training_title(cfg), before=before, after=after)
    except Exception as e:  # a figure must never cost the trained model
        report.warn(f"training curves not drawn ({type(e).__name__}: {e})")
        return None
    return path
