"""The policy loss, worked by hand (torchtune test_ppo_loss.py style)."""

import math

import pytest
import torch

from grpo_cli.algorithms.loss import (
    AGGREGATIONS,
    KL_ESTIMATORS,
    LossSpec,
    policy_loss,
    selected_logprobs,
    token_entropy,
)

LN2 = math.log(2.0)


def test_clipping_on_both_sides_and_the_min():
    # Four one-token sequences, eps_low = 0.2, eps_high = 0.28: clip range [0.8, 1.28].
    #   ratio 1.5, A=+1: min(1.5, 1.28) = 1.28   -> clipped high, no gradient
    #   ratio 0.5, A=-1: min(-0.5, -0.8) = -0.8  -> clipped low, no gradient
    #   ratio 0.5, A=+1: min(0.5, 0.8) = 0.5     -> unclipped side, gradient rho * A = 0.5
    #   ratio 1.5, A=-1: min(-1.5, -1.28) = -1.5 -> unclipped side, gradient rho * A = -1.5
    # Sequence aggregation: mean = (1.28 - 0.8 + 0.5 - 1.5) / 4 = -0.13, loss = 0.13.
    old = torch.zeros(4, 1)
    logp = torch.log(torch.tensor([[1.5], [0.5], [0.5], [1.5]])).requires_grad_()
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0])
    mask = torch.ones(4, 1, dtype=torch.bool)
    loss, stats = policy_loss(logp, old, adv, mask, eps_low=0.2, eps_high=0.28)
    torch.testing.assert_close(loss, torch.tensor(0.13))
    loss.backward()
    # d loss / d logp = -(1/4) * rho * A on unclipped tokens: [0, 0, -0.125, 0.375].
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0], [0.0], [-0.125], [0.375]]))
    torch.testing.assert_close(stats.clip_high, torch.tensor(0.25))
    torch.testing.assert_close(stats.clip_low, torch.tensor(0.25))
    torch.testing.assert_close(stats.clip_total, torch.tensor(0.5))
    # Mean ratio (1.5 + 0.5 + 0.5 + 1.5) / 4 = 1.
    torch.testing.assert_close(stats.ratio_mean, torch.tensor(1.0))
    assert stats.kl is None


def test_on_policy_ratio_is_one_and_gradient_is_advantage():
    # mu = 1: logp == old_logp, ratio [1, 1, 1] (never clipped), objective = A at every token.
    # Two sequences of 3 tokens, A = [2, -1]: sequence mean = (2 - 1) / 2 = 0.5, loss = -0.5;
    # d loss / d logp = -A / (2 sequences * 3 tokens) = [-1/3, ...], [1/6, ...].
    logp = torch.randn(2, 3)
    new = logp.clone().requires_grad_()
    loss, stats = policy_loss(new, logp, torch.tensor([2.0, -1.0]), torch.ones(2, 3), eps_low=0.2, eps_high=0.2)
    torch.testing.assert_close(loss, torch.tensor(-0.5))
    loss.backward()
    torch.testing.assert_close(new.grad, torch.tensor([[-1 / 3] * 3, [1 / 6] * 3]))
    assert stats.clip_total == 0.0


def test_kl_estimators():
    # ref - logp = ln 2: k1 = logp - ref = -ln 2 = -0.6931; k2 = (ln 2)^2 / 2 = 0.2402;
    #                    k3 = e^(ln 2) - ln 2 - 1 = 2 - 0.6931 - 1 = 0.3069.
    # ref - logp = -1:   k1 = 1; k2 = 0.5; k3 = e^-1 + 1 - 1 = 0.3679.
    # ref == logp:       all 0.
    logp = torch.tensor([0.0, 0.0, -1.0])
    ref = torch.tensor([LN2, -1.0, -1.0])
    torch.testing.assert_close(KL_ESTIMATORS["k1"](logp, ref), torch.tensor([-LN2, 1.0, 0.0]))
    torch.testing.assert_close(KL_ESTIMATORS["k2"](logp, ref), torch.tensor([LN2**2 / 2, 0.5, 0.0]))
    torch.testing.assert_close(KL_ESTIMATORS["k3"](logp, ref), torch.tensor([1 - LN2, math.exp(-1), 0.0]))


