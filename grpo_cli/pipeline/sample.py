"""The sample stage shared by `grpo sample`, `grpo eval` and the trainer: a loaded policy, prompts
rendered from problems, and completions turned into sample records (docs/design.md, "Records")."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grpo_cli.config import Config, DataConfig
from grpo_cli.pipeline.data import load_problems, render_prompt
from grpo_cli.records import Problem, Sample
from grpo_cli.report import Reporter
from grpo_cli.sampling.base import Completion, Sampler, SamplingParams


@dataclass
class Policy:
    """A model with its tokenizer and the sampler that generates from it."""

    model_dir: Path
    model: Any
    tokenizer: Any
    sampler: Sampler


def make_sampler(model: Any, tokenizer: Any, cfg: Config) -> Sampler:
    """The configured sampling backend, generating from `model`."""
    from grpo_cli.models.loading import eos_token_ids

    s = cfg.sampling
    if s.backend == "vllm":
        from grpo_cli.sampling.vllm import VLLMSampler

        return VLLMSampler(
            model, tokenizer, eos_token_ids(model, tokenizer), batch_size=s.batch_size, vllm_kwargs=s.vllm_kwargs
        )
    from grpo_cli.sampling.hf import HFSampler

    return HFSampler(model, tokenizer, eos_token_ids(model, tokenizer), batch_size=s.batch_size)


def load_policy(cfg: Config, model_path: str | None = None, *, trainable: bool = False) -> Policy:
    from grpo_cli.models.loading import load_model, load_tokenizer, resolve_model_dir, setup_torch
    from grpo_cli.models.lora import is_adapter_dir

    setup_torch(cfg.model.threads)
    model_dir = resolve_model_dir(model_path or cfg.model.path)
    tokenizer = load_tokenizer(model_dir, cfg.model.base)
    model = load_model(model_dir, cfg.model, trainable=trainable)
    sampler = make_sampler(model, tokenizer, cfg)
    if is_adapter_dir(model_dir):
        sampler.sync_weights(model)  # an engine that loaded the base from disk gets the merged weights
    return Policy(model_dir, model, tokenizer, sampler)


def problems_from(source: str, data: DataConfig, *, need_answer: bool = True) -> list[Problem]:
    return load_problems(
        source,
        prompt_field=data.prompt_field,
        answer_field=data.answer_field,
        id_field=data.id_field,
        need_answer=need_answer,
        limit=data.limit,
    )


def render_prompts(problems: list[Problem], tokenizer: Any, data: DataConfig) -> list[str]:
    return [
        render_prompt(
            p,
            tokenizer,
            template=data.template,
            chat_template=data.chat_template,
            system_prompt=data.system_prompt,
            instruction=data.instruction,
        )
        for p in problems
    ]


def sampling_params(
    cfg: Config, n: int | None = None, seed: int | None = None, prompt_offset: int = 0
) -> SamplingParams:
    s = cfg.sampling
    return SamplingParams(
        n=n or s.n,
        temperature=s.temperature,
        top_p=s.top_p,
        max_new_tokens=s.max_new_tokens,
        seed=cfg.seed if seed is None else seed,
        prompt_offset=prompt_offset,
    )


def to_records(problems: list[Problem], completions: list[list[Completion]], *, logprobs: bool = True) -> list[Sample]:
    """Sample records: the problem's fields plus the completion, its group and index in the group."""
    rows = []
    for group, (problem, comps) in enumerate(zip(problems, completions)):
        for index, c in enumerate(comps):
            row = dict(problem)
            row.update(
                completion=c.text,
                group=group,
                index=index,
                finish_reason=c.finish_reason,
                completion_tokens=len(c.token_ids),
            )
            if logprobs:
                row["token_logprobs"] = [round(x, 6) for x in c.logprobs]
            rows.append(row)
    return rows


def generate_groups(
    sampler: Sampler,
    tokenizer: Any,
    problems: list[Problem],
    data: DataConfig,
    params: SamplingParams,
    progress: Callable[[int], None] = lambda n: None,
) -> list[list[Completion]]:
    """The rollout core: `params.n` completions (one group) per problem, from prompts rendered as
    `data` says. `grpo sample`, `grpo eval` and the trainer all generate through it."""
    return sampler.generate(render_prompts(problems, tokenizer, data), params, progress)


def sample_problems(
    policy: Policy,
    problems: list[Problem],
    cfg: Config,
    params: SamplingParams,
    report: Reporter,
    *,
    logprobs: bool = True,
    label: str = "sampling",
) -> list[Sample]:
    with report.progress(label, total=len(problems) * params.n) as advance:
        completions = generate_groups(policy.sampler, policy.tokenizer, problems, cfg.data, params, advance)
    return to_records(problems, completions, logprobs=logprobs)
