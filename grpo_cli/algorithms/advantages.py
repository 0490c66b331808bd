"""Advantages from rewards: outcome (GRPO, Dr. GRPO), process supervision and DAPO's length penalty.

Pure functions over tensors. Samples come in group order: the G outputs of one prompt are
consecutive, so a flat `[B*G]` tensor reshapes to `[B, G]`.

Standard deviations are unbiased (Bessel-corrected, `torch.std`'s default), as in TRL and the
DeepSeekMath reference code. A set of one value has no spread: its std is taken as 0 (not NaN),
so a lone sample gets advantage 0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from grpo_cli.algorithms.registry import Registry

__all__ = [
    "ADVANTAGES",
    "GroupRewards",
    "SCALES",
    "char_to_token_ends",
    "group_reward_std",
    "outcome_advantages",
    "process_advantages",
    "soft_overlong_penalty",
]


def _std(x: Tensor, dim: int | None = None, keepdim: bool = False) -> Tensor:
    """Unbiased std over `dim` (all elements when None); 0 where there is only one element."""
    if dim is None:
        return x.std() if x.numel() > 1 else x.new_zeros(())
    if x.shape[dim] < 2:
        return torch.zeros_like(x.sum(dim=dim, keepdim=keepdim))
    return x.std(dim=dim, keepdim=keepdim)


def _grouped(rewards: Tensor, group_size: int) -> Tensor:
    """Reshape `[B*G]` or `[B, G]` rewards to float `[B, G]`, checking the group size."""
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    if rewards.dim() == 2 and rewards.shape[1] != group_size:
        raise ValueError(f"rewards of shape {tuple(rewards.shape)} do not have groups of {group_size}")
    if rewards.dim() not in (1, 2) or rewards.numel() % group_size:
        raise ValueError(f"rewards of shape {tuple(rewards.shape)} cannot be split into groups of {group_size}")
    if not rewards.is_floating_point():
        rewards = rewards.float()
    return rewards.reshape(-1, group_size)  # [B, G]


SCALES: Registry[Callable[[Tensor, float], Tensor]] = Registry("reward scaling")
"""`scale_rewards` name -> function `([B, G] rewards, eps) -> [B, G] advantages`."""


@SCALES.register("group")
def _scale_group(r: Tensor, eps: float) -> Tensor:
    """GRPO: `(r - mean_g) / (std_g + eps)` within each group."""
    return (r - r.mean(dim=1, keepdim=True)) / (_std(r, dim=1, keepdim=True) + eps)  # [B, G]


@SCALES.register("batch")
def _scale_batch(r: Tensor, eps: float) -> Tensor:
    """Group mean as baseline, std over the whole batch (TRL's `scale_rewards="batch"`)."""
    return (r - r.mean(dim=1, keepdim=True)) / (_std(r) + eps)  # [B, G]


@SCALES.register("none")
def _scale_none(r: Tensor, eps: float) -> Tensor:
    """Dr. GRPO: `r - mean_g`, no division by a std."""
    return r - r.mean(dim=1, keepdim=True)  # [B, G]


def outcome_advantages(rewards: Tensor, group_size: int, scale: str = "group", eps: float = 1e-4) -> Tensor:
    """Outcome advantages, one per output, shared by all its tokens.

    rewards: `[B*G]` or `[B, G]`; returns `[B*G]`. `scale` is a key of `SCALES`.
    """
    scaled = SCALES[scale]
    return scaled(_grouped(rewards, group_size), eps).reshape(-1)  # [B*G]


def group_reward_std(rewards: Tensor, group_size: int) -> Tensor:
    """Unbiased std of the rewards within each group: `[B*G]` or `[B, G]` -> `[B]`.

    A group whose std is 0 has all-equal rewards, so zero advantage: DAPO's dynamic sampling
    drops it.
    """
    return _std(_grouped(rewards, group_size), dim=1)  # [B]


def process_advantages(
    step_rewards: list[list[float]],
    step_token_ends: list[list[int]],
    group_size: int,
    seq_len: int,
    eps: float = 1e-4,
) -> Tensor:
    """Process-supervision advantages (DeepSeekMath 4.1.3): `[B*G, seq_len]`.

    Every step reward of every output of a group is normalized by the mean and std of the group's
    pooled step rewards. The advantage of token t of output i is the sum of the normalized rewards
    of the steps of output i that end at token index >= t; tokens after the last step end get 0.
    `step_token_ends[i][j]` is the completion-token index of the last token of step j of output i
    (see `char_to_token_ends`); an end at or past `seq_len` counts as ending at the last position.
    An output without steps gets 0 everywhere.
    """
    n = len(step_rewards)
    if len(step_token_ends) != n:
        raise ValueError(f"{n} outputs of step rewards but {len(step_token_ends)} of step ends")
    if group_size < 1 or n % group_size:
        raise ValueError(f"{n} outputs cannot be split into groups of {group_size}")
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    per_token = torch.zeros(n, seq_len)  # [B*G, T]: normalized step reward placed at its end token
    for g in range(0, n, group_size):
        members = range(g, g + group_size)
        for i in members:
            if len(step_rewards[i]) != len(step_token_ends[i]):
                raise ValueError(
                    f"output {i}: {len(step_rewards[i])} step rewards but {len(step_token_ends[i])} step ends"
                )
            if any(e < 0 for e in step_token_ends[i]):
                raise ValueError(f"output {i}: negative step end {min(step_token_ends[i])}")
        pooled = torch.tensor([r for i in members for r in step_rewards[i]], dtype=torch.float32)
        if pooled.numel() == 0:
            continue
        mean, std = pooled.mean(), _std(pooled)
        for i in members:
            for reward, end in zip(step_rewards[i], step_token_ends[i]):
                per_token[i, min(end, seq_len - 1)] += (reward - mean) / (std + eps)
    # Suffix sum along tokens: A[i, t] = sum_{t' >= t} per_token[i, t'].
    return per_token.flip(1).cumsum(1).flip(1)  # [B*G, T]


def char_to_token_ends(char_ends: list[int], token_offsets: list[tuple[int, int]]) -> list[int]:
    """Map step ends (character offsets in the completion) to completion-token indices.

    `char_ends[j]` is exclusive, like a slice end: step j is `completion[:char_ends[j]]` minus the
    earlier steps, so its last character is at `char_ends[j] - 1`. `token_offsets[k]` is token k's
    `(start, end)` character span (a fast tokenizer's offset mapping). Each step end maps to the
    token containing its last character; a character that no token covers (a gap, or zero-width
    special tokens) maps to the last token starting before it; the result is clamped to
    `[0, len(token_offsets) - 1]`.
    """
    if not char_ends:
        return []
    if not token_offsets:
        raise ValueError("no completion tokens to map step ends onto")
    out = []
    for end in char_ends:
        last_char = end - 1
        index = 0
        for k, (start, stop) in enumerate(token_offsets):
            if stop > start and start <= last_char:
                index = k
        out.append(index)
    return out


def soft_overlong_penalty(lengths: Tensor, max_len: int, cache_len: int) -> Tensor:
    """DAPO soft overlong punishment per output: `[N]` lengths -> `[N]` float penalties.

    `0` if `L <= max_len - cache_len`; `((max_len - cache_len) - L) / cache_len` if `L <= max_len`
    (0 down to -1, linearly); `-1` beyond `max_len`.
    """
    if not 0 <= cache_len <= max_len:
        raise ValueError(f"need 0 <= cache_len <= max_len, got cache_len={cache_len}, max_len={max_len}")
    lengths = lengths.float()  # [N]
    start = max_len - cache_len
    ramp = (start - lengths) / max(cache_len, 1)  # [N]; unused when cache_len == 0
    penalty = torch.where(lengths <= max_len, ramp, torch.full_like(lengths, -1.0))
    return torch.where(lengths <= start, torch.zeros_like(lengths), penalty)  # [N]


@dataclass(frozen=True)
class GroupRewards:
    """What every advantage kind reads: the rewards of N outputs in whole groups of G.

    rewards: `[N]`. scale: a `SCALES` name. threshold: the reward of a correct output.
    step_rewards, step_ends: per output, its step rewards and the completion token index where each
    step ends (process supervision; empty lists without). width: L, the longest completion in tokens.
    """

    rewards: Tensor
    group_size: int
    scale: str = "group"
    threshold: float = 1.0
    step_rewards: list[list[float]] = field(default_factory=list)
    step_ends: list[list[int]] = field(default_factory=list)
    width: int = 0


ADVANTAGES: Registry[Callable[[GroupRewards], Tensor]] = Registry("advantage kind")
"""Name -> `(GroupRewards) -> [N]` (one value per output) or `[N, L]` (per completion token). The
`train.advantage.kind` kinds: outcome, process (DeepSeekMath 4.1.3); the unified paradigm's gradient
coefficients (algorithms/paradigms.py): correct (RFT), one (SFT). An entry whose `needs_steps` is
true reads the verifiers' step rewards."""


@ADVANTAGES.register("outcome")
def outcome_kind(g: GroupRewards) -> Tensor:
    """GRPO: one group-relative advantage per output, `[N]`."""
    return outcome_advantages(g.rewards, g.group_size, g.scale)


@ADVANTAGES.register("process")
def process_kind(g: GroupRewards) -> Tensor:
    """Process supervision: per completion token, `[N, L]`."""
    return process_advantages(g.step_rewards, g.step_ends, g.group_size, g.width)


@ADVANTAGES.register("correct")
def correct_kind(g: GroupRewards) -> Tensor:
    """RFT: coefficient 1 on correct outputs (reward >= threshold), 0 otherwise, `[N]`."""
    return (g.rewards >= g.threshold).float()


@ADVANTAGES.register("one")
def one_kind(g: GroupRewards) -> Tensor:
    """SFT: coefficient 1 on every output, `[N]`."""
    return torch.ones_like(g.rewards, dtype=torch.float32)


for _kind in ADVANTAGES.values():
    _kind.needs_steps = _kind is process_kind  # type: ignore[attr-defined]