def test_kl_penalty_in_the_loss():
    # ratio 1, A = 0, ref - logp = ln 2 everywhere: objective = -beta * k3 = -0.1 * 0.3069,
    # loss = +0.03069; stats.kl = 0.3069.
    logp = torch.zeros(2, 3)
    ref = torch.full((2, 3), LN2)
    mask = torch.ones(2, 3)
    loss, stats = policy_loss(logp, logp, torch.zeros(2), mask, eps_low=0.2, eps_high=0.2, beta=0.1, ref_logp=ref)
    torch.testing.assert_close(loss, torch.tensor(0.1 * (1 - LN2)))
    torch.testing.assert_close(stats.kl, torch.tensor(1 - LN2))
    # k1 instead: KL = -ln 2, loss = 0.1 * -0.6931.
    loss, _ = policy_loss(logp, logp, torch.zeros(2), mask, eps_low=0.2, eps_high=0.2, beta=0.1, ref_logp=ref, kl="k1")
    torch.testing.assert_close(loss, torch.tensor(-0.1 * LN2))
    # beta = 0 needs no reference; beta > 0 does.
    policy_loss(logp, logp, torch.zeros(2), mask, eps_low=0.2, eps_high=0.2)
    with pytest.raises(ValueError, match="needs ref_logp"):
        policy_loss(logp, logp, torch.zeros(2), mask, eps_low=0.2, eps_high=0.2, beta=0.1)


# Two sequences of unequal length; padding holds 100 to show it never counts.
#   seq 1: 2 tokens [1, 3]          (mean 2, sum 4)
#   seq 2: 4 tokens [2, 2, 2, 6]    (mean 3, sum 12)
PER_TOKEN = torch.tensor([[1.0, 3.0, 100.0, 100.0], [2.0, 2.0, 2.0, 6.0]])
MASK = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])


def test_aggregations_differ_with_unequal_lengths():
    # sequence (GRPO):     (2 + 3) / 2 = 2.5         each sequence weighs 1/2
    # token (DAPO):        (4 + 12) / 6 = 2.6667     the longer sequence weighs 4/6
    # constant (Dr. GRPO): (4 + 12) / (2 * 8) = 1.0  fixed denominator, max_len = 8
    torch.testing.assert_close(AGGREGATIONS["sequence"](PER_TOKEN, MASK, None), torch.tensor(2.5))
    torch.testing.assert_close(AGGREGATIONS["token"](PER_TOKEN, MASK, None), torch.tensor(16 / 6))
    torch.testing.assert_close(AGGREGATIONS["constant"](PER_TOKEN, MASK, 8), torch.tensor(1.0))


@pytest.mark.parametrize(("aggregation", "expected"), [("sequence", -2.5), ("token", -16 / 6), ("constant", -1.0)])
def test_policy_loss_aggregation(aggregation, expected):
    # On-policy (ratio 1) with per-token advantages equal to PER_TOKEN: objective = PER_TOKEN,
    # so the loss is minus the aggregates above.
    logp = torch.zeros(2, 4)
    loss, _ = policy_loss(logp, logp, PER_TOKEN, MASK, eps_low=0.2, eps_high=0.2, aggregation=aggregation, max_len=8)
    torch.testing.assert_close(loss, torch.tensor(expected))


def test_constant_aggregation_needs_max_len_and_names_are_checked():
    logp = torch.zeros(2, 4)
    with pytest.raises(ValueError, match="max_len"):
        policy_loss(logp, logp, PER_TOKEN, MASK, eps_low=0.2, eps_high=0.2, aggregation="constant")
    for option in ({"kl": "k4"}, {"aggregation": "tokens"}, {"importance": "seq"}):
        with pytest.raises(ValueError, match="unknown"):
            policy_loss(logp, logp, PER_TOKEN, MASK, eps_low=0.2, eps_high=0.2, **option)


