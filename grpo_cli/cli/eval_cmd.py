"""`grpo eval`: accuracy, unbiased pass@k and maj@k, as a table, JSON and a plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from grpo_cli.cli.common import (
    DataOpt,
    PresetOpt,
    QuietOpt,
    SeedOpt,
    SetOpt,
    ThreadsOpt,
    VerifierOpt,
    cfg_help,
    resolve_config,
    verifier_specs,
)


def samples_per_problem(records: list[list[dict]], paths: list[Path]) -> int:
    """The fewest samples any problem has across the files: the n their pass@k and maj@k can use."""
    from grpo_cli.errors import UserError
    from grpo_cli.pipeline.evaluate import group_records

    sizes = [len(g) for rows, path in zip(records, paths) for g in group_records(rows, str(path))]
    if not sizes:
        raise UserError(f"{paths[0]}: no samples in the file")
    return min(sizes)


def evaluate(
    model: Annotated[
        list[str] | None,
        typer.Option("--model", "-m", help="Model folder or `tiny`; repeat to compare models side by side."),
    ] = None,
    samples: Annotated[
        list[Path] | None,
        typer.Option(
            "--samples", help="Evaluate existing samples/scored JSONL files instead of sampling (repeatable)."
        ),
    ] = None,
    data: DataOpt = None,
    metric: Annotated[
        str | None, typer.Option("--metric", help=cfg_help("Comma-separated metrics: maj@k,pass@k.", "eval.metrics"))
    ] = None,
    k: Annotated[
        str | None,
        typer.Option(
            "--k",
            help=cfg_help(
                "Comma-separated k values (with --samples and no --k: those <= the samples' n, and n).", "eval.k"
            ),
        ),
    ] = None,
    n: Annotated[int | None, typer.Option("--n", "-n", help=cfg_help("Samples per problem.", "eval.n"))] = None,
    temperature: Annotated[
        float | None, typer.Option(help=cfg_help("Sampling temperature.", "sampling.temperature"))
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Folder for results.json, scored.jsonl per model and config.yaml."),
    ] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print the results as JSON on stdout.")] = False,
    plot: Annotated[Path | None, typer.Option("--plot", help="Draw pass@k / maj@k curves to this PNG.")] = None,
    verifier: VerifierOpt = None,
    seed: SeedOpt = None,
    threads: ThreadsOpt = None,
    preset: PresetOpt = None,
    set_: SetOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Evaluate models: accuracy, pass@k and maj@k.

    Default: the shipped model on the held-out arithmetic split."""
    from grpo_cli.errors import UserError
    from grpo_cli.pipeline import preflight
    from grpo_cli.pipeline.data import check_writable, read_jsonl
    from grpo_cli.pipeline.evaluate import (
        evaluate_model,
        evaluate_samples,
        results_document,
        results_table,
        write_results,
    )
    from grpo_cli.pipeline.metrics import parse_ks, parse_metrics
    from grpo_cli.report import Reporter

    try:
        metrics = parse_metrics(metric) if metric else None
        ks = parse_ks(k) if k else None
    except ValueError as e:
        raise UserError(str(e)) from None
    if model and samples:
        raise UserError("give either --model or --samples, not both")
    records = [read_jsonl(p) for p in samples or []]
    if records and n is None and ks is None:
        n = samples_per_problem(records, samples or [])  # the k values below follow the files' n
    if n is not None and ks is None:
        # --n alone: keep the preset's k values that fit, and report k = n too.
        ks = sorted({k for k in resolve_config(preset, set_).eval.k if k <= n} | {n})
    # One --model is recorded as model.path, so the config written beside the results is the one that ran.
    cfg = resolve_config(
        preset,
        set_,
        seed=seed,
        model__path=model[0] if model and len(model) == 1 else None,
        model__threads=threads,
        data__eval=data,
        eval__n=n,
        eval__k=ks,
        eval__metrics=metrics,
        sampling__temperature=temperature,
        verifiers=verifier_specs(verifier),
    )
    if out is not None:
        check_writable(out, "--out", folder=True)
    if plot is not None:
        check_writable(plot, "--plot")
    preflight.check_verifiers(cfg)
    if not samples:
        for m in model or [cfg.model.path]:  # every model, before the first is sampled
            preflight.check_fits(cfg, m, [cfg.data.eval])
    report = Reporter.console(quiet)
    if samples:
        runs = [evaluate_samples(rows, cfg, report, str(p)) for p, rows in zip(samples, records)]
    else:
        runs = [evaluate_model(cfg, m, report, label=m) for m in (model or [cfg.model.path])]

    document = results_document(runs)  # results.json and --json alike
    report.table(results_table(runs, cfg.eval.k, cfg.eval.metrics))
    for run in runs:
        if run.summary is not None and run.summary.failures:
            report.warn(f"{run.label}: {run.summary.describe()}")
    if out is not None:
        write_results(out, runs, cfg)
    if plot is not None:
        from grpo_cli.pipeline.plot import plot_curves

        plot_curves(document["results"], plot)
    if json_:
        typer.echo(json.dumps(document, indent=2))
    best = max(runs, key=lambda r: r.result["accuracy"])
    report.summary(
        f"evaluated {len(runs)} model(s) on {runs[0].result['problems']} problems x {runs[0].result['n']} samples; "
        f"best accuracy {100 * best.result['accuracy']:.1f}% ({best.label})" + (f" -> {out}" if out else "")
    )
