"""Collecting a step's groups (docs/design.md, "Algorithm"): sampling rounds through the rollout core
(`pipeline.sample.generate_groups`), scoring, and DAPO's dynamic sampling, which drops the groups
whose rewards are all equal and samples more prompts. `batch.make_batch` turns what is kept into
tensors and advantages.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from grpo_cli import ranks
from grpo_cli.algorithms import advantages as adv
from grpo_cli.algorithms.paradigms import ALGORITHMS
from grpo_cli.config import Config
from grpo_cli.pipeline.sample import Policy, generate_groups, render_prompts, sampling_params, to_records
from grpo_cli.pipeline.scoring import ScoreSummary, score
from grpo_cli.records import Problem, ScoredSample
from grpo_cli.sampling.base import Completion, Sampler
from grpo_cli.training import wrapping
from grpo_cli.training.batch import Batch, DataOrder, make_batch, sft_batch


@dataclass
class Collected:
    """What the sampling rounds of one step gathered, on every rank.

    kept: the groups trained on (completions, scored records; G each), at most the prompts wanted.
    scored, summaries: every scored sample and scoring summary of every round (dropped groups too).
    """

    kept: list[tuple[list[Completion], list[ScoredSample]]] = field(default_factory=list)
    scored: list[ScoredSample] = field(default_factory=list)
    summaries: list[ScoreSummary] = field(default_factory=list)
    stats: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(
            ("sampling_rounds", "groups_dropped", "prompts_sampled", "sampling_time", "scoring_time"), 0.0
        )
    )


def collect_batch(
    step: int,
    cfg: Config,
    policy: Policy,
    frozen_sampler: Sampler | None,
    problems: list[Problem],
    order: DataOrder,
    verifiers: list[Any],
) -> Batch:
    """The step's batch: the dataset's solutions (SFT), or groups sampled (from `frozen_sampler`
    when given, RFT's initial model, else the policy), scored and filtered, then made into tensors."""
    paradigm = ALGORITHMS[cfg.algorithm]
    wanted = cfg.train.run.batch_size // cfg.sampling.n  # prompts per step
    if not paradigm.samples:
        chosen = [problems[i] for i in order.take(wanted)]
        return sft_batch(chosen, render_prompts(chosen, policy.tokenizer, cfg.data), cfg, policy.tokenizer)
    got = collect_groups(step, cfg, policy, frozen_sampler or policy.sampler, problems, order, verifiers)
    got.stats.update(reward_stats(got.scored, got.summaries, cfg.sampling.n, cfg.eval.threshold))
    kind = paradigm.advantage(cfg.train.advantage.kind)
    return make_batch(cfg, kind, policy.tokenizer, got.kept, got.stats, got.scored)


def collect_groups(
    step: int,
    cfg: Config,
    policy: Policy,
    sampler: Sampler,
    problems: list[Problem],
    order: DataOrder,
    verifiers: list[Any],
) -> Collected:
    """Sample and score whole groups until `batch_size / n` are kept: one round, unless dynamic
    sampling dropped zero-variance groups (then at most `max_sampling_rounds`)."""
    t, G = cfg.train, cfg.sampling.n
    wanted = t.run.batch_size // G
    got = Collected()
    for rnd in range(t.filtering.max_sampling_rounds if t.filtering.dynamic_sampling else 1):
        chosen = [problems[i] for i in order.take(wanted if rnd == 0 else wanted - len(got.kept))]
        completions, scored = _round(step, rnd, cfg, policy, sampler, chosen, verifiers, got)
        for g, comps in enumerate(completions):
            group = scored[g * G : (g + 1) * G]
            rewards = [r["reward"] for r in group]
            if t.filtering.dynamic_sampling and max(rewards) == min(rewards):
                got.stats["groups_dropped"] += 1
                continue
            if len(got.kept) < wanted:
                got.kept.append((comps, group))
        if len(got.kept) >= wanted:
            break
    return got


def _round(
    step: int,
    rnd: int,
    cfg: Config,
    policy: Policy,
    sampler: Sampler,
    chosen: list[Problem],
    verifiers: list[Any],
    got: Collected,
) -> tuple[list[list[Completion]], list[ScoredSample]]:
    """One sampling round of `chosen`: under torchrun each rank samples and scores a share of the
    groups, and all gather the whole round."""
    t0 = time.perf_counter()
    mine = ranks.shard(len(chosen))
    params = sampling_params(cfg, seed=step_seed(cfg.seed, step, rnd), prompt_offset=mine.start)
    with wrapping.full_weights(policy.model):
        completions = generate_groups(sampler, policy.tokenizer, chosen[mine], cfg.data, params)
    t1 = time.perf_counter()
    scored, summary = score(to_records(chosen[mine], completions, logprobs=False), verifiers)
    completions, scored, summaries = ranks.gather(completions, scored, [summary])  # the whole round, on every rank
    got.stats["sampling_time"] += t1 - t0
    got.stats["scoring_time"] += time.perf_counter() - t1
    got.stats["sampling_rounds"] += 1
    got.stats["prompts_sampled"] += len(chosen)
    got.summaries += summaries
    got.scored += scored
    return completions, scored


def step_seed(seed: int, step: int, rnd: int) -> int:
    """Sampling seed of one round: a function of (seed, step, round), so a resumed run samples
    exactly what the uninterrupted run did."""
    return (seed * 1_000_003 + step * 1_009 + rnd) % (2**63)


def reward_stats(
    scored: list[ScoredSample], summaries: list[ScoreSummary], G: int, threshold: float = 1.0
) -> dict[str, float]:
    """Reward mean/std overall and per verifier, accuracy (the fraction of samples whose reward is
    at least `threshold`, as in the held-out evaluation), zero-std group fraction, lengths,
    failures and timeouts (in total and per verifier)."""
    rewards = torch.tensor([r["reward"] for r in scored], dtype=torch.float64)
    out = {
        "samples_scored": float(len(scored)),
        "reward_mean": float(rewards.mean()),
        "reward_std": float(rewards.std(unbiased=False)),
        "accuracy": float((rewards >= threshold).double().mean()),
    }
    for name in scored[0]["rewards"] if scored else []:
        vals = torch.tensor(
            [r["rewards"][name] for r in scored if r["rewards"].get(name) is not None], dtype=torch.float64
        )
        if len(vals):
            out[f"reward/{name}_mean"] = float(vals.mean())
            out[f"reward/{name}_std"] = float(vals.std(unbiased=False))
    out["zero_std_frac"] = float((adv.group_reward_std(rewards.float(), G) == 0).float().mean())
    lengths = torch.tensor([r["completion_tokens"] for r in scored], dtype=torch.float64)
    out["completion_len_mean"] = float(lengths.mean())
    out["completion_len_max"] = float(lengths.max())
    out["truncated_frac"] = float(sum(r["finish_reason"] == "length" for r in scored) / len(scored))
    out.update(_failure_stats(summaries))
    return out


def _failure_stats(summaries: list[ScoreSummary]) -> dict[str, float]:
    out = {
        "verifier_failures": float(sum(c.failed for s in summaries for c in s.verifiers.values())),
        "verifier_timeouts": float(sum(c.timed_out for s in summaries for c in s.verifiers.values())),
    }
    for name in summaries[0].verifiers if summaries else []:
        out[f"failures/{name}"] = float(sum(s.verifiers[name].failed for s in summaries if name in s.verifiers))
        out[f"timeouts/{name}"] = float(sum(s.verifiers[name].timed_out for s in summaries if name in s.verifiers))
    return out
