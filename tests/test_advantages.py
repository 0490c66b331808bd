"""Advantages, worked by hand. Stds are unbiased (divide by n - 1), as in TRL."""

import math

import pytest
import torch

from grpo_cli.algorithms.advantages import (
    ADVANTAGES,
    GroupRewards,
    char_to_token_ends,
    group_reward_std,
    outcome_advantages,
    process_advantages,
    soft_overlong_penalty,
)

# Two groups of G=2: [0, 0] and [0, 4].
REWARDS = torch.tensor([0.0, 0.0, 0.0, 4.0])


def test_group_scale_one_group_by_hand():
    # r = [1, 0, 0, 0]: mean 0.25, deviations [0.75, -0.25, -0.25, -0.25],
    # unbiased var = (0.5625 + 3 * 0.0625) / 3 = 0.25, std 0.5 -> A = [1.5, -0.5, -0.5, -0.5].
    a = outcome_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), group_size=4, eps=0.0)
    torch.testing.assert_close(a, torch.tensor([1.5, -0.5, -0.5, -0.5]))
    # The default eps=1e-4 divides by 0.5001 instead.
    a = outcome_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), group_size=4)
    torch.testing.assert_close(a, torch.tensor([1.5, -0.5, -0.5, -0.5]) * 0.5 / 0.5001)


def test_group_scale():
    # Group 1 [0, 0]: mean 0, deviations 0 -> A = 0 / (0 + eps) = [0, 0] (eps keeps it finite).
    # Group 2 [0, 4]: mean 2, deviations [-2, 2], unbiased std = sqrt((4 + 4) / 1) = 2*sqrt(2)
    # -> A = [-1/sqrt(2), 1/sqrt(2)] = [-0.7071, 0.7071].
    a = outcome_advantages(REWARDS, group_size=2, scale="group", eps=1e-12)
    s = 1 / math.sqrt(2)
    torch.testing.assert_close(a, torch.tensor([0.0, 0.0, -s, s]))


def test_batch_scale():
    # Baseline is still the group mean: deviations [0, 0, -2, 2].
    # Std over the whole batch [0, 0, 0, 4]: mean 1, squared deviations 1 + 1 + 1 + 9 = 12,
    # unbiased var 12 / 3 = 4, std 2 -> A = [0, 0, -1, 1].
    a = outcome_advantages(REWARDS, group_size=2, scale="batch", eps=0.0)
    torch.testing.assert_close(a, torch.tensor([0.0, 0.0, -1.0, 1.0]))


def test_none_scale_is_dr_grpo():
    # No std division: A = r - mean_g = [0, 0, -2, 2].
    a = outcome_advantages(REWARDS, group_size=2, scale="none")
    torch.testing.assert_close(a, torch.tensor([0.0, 0.0, -2.0, 2.0]))


def test_two_dim_rewards_give_the_same_flat_advantages():
    flat = outcome_advantages(REWARDS, group_size=2)
    grid = outcome_advantages(REWARDS.reshape(2, 2), group_size=2)
    assert grid.shape == (4,)
    torch.testing.assert_close(flat, grid)


def test_integer_rewards_and_group_of_one():
    a = outcome_advantages(torch.tensor([1, 0, 0, 0]), group_size=4, eps=0.0)
    torch.testing.assert_close(a, torch.tensor([1.5, -0.5, -0.5, -0.5]))
    # A lone sample has nothing to be relative to: advantage 0, not NaN.
    torch.testing.assert_close(outcome_advantages(torch.tensor([3.0, 5.0]), 1), torch.zeros(2))


def test_outcome_rejects_bad_input():
    with pytest.raises(ValueError, match="unknown reward scaling 'grouped'; choose one of group, batch, none"):
        outcome_advantages(REWARDS, 2, scale="grouped")
    with pytest.raises(ValueError, match="groups of 3"):
        outcome_advantages(REWARDS, 3)
    with pytest.raises(ValueError, match="groups of 4"):
        outcome_advantages(REWARDS.reshape(2, 2), 4)


def test_group_reward_std():
    # [0, 0] -> 0 (DAPO's dynamic sampling drops this group); [0, 4] -> 2*sqrt(2) = 2.8284.
    torch.testing.assert_close(group_reward_std(REWARDS, 2), torch.tensor([0.0, 2 * math.sqrt(2)]))


def test_process_advantages_by_hand():
    # One group of 2 outputs, seq_len 5.
    #   o_1: two steps, rewards [1, 1], ending at tokens 1 and 3.
    #   o_2: one step, reward [0], ending at token 2.
    # Pooled step rewards [1, 1, 0]: mean 2/3, deviations [1/3, 1/3, -2/3],
    # unbiased var = (1/9 + 1/9 + 4/9) / 2 = 1/3, std = 1/sqrt(3).
    # Normalized: [1/sqrt(3), 1/sqrt(3), -2/sqrt(3)] = [0.5774, 0.5774, -1.1547].
    # A_{i,t} = sum of o_i's normalized step rewards whose end >= t:
    #   o_1: t=0,1 -> 0.5774 + 0.5774 = 1.1547; t=2,3 -> 0.5774; t=4 (after the last step) -> 0.
    #   o_2: t=0,1,2 -> -1.1547; t=3,4 -> 0.
    u = 1 / math.sqrt(3)
    a = process_advantages([[1.0, 1.0], [0.0]], [[1, 3], [2]], group_size=2, seq_len=5, eps=0.0)
    expected = torch.tensor(
        [
            [2 * u, 2 * u, u, u, 0.0],
            [-2 * u, -2 * u, -2 * u, 0.0, 0.0],
        ]
    )
    torch.testing.assert_close(a, expected)


