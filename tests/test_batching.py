"""Micro-batch planning by token budget: hand-checked plans, and the update it gives equals one big
batch on right-padded sequences of unequal lengths."""

from __future__ import annotations

import copy

import pytest
import torch

from grpo_cli.config import load_config
from grpo_cli.errors import UserError
from grpo_cli.training.batch import Batch
from grpo_cli.training.batching import padded_tokens, plan_micro_batches
from grpo_cli.training.update import policy_update


def test_rows_only_sorts_longest_first_and_caps_rows():
    lengths = [5, 9, 3, 9, 7]
    plan = plan_micro_batches(lengths, max_rows=2)
    assert plan == [[1, 3], [4, 0], [2]]  # 9, 9 | 7, 5 | 3 (ties keep input order)
    assert padded_tokens(lengths, plan) == 2 * 9 + 2 * 7 + 3


def test_token_budget_packs_short_sequences_densely():
    lengths = [10, 2, 2, 10, 2, 2, 2]
    plan = plan_micro_batches(lengths, max_rows=100, max_tokens=20)
    # 10+10 fill the budget (2 x 10 = 20); the five 2s fit in one (5 x 2 = 10 <= 20).
    assert plan == [[0, 3], [1, 2, 4, 5, 6]]
    assert padded_tokens(lengths, plan) == 20 + 10
    # The same sequences in fixed blocks of 2 in input order would pad to 20 + 20 + 4 + 2 = 46 positions.


def test_sequence_longer_than_the_budget_gets_its_own_micro_batch():
    assert plan_micro_batches([50, 4, 4], max_rows=8, max_tokens=16) == [[0], [1, 2]]


def test_every_position_is_planned_exactly_once():
    lengths = [(i * 37) % 23 + 1 for i in range(101)]
    plan = plan_micro_batches(lengths, max_rows=7, max_tokens=60)
    assert sorted(i for mb in plan for i in mb) == list(range(101))
    for mb in plan:
        assert len(mb) <= 7
        assert len(mb) == 1 or len(mb) * max(lengths[i] for i in mb) <= 60


def test_bad_limits_raise():
    with pytest.raises(ValueError):
        plan_micro_batches([3], max_rows=0)
    with pytest.raises(ValueError):
        plan_micro_batches([3], max_rows=1, max_tokens=-1)
    with pytest.raises(UserError, match="train.run.micro_batch_tokens"):
        load_config(None, ["train.run.micro_batch_tokens=-5"])


def _padded_batch() -> Batch:
    """6 right-padded sequences of lengths 4..12 (prompt 3 tokens), random advantages and old log-probs."""
    g = torch.Generator().manual_seed(1)
    lengths = [12, 4, 9, 6, 12, 5]
    width = max(lengths)
    ids = torch.zeros(6, width, dtype=torch.long)
    attn = torch.zeros(6, width, dtype=torch.long)
    loss_mask = torch.zeros(6, width - 1, dtype=torch.bool)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(3, 200, (n,), generator=g)
        attn[i, :n] = 1
        loss_mask[i, 2 : n - 1] = True  # targets after the 3-token prompt
    old = torch.where(loss_mask, -torch.rand(6, width - 1, generator=g), torch.zeros(()))
    return Batch(ids, attn, loss_mask, old, torch.randn(6, generator=g))


@pytest.mark.parametrize("aggregation", ["sequence", "token"])
@pytest.mark.parametrize("mu", [1, 2])
def test_token_budget_update_equals_one_big_batch(random_model_dir, aggregation, mu):
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(random_model_dir))
    ref = copy.deepcopy(base).requires_grad_(False)
    results = []
    # One pass over the whole padded batch, then passes of at most 24 positions, cut to their own width.
    for sets in (["train.run.micro_batch_size=6"], ["train.run.micro_batch_size=6", "train.run.micro_batch_tokens=24"]):
        cfg = load_config(
            None,
            [
                *sets,
                f"train.loss.aggregation={aggregation}",
                f"train.run.mu={mu}",
                "train.loss.beta=0.1",
                "train.optimizer.max_grad_norm=0",
                "sampling.max_new_tokens=12",
            ],
        )
        model = copy.deepcopy(base)
        opt = torch.optim.SGD(model.parameters(), lr=1.0)  # the weight change is minus the gradient
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1.0)
        stats = policy_update(model, ref, _padded_batch(), cfg, opt, sched)
        results.append((model.state_dict(), stats))
    (big, big_stats), (small, small_stats) = results
    assert any(not torch.equal(big[k], base.state_dict()[k]) for k in big)  # the update did something
    for name in big:
        torch.testing.assert_close(big[name], small[name], rtol=1e-5, atol=1e-6)
    for key in ("loss", "kl", "entropy", "clip_frac"):
        assert big_stats[key] == pytest.approx(small_stats[key], rel=1e-5, abs=1e-7)
