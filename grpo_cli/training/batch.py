"""Making a step's batch from what was collected (docs/design.md, "Algorithm"): prompt and completion
ids packed into right-padded tensors, DAPO's overlong shaping, and the advantages (or the unified
paradigm's gradient coefficients) through `advantages.ADVANTAGES`, whose kind the paradigm names.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import torch

from grpo_cli.algorithms import advantages as adv
from grpo_cli.config import Config
from grpo_cli.errors import UserError
from grpo_cli.records import Problem, ScoredSample
from grpo_cli.sampling.base import Completion
from grpo_cli.sampling.hf import encode


@dataclass
class Batch:
    """One step's training data. N sequences (whole groups of G), S = longest prompt + completion,
    T = S - 1 target positions (position t predicts token t + 1).

    input_ids, attention_mask: [N, S], right-padded.
    loss_mask: [N, T], true where the target is a completion token that enters the loss.
    old_logp: [N, T] sampling-time log-probs at completion positions, or None (SFT).
    advantages: [N] (outcome) or [N, T] (process).
    stats: the sampling and reward figures of the step, for metrics.jsonl.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    loss_mask: torch.Tensor
    old_logp: torch.Tensor | None
    advantages: torch.Tensor
    stats: dict[str, float] = field(default_factory=dict)
    records: list[ScoredSample] = field(default_factory=list)
    """Every scored sample of the step, whole groups in sampling order, each with its `advantage`
    (None for a group dynamic sampling dropped): what `rollouts` writes."""

    @property
    def size(self) -> int:
        return self.input_ids.shape[0]


def empty_batch(stats: dict[str, float]) -> Batch:
    """A step with nothing to train on (every group dropped by dynamic sampling); no rollouts."""
    return Batch(
        torch.zeros(0, 1, dtype=torch.long),
        torch.zeros(0, 1),
        torch.zeros(0, 0, dtype=torch.bool),
        None,
        torch.zeros(0),
        stats,
    )


class DataOrder:
    """Prompts in a seeded random order, epoch after epoch; its state is two integers.
    `shuffle=False` keeps the file's order (benchmarks that compare with another trainer)."""

    def __init__(self, size: int, seed: int, epoch: int = 0, cursor: int = 0, *, shuffle: bool = True) -> None:
        self.size, self.seed, self.epoch, self.cursor, self.shuffle = size, seed, epoch, cursor, shuffle
        self._perm = self._permutation()

    def _permutation(self) -> list[int]:
        perm = list(range(self.size))
        if self.shuffle:
            random.Random(self.seed * 1_000_003 + self.epoch).shuffle(perm)
        return perm

    def take(self, n: int) -> list[int]:
        out = []
        while len(out) < n:
            if self.cursor == self.size:
                self.epoch, self.cursor = self.epoch + 1, 0
                self._perm = self._permutation()
            out.append(self._perm[self.cursor])
            self.cursor += 1
        return out

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "cursor": self.cursor}