def test_process_advantages_groups_are_separate_and_edges():
    # Group 1 as above; group 2: o_3 has no steps (all 0), o_4 one step of reward 7 ending past
    # seq_len. Group 2 pools a single step: std 0, deviation 0 -> normalized 0 / (0 + eps) = 0,
    # and group 1's steps do not leak into it.
    a = process_advantages([[1.0, 1.0], [0.0], [], [7.0]], [[1, 3], [2], [], [99]], group_size=2, seq_len=5)
    assert a.shape == (4, 5)
    torch.testing.assert_close(a[2:], torch.zeros(2, 5))
    # One group of two one-step outputs [0] and [2]: pooled mean 1, unbiased std sqrt(2),
    # normalized [-1/sqrt(2), 1/sqrt(2)]; o_1's step ends at token 0, o_2's at 99 -> token 2 (last).
    a = process_advantages([[0.0], [2.0]], [[0], [99]], group_size=2, seq_len=3, eps=0.0)
    s = 1 / math.sqrt(2)
    torch.testing.assert_close(a, torch.tensor([[-s, 0.0, 0.0], [s, s, s]]))


def test_process_advantages_rejects_mismatched_input():
    with pytest.raises(ValueError, match="2 step rewards but 1 step ends"):
        process_advantages([[1.0, 0.0], [1.0]], [[1], [1]], group_size=2, seq_len=4)
    with pytest.raises(ValueError, match="groups of 2"):
        process_advantages([[1.0]], [[1]], group_size=2, seq_len=4)


# "a=1\nb=2\n" tokenized as "a" "=" "1\n" "b" "=" "2\n": (start, end) char spans.
OFFSETS = [(0, 1), (1, 2), (2, 4), (4, 5), (5, 6), (6, 8)]


def test_char_to_token_ends():
    # Step 1 is text[:4] = "a=1\n": its last char (index 3, "\n") is in token 2 (2, 4).
    # Step 2 is text[4:8] = "b=2\n": last char index 7 is in token 5 (6, 8).
    assert char_to_token_ends([4, 8], OFFSETS) == [2, 5]
    # A step ending mid-token (last char index 2, the "1") maps to the token containing it: 2.
    assert char_to_token_ends([3], OFFSETS) == [2]
    # Past the end of the text: clamped to the last token.
    assert char_to_token_ends([100], OFFSETS) == [5]
    # An empty step at 0 maps to token 0; no steps -> no ends.
    assert char_to_token_ends([0], OFFSETS) == [0]
    assert char_to_token_ends([], OFFSETS) == []


def test_char_to_token_ends_gaps_and_zero_width_tokens():
    # Char 2 is covered by no token (a stripped space): the last token starting before it, 0.
    assert char_to_token_ends([3], [(0, 2), (3, 5)]) == [0]
    # A zero-width special token (8, 8) at the end contains no character: step end 8 -> token 5.
    assert char_to_token_ends([8], OFFSETS + [(8, 8)]) == [5]
    with pytest.raises(ValueError, match="no completion tokens"):
        char_to_token_ends([3], [])


def test_soft_overlong_penalty_each_branch():
    # Lmax = 20, Lcache = 4, so the ramp starts at 16:
    #   L=10, 16 -> 0 (short enough); L=18 -> (16 - 18) / 4 = -0.5; L=20 -> (16 - 20) / 4 = -1;
    #   L=21 -> -1 (beyond Lmax).
    p = soft_overlong_penalty(torch.tensor([10, 16, 18, 20, 21]), max_len=20, cache_len=4)
    torch.testing.assert_close(p, torch.tensor([0.0, 0.0, -0.5, -1.0, -1.0]))
    # Lcache = 0: no ramp, a hard -1 past Lmax.
    p = soft_overlong_penalty(torch.tensor([20, 21]), max_len=20, cache_len=0)
    torch.testing.assert_close(p, torch.tensor([0.0, -1.0]))
    with pytest.raises(ValueError, match="cache_len"):
        soft_overlong_penalty(torch.tensor([1]), max_len=4, cache_len=5)


def test_every_advantage_kind_reads_one_record():
    # Two groups of 2: rewards [1, 0 | 0.5, 0.5]; correct at threshold 0.5.
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.5])
    scores = GroupRewards(rewards, group_size=2, scale="group", threshold=0.5)
    assert torch.equal(ADVANTAGES["outcome"](scores), outcome_advantages(rewards, 2, "group"))
    assert ADVANTAGES["correct"](scores).tolist() == [1.0, 0.0, 1.0, 1.0]  # RFT: 1 where reward >= 0.5
    assert ADVANTAGES["one"](scores).tolist() == [1.0, 1.0, 1.0, 1.0]  # SFT
    steps = GroupRewards(rewards, 2, step_rewards=[[1.0], [0.0], [1.0], [1.0]], step_ends=[[1], [1], [0], [0]], width=2)
    want = process_advantages(steps.step_rewards, steps.step_ends, 2, 2)
    assert torch.equal(ADVANTAGES["process"](steps), want) and want.shape == (4, 2)  # [N, L]
    assert [name for name, kind in ADVANTAGES.items() if kind.needs_steps] == ["process"]
