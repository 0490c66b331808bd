"""`grpo sample`: prompts in, n completions per prompt out (JSONL), with token log-probs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from grpo_cli.cli.common import (
    DataOpt,
    ModelOpt,
    PresetOpt,
    QuietOpt,
    SeedOpt,
    SetOpt,
    ThreadsOpt,
    cfg_help,
    path_or_stdout,
    resolve_config,
)


def sample(
    data: DataOpt = None,
    model: ModelOpt = None,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Output JSONL (- for stdout). The resolved config is written beside it.")
    ] = Path("samples.jsonl"),
    n: Annotated[int | None, typer.Option("--n", "-n", help=cfg_help("Completions per prompt.", "sampling.n"))] = None,
    temperature: Annotated[
        float | None, typer.Option(help=cfg_help("Sampling temperature, 0 = greedy.", "sampling.temperature"))
    ] = None,
    top_p: Annotated[float | None, typer.Option(help=cfg_help("Nucleus sampling mass.", "sampling.top_p"))] = None,
    max_new_tokens: Annotated[
        int | None, typer.Option(help=cfg_help("Longest completion in tokens.", "sampling.max_new_tokens"))
    ] = None,
    no_logprobs: Annotated[
        bool, typer.Option("--no-logprobs", help="Leave token_logprobs out of the records.")
    ] = False,
    seed: SeedOpt = None,
    threads: ThreadsOpt = None,
    preset: PresetOpt = None,
    set_: SetOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Sample n completions per prompt. Default: the shipped model on the held-out arithmetic split."""
    from grpo_cli.config import write_config_beside
    from grpo_cli.pipeline import preflight
    from grpo_cli.pipeline.data import check_writable, write_jsonl
    from grpo_cli.pipeline.sample import load_policy, problems_from, sample_problems, sampling_params
    from grpo_cli.report import Reporter

    cfg = resolve_config(
        preset,
        set_,
        seed=seed,
        model__path=model,
        model__threads=threads,
        data__eval=data,
        sampling__n=n,
        sampling__temperature=temperature,
        sampling__top_p=top_p,
        sampling__max_new_tokens=max_new_tokens,
    )
    target = path_or_stdout(out)
    if target is not None:
        check_writable(target, "--out")  # before the work, not after it
    preflight.check_fits(cfg, cfg.model.path)
    report = Reporter.console(quiet)
    problems = problems_from(cfg.data.eval, cfg.data, need_answer=False)
    policy = load_policy(cfg)
    start = time.perf_counter()
    rows = sample_problems(policy, problems, cfg, sampling_params(cfg), report, logprobs=not no_logprobs)
    seconds = time.perf_counter() - start
    write_jsonl(target, rows)
    if target is not None:
        write_config_beside(cfg, target)
    tokens = sum(r["completion_tokens"] for r in rows)
    truncated = sum(r["finish_reason"] == "length" for r in rows)
    report.summary(
        f"sampled {len(rows)} completions for {len(problems)} prompts in {seconds:.1f}s "
        f"({tokens / max(seconds, 1e-9):.0f} tokens/s, {truncated} truncated) -> {out}"
    )