def pack(comps: list[Completion], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded prompt+completion ids [N, S], attention mask [N, S], loss mask [N, T] and the
    sampling-time log-probs [N, T], aligned to target positions."""
    width = max(len(c.prompt_ids) + len(c.token_ids) for c in comps)
    n = len(comps)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    attn = torch.zeros((n, width), dtype=torch.long)
    loss_mask = torch.zeros((n, width - 1), dtype=torch.bool)
    old = torch.zeros((n, width - 1), dtype=torch.float32)
    for i, c in enumerate(comps):
        p, l = len(c.prompt_ids), len(c.token_ids)
        ids[i, : p + l] = torch.tensor(c.prompt_ids + c.token_ids)
        attn[i, : p + l] = 1
        loss_mask[i, p - 1 : p - 1 + l] = True  # target t = p-1+j predicts completion token j
        if c.logprobs:
            old[i, p - 1 : p - 1 + l] = torch.tensor(c.logprobs)
    return ids, attn, loss_mask, old


def make_batch(
    cfg: Config,
    kind: str,
    tokenizer: Any,
    kept: list[tuple[list[Completion], list[ScoredSample]]],
    stats: dict[str, float],
    all_scored: list[ScoredSample],
) -> Batch:
    """The training tensors of the kept groups (completions and their scored records, G each):
    DAPO's soft overlong penalty and overlong filter, then the advantages of `kind`
    (`advantages.ADVANTAGES`), each record's written back for the rollout files."""
    t = cfg.train
    for record in all_scored:
        record["advantage"] = None  # set below for the groups trained on
    if not kept:
        return empty_batch(stats)
    comps = [c for group, _ in kept for c in group]
    records = [r for _, group in kept for r in group]
    rewards = torch.tensor([r["reward"] for r in records], dtype=torch.float32)  # [N]
    if t.filtering.soft_overlong:
        lengths = torch.tensor([len(c.token_ids) for c in comps], dtype=torch.float32)  # [N]
        penalty = adv.soft_overlong_penalty(lengths, cfg.sampling.max_new_tokens, t.filtering.overlong_cache)
        rewards = rewards + penalty
        stats["overlong_penalty_mean"] = float(penalty.mean())
    input_ids, attention_mask, loss_mask, old_logp = pack(comps, tokenizer.pad_token_id)
    if t.filtering.overlong_filter:
        truncated = torch.tensor([c.finish_reason == "length" for c in comps])
        loss_mask &= ~truncated[:, None]
    scores = group_rewards(cfg, kind, rewards, records, comps, tokenizer)
    advantages = to_target_positions(adv.ADVANTAGES[kind](scores), comps, loss_mask)
    stats["advantage_abs_mean"] = float(advantages.abs().mean())
    stats["sampled_tokens"] = float(sum(len(c.token_ids) for c in comps))
    for i, record in enumerate(records):
        row = advantages[i] if advantages.dim() == 1 else advantages[i][loss_mask[i]]  # process: its token mean
        record["advantage"] = round(float(row.mean()), 6) if row.numel() else 0.0
    return Batch(input_ids, attention_mask, loss_mask, old_logp, advantages, stats, all_scored)


def group_rewards(
    cfg: Config,
    kind: str,
    rewards: torch.Tensor,
    records: list[ScoredSample],
    comps: list[Completion],
    tokenizer: Any,
) -> adv.GroupRewards:
    """What the advantage kind reads; the step rewards (character offsets in the completion mapped
    to token positions) only for a kind that needs them."""
    t, group = cfg.train, cfg.sampling.n
    if not getattr(adv.ADVANTAGES[kind], "needs_steps", False):
        return adv.GroupRewards(rewards, group, t.advantage.scale, t.advantage.correct_threshold)
    step_rewards, step_ends = [], []
    for rec, comp in zip(records, comps):
        steps = rec.get("steps") or []
        offsets = token_char_offsets(tokenizer, comp.token_ids)
        step_rewards.append([float(s["reward"]) for s in steps])
        step_ends.append(adv.char_to_token_ends([int(s["end"]) for s in steps], offsets) if steps and offsets else [])
    if not any(step_rewards):
        raise UserError(
            f"train.advantage.kind={kind} needs a verifier that returns step rewards (e.g. `prm`); none did"
        )
    width = max(len(c.token_ids) for c in comps)
    return adv.GroupRewards(
        rewards, group, t.advantage.scale, t.advantage.correct_threshold, step_rewards, step_ends, width
    )


def to_target_positions(values: torch.Tensor, comps: list[Completion], loss_mask: torch.Tensor) -> torch.Tensor:
    """Per-output advantages `[N]` as they are; per-completion-token ones `[N, L]` moved to the
    batch's target positions `[N, T]`."""
    if values.dim() == 1:
        return values
    out = torch.zeros(loss_mask.shape, dtype=torch.float32)  # [N, T]
    for i, c in enumerate(comps):
        start = len(c.prompt_ids) - 1
        out[i, start : start + len(c.token_ids)] = values[i, : len(c.token_ids)]
    return out


def token_char_offsets(tokenizer: Any, token_ids: list[int]) -> list[tuple[int, int]]:
    """(start, end) character span of each completion token in the decoded completion text."""
    offsets, prev = [], 0
    for i in range(len(token_ids)):
        end = len(tokenizer.decode(token_ids[: i + 1], skip_special_tokens=True))
        offsets.append((prev, max(end, prev)))
        prev = max(end, prev)
    return offsets


def check_solutions(problems: list[Problem], cfg: Config) -> None:
    field_name = cfg.data.solution_field
    for i, p in enumerate(problems):
        if not isinstance(p.get(field_name), str):
            raise UserError(
                f"{cfg.data.train} row {i + 1}: algorithm sft needs a solution in field '{field_name}' "
                "(data.solution_field)"
            )


def sft_batch(chosen: list[Problem], prompts: list[str], cfg: Config, tokenizer: Any) -> Batch:
    """SFT: the dataset's solutions as completions of the rendered `prompts`, gradient coefficient 1."""
    eos = tokenizer.eos_token_id
    comps = []
    for prompt, problem in zip(prompts, chosen):
        solution = problem[cfg.data.solution_field]
        ids = tokenizer(solution, add_special_tokens=False)["input_ids"][: cfg.sampling.max_new_tokens - 1]
        comps.append(Completion(solution, encode(tokenizer, prompt), ids + [eos], [], "stop"))
    ids, attn, loss_mask, _ = pack(comps, tokenizer.pad_token_id)
    stats = {
        "sampled_tokens": float(sum(len(c.token_ids) for c in comps)),
        "completion_len_mean": float(sum(len(c.token_ids) for c in comps) / len(comps)),
    }
    return Batch(ids, attn, loss_mask, None, torch.ones(len(comps)), stats)