def test_gspo_sequence_ratio_and_clipping():
    # GSPO's clip range is small: eps_low = 3e-4, eps_high = 4e-4 -> [0.9997, 1.0004].
    # seq 1, A=+1: logp - old = [ln 2, 0], s = exp((ln 2 + 0) / 2) = sqrt(2) = 1.4142 at both
    #   tokens -> clipped to 1.0004: objective [1.0004, 1.0004], no gradient.
    # seq 2, A=-1: logp - old = [ln 2, -ln 2], s = exp(0) = 1 (though its token ratios are 2 and
    #   0.5) -> unclipped, objective [-1, -1].
    # Sequence aggregation: (1.0004 - 1) / 2 = 0.0002, loss = -0.0002.
    old = torch.zeros(2, 2)
    logp = torch.tensor([[LN2, 0.0], [LN2, -LN2]], requires_grad=True)
    adv = torch.tensor([1.0, -1.0])
    mask = torch.ones(2, 2)
    loss, stats = policy_loss(logp, old, adv, mask, eps_low=3e-4, eps_high=4e-4, importance="sequence")
    torch.testing.assert_close(loss, torch.tensor(-0.0002))
    loss.backward()
    # seq 2: d s / d logp_t = s / |o| = 1/2; d loss / d logp_t = -(1/2 seqs) * (-1) * (1/2) = 0.25.
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0, 0.0], [0.25, 0.25]]))
    # Two of four tokens (all of seq 1) clipped high; mean ratio (2 * 1.4142 + 2 * 1) / 4 = 1.2071.
    torch.testing.assert_close(stats.clip_high, torch.tensor(0.5))
    torch.testing.assert_close(stats.ratio_mean, torch.tensor((math.sqrt(2) + 1) / 2))

    # Token-level ratios on the same numbers with eps 0.2 clip differently: seq 1 ratios [2, 1]
    # -> [1.2, 1]; seq 2 ratios [2, 0.5], A=-1 -> min(-2, -1.2) = -2 and min(-0.5, -0.8) = -0.8.
    # (1.2 + 1) / 2 = 1.1; (-2 - 0.8) / 2 = -1.4; loss = -(1.1 - 1.4) / 2 = 0.15.
    loss, _ = policy_loss(logp, old, adv, mask, eps_low=0.2, eps_high=0.2)
    torch.testing.assert_close(loss, torch.tensor(0.15))


@pytest.mark.parametrize("aggregation", ["sequence", "token"])
def test_gspo_token_gradient_equals_sequence_ratio_gradient(aggregation):
    # With one advantage per sequence, the GSPO-token form has the gradient of the plain
    # sequence ratio s_i = exp(mean_t(logp - old)) (unclipped here: wide eps).
    torch.manual_seed(0)
    old = torch.randn(3, 5)
    logp = (old + 0.1 * torch.randn(3, 5)).requires_grad_()
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0]]).bool()
    adv = torch.tensor([1.0, -0.5, 2.0])
    loss, _ = policy_loss(
        logp,
        old,
        adv,
        mask,
        eps_low=10.0,
        eps_high=10.0,
        aggregation=aggregation,
        importance="sequence",
    )
    (grad,) = torch.autograd.grad(loss, logp)

    s = torch.exp(((logp - old) * mask).sum(-1) / mask.sum(-1))  # [N]
    per_token = (s * adv).unsqueeze(-1).expand(3, 5)
    reference = -AGGREGATIONS[aggregation](per_token, mask, None)
    (expected,) = torch.autograd.grad(reference, logp)
    torch.testing.assert_close(grad, expected)
    assert (grad[~mask] == 0).all()


def test_padding_with_inf_never_leaks():
    # Masked positions hold -inf / NaN; loss and gradients stay finite, padding gets 0 gradient.
    logp = torch.tensor([[-1.0, float("-inf")], [-0.5, -0.7]], requires_grad=True)
    old = torch.tensor([[-1.2, 0.0], [-0.4, float("nan")]])
    ref = torch.tensor([[-1.1, float("nan")], [-0.5, 0.0]])
    mask = torch.tensor([[1, 0], [1, 0]])
    for importance in ("token", "sequence"):
        loss, stats = policy_loss(
            logp,
            old,
            torch.tensor([1.0, -1.0]),
            mask,
            eps_low=0.2,
            eps_high=0.2,
            beta=0.1,
            ref_logp=ref,
            importance=importance,
        )
        (grad,) = torch.autograd.grad(loss, logp)
        assert torch.isfinite(loss) and torch.isfinite(stats.kl) and torch.isfinite(grad).all()
        assert grad[0, 1] == 0 and grad[1, 1] == 0


