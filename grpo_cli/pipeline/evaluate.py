"""The eval stage: sample n per problem (or read samples), score, and compute accuracy, pass@k, maj@k."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grpo_cli.config import Config
from grpo_cli.errors import UserError
from grpo_cli.pipeline.metrics import evaluate_groups
from grpo_cli.pipeline.scoring import ScoreSummary, opened_verifiers, score
from grpo_cli.records import Problem, Sample, ScoredSample
from grpo_cli.report import Reporter


@dataclass
class EvalRun:
    """One model's evaluation: metrics, the scored samples, and how the verifiers fared."""

    label: str
    result: dict[str, Any]
    scored: list[ScoredSample]
    summary: ScoreSummary | None = None
    seconds: dict[str, float] = field(default_factory=dict)


def score_records(samples: list[Sample], cfg: Config, report: Reporter) -> tuple[list[ScoredSample], ScoreSummary]:
    """Score sample records with the configured verifiers (the `grpo score` stage)."""
    with opened_verifiers(cfg.verifiers) as verifiers, report.progress("scoring", total=len(samples)) as advance:
        scored, summary = score(samples, verifiers)
        advance(len(samples))
    return scored, summary


def group_records(records: list[ScoredSample], source: str = "samples") -> list[list[ScoredSample]]:
    """Records grouped per problem (by `group`, else by `id`), in order of first appearance."""
    groups: dict[Any, list[ScoredSample]] = defaultdict(list)
    for i, row in enumerate(records):
        key = row.get("group", row.get("id"))
        if key is None:
            raise UserError(f"{source} row {i + 1}: needs a 'group' or 'id' field to group samples by problem")
        groups[key].append(row)
    return list(groups.values())


def metrics_of(scored: list[dict[str, Any]], cfg: Config, source: str = "samples") -> dict[str, Any]:
    groups = group_records(scored, source)
    try:
        return evaluate_groups(groups, cfg.eval.k, cfg.eval.metrics, seed=cfg.seed, threshold=cfg.eval.threshold)
    except ValueError as e:
        raise UserError(f"{source}: {e}") from None


def evaluate_policy(policy: Any, problems: list[Problem], cfg: Config, report: Reporter, label: str) -> EvalRun:
    """Sample `eval.n` completions per problem from a loaded policy, score them, compute metrics."""
    import time

    from grpo_cli.pipeline.sample import sample_problems, sampling_params

    t0 = time.perf_counter()
    samples = sample_problems(
        policy, problems, cfg, sampling_params(cfg, n=cfg.eval.n), report, label=f"sampling {label}"
    )
    t1 = time.perf_counter()
    scored, summary = score_records(samples, cfg, report)
    t2 = time.perf_counter()
    return EvalRun(label, metrics_of(scored, cfg), scored, summary, {"sampling": t1 - t0, "scoring": t2 - t1})


def evaluate_model(cfg: Config, model_path: str, report: Reporter, label: str | None = None) -> EvalRun:
    """Evaluate one model folder (or `tiny`) on the held-out problems of `data.eval`."""
    from grpo_cli.pipeline.sample import load_policy, problems_from

    problems = problems_from(cfg.data.eval, cfg.data)
    return evaluate_policy(load_policy(cfg, model_path), problems, cfg, report, label or model_path)


def evaluate_samples(records: list[dict[str, Any]], cfg: Config, report: Reporter, label: str) -> EvalRun:
    """Metrics of an existing samples file; records without a `reward` are scored first."""
    summary = None
    if any("reward" not in r for r in records):
        records, summary = score_records(records, cfg, report)
    return EvalRun(label, metrics_of(records, cfg, label), records, summary)


def results_document(runs: list[EvalRun]) -> dict[str, Any]:
    """`{"results": {label: metrics}, "sources": [label, ...]}`: results.json and `--json` alike."""
    return {"results": {run.label: run.result for run in runs}, "sources": [r.label for r in runs]}


def write_results(out: Path, runs: list[EvalRun], cfg: Config) -> None:
    """The `--out` folder: scored-I.jsonl per model, results.json (written whole or not at all) and
    the config that ran."""
    from grpo_cli.config import write_config_beside
    from grpo_cli.pipeline.data import atomic_writer, write_jsonl

    out.mkdir(parents=True, exist_ok=True)
    for i, run in enumerate(runs):
        write_jsonl(out / f"scored-{i}.jsonl", run.scored)
    with atomic_writer(out / "results.json") as handle:
        json.dump(results_document(runs), handle, indent=2)
    write_config_beside(cfg, out)


def results_table(runs: list[EvalRun], ks: list[int], metrics: list[str]) -> Any:
    """Accuracy, then each metric at each k, in percent; one row per model."""
    from rich.table import Table

    shapes = {(r.result["problems"], r.result["n"]) for r in runs}
    title = "evaluation" + (
        f": {runs[0].result['problems']} problems x {runs[0].result['n']} samples" if len(shapes) == 1 else ""
    )
    table = Table(title=title)
    table.add_column("model", overflow="fold")
    table.add_column("accuracy", justify="right")
    flexible = any("accuracy_flexible" in r.result for r in runs)
    if flexible:  # strict-match and flexible-extract side by side
        table.add_column("flexible", justify="right")
    for metric in metrics:
        for k in ks:
            table.add_column(metric.replace("@k", f"@{k}"), justify="right")
    for run in runs:
        r = run.result
        cells = [run.label, f"{100 * r['accuracy']:.1f}"]
        if flexible:
            cells.append(f"{100 * r['accuracy_flexible']:.1f}" if "accuracy_flexible" in r else "-")
        for metric in metrics:
            cells += [f"{100 * r[metric][k]:.1f}" for k in ks]
        table.add_row(*cells)
    return table