@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("chunk_size", [1, 3, 7, 4096])
def test_selected_logprobs_matches_log_softmax(temperature, chunk_size):
    # chunk 1 and 3 are smaller than a sequence (T = 5): pieces of one sequence at a time;
    # chunk 7 holds one whole sequence; 4096 holds everything.
    torch.manual_seed(0)
    logits = torch.randn(3, 6, 11, requires_grad=True)
    view = logits[:, :-1]  # [3, 5, 11], a non-contiguous slice, as a causal LM's logits are used
    tokens = torch.randint(0, 11, (3, 5))
    expected = torch.log_softmax(view / temperature, -1).gather(-1, tokens[..., None])[..., 0]
    got = selected_logprobs(view, tokens, temperature=temperature, chunk_size=chunk_size)
    torch.testing.assert_close(got, expected)
    (grad,) = torch.autograd.grad(got.sum(), logits)
    (expected_grad,) = torch.autograd.grad(expected.sum(), logits)
    torch.testing.assert_close(grad, expected_grad)


def test_token_entropy():
    # Position 0, uniform over 4 tokens: ln 4 = 1.3863. Position 1, two equal logits and two -inf:
    # ln 2 = 0.6931 (0 * log 0 counts as 0, not NaN). Position 2 is masked and does not count.
    # Mean over the unmasked positions: (1.3863 + 0.6931) / 2 = 1.0397.
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, float("-inf"), float("-inf")], [5.0, 0.0, 0.0, 0.0]]])
    mask = torch.tensor([[1, 1, 0]])
    for chunk_size in (1, 4096):
        got = token_entropy(logits, mask, chunk_size=chunk_size)
        torch.testing.assert_close(got, torch.tensor((math.log(4) + LN2) / 2))


def test_loss_spec_decides_reference_and_skipped_rows_from_beta():
    # Rows: advantage 0 everywhere (a zero-variance group), +1, a process row with one non-zero token.
    advantages = torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.0, -0.5]])  # [N=3, T=2]
    no_kl = LossSpec(eps_low=0.2, eps_high=0.2, beta=0.0)
    assert not no_kl.needs_reference
    assert no_kl.trained_rows(advantages).tolist() == [False, True, True]  # row 0 adds nothing: skipped
    assert no_kl.trained_rows(torch.tensor([0.0, 2.0])).tolist() == [False, True]  # [N] advantages too
    with_kl = LossSpec(eps_low=0.2, eps_high=0.2, beta=0.04)
    assert with_kl.needs_reference
    assert with_kl.trained_rows(advantages).tolist() == [True, True, True]  # the KL term trains every row


def test_loss_spec_is_policy_loss_with_its_options():
    g = torch.Generator().manual_seed(0)
    logp, old, ref = (torch.randn(3, 4, generator=g) * 0.1 for _ in range(3))
    advantages, mask = torch.tensor([1.0, -1.0, 0.5]), torch.ones(3, 4, dtype=torch.bool)
    options = dict(eps_low=0.2, eps_high=0.28, beta=0.04, kl="k2", aggregation="constant", max_len=6)
    spec = LossSpec(**options, importance="sequence")
    loss, stats = spec(logp, old, advantages, mask, ref)
    want, want_stats = policy_loss(logp, old, advantages, mask, ref_logp=ref, importance="sequence", **options)
    assert torch.equal(loss, want) and torch.equal(stats.kl, want_stats.kl)


def test_micro_batch_weight_lives_on_each_aggregation():
    # A micro-batch of 2 of the batch's 8 sequences holding 3 of its 12 tokens.
    mask = torch.tensor([[True, True, False], [True, False, False]])
    weights = {name: AGGREGATIONS[name].micro_batch_weight(mask, 8, 12) for name in AGGREGATIONS}
    assert weights == {"sequence": 2 / 8, "token": 3 / 12, "constant": 2 / 8}
    assert LossSpec(eps_low=0.2, eps_high=0.2, aggregation="token").micro_batch_weight(mask, 8, 12) == 3 / 12
