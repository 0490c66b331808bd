"""Sampler/trainer mismatch correction (truncated importance sampling): the weights of each mode,
the logged mismatch, and the weights' place in the loss, with hand-computed numbers."""

from __future__ import annotations

import math

import pytest
import torch

from grpo_cli.algorithms.loss import ROLLOUT_CORRECTIONS, policy_loss, rollout_mismatch
from grpo_cli.config import load_config
from grpo_cli.errors import UserError

# Row 0: log ratios trainer - sampler = [0.5, -1.0, 0.0]: ratios [1.6487, 0.3679, 1], sum -0.5.
# Row 1: [0.9, 0.9] and a padded position: ratios [2.4596, 2.4596], sum 1.8 (ratio 6.0496).
TRAINER = torch.tensor([[-1.0, -2.0, -0.5], [-0.1, -0.1, 0.0]])
SAMPLER = torch.tensor([[-1.5, -1.0, -0.5], [-1.0, -1.0, float("nan")]])  # padding may hold anything
MASK = torch.tensor([[True, True, True], [True, True, False]])
CAP = 1.5
E = math.exp

EXPECTED = {
    # min(ratio, 1.5) per token
    "token_truncate": [[1.5, E(-1.0), 1.0], [1.5, 1.5, 0.0]],
    # ratio where <= 1.5, else 0
    "token_mask": [[0.0, E(-1.0), 1.0], [0.0, 0.0, 0.0]],
    # min(product of the row's ratios, 1.5) at each token: e^-0.5 = 0.6065; 6.05 -> 1.5
    "sequence_truncate": [[E(-0.5)] * 3, [1.5, 1.5, 0.0]],
    # the row's product where <= 1.5, else 0
    "sequence_mask": [[E(-0.5)] * 3, [0.0, 0.0, 0.0]],
}


@pytest.mark.parametrize("mode", list(EXPECTED))
def test_weights_of_each_mode(mode):
    weights, stats = rollout_mismatch(TRAINER, SAMPLER, MASK, mode, CAP)
    torch.testing.assert_close(weights, torch.tensor(EXPECTED[mode]), rtol=1e-5, atol=1e-6)
    # |diff| = 0.5 + 1.0 + 0 + 0.9 + 0.9 = 3.3 over 5 tokens; the largest ratio e^0.9
    assert stats.abs_diff_sum == pytest.approx(3.3, rel=1e-6)
    assert stats.tokens == 5
    assert stats.ratio_max == pytest.approx(E(0.9), rel=1e-6)
    assert stats.weight_sum == pytest.approx(sum(map(sum, EXPECTED[mode])), rel=1e-5)


def test_no_correction_still_measures_the_mismatch():
    weights, stats = rollout_mismatch(TRAINER, SAMPLER, MASK, "none", CAP)
    assert weights is None and stats.weight_sum == 5 and stats.abs_diff_sum == pytest.approx(3.3, rel=1e-6)


def test_every_registered_mode_is_tested():
    assert set(ROLLOUT_CORRECTIONS) == set(EXPECTED)


def test_weights_scale_the_clipped_term_not_the_kl():
    # mu = 1: ratio 1. One sequence, A = 1, weights [0.5, 2.0]: objective [0.5, 2.0], sequence mean
    # 1.25, loss -1.25; d loss / d logp_t = -w_t * A / 2 = [-0.25, -1.0].
    logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    mask = torch.ones(1, 2, dtype=torch.bool)
    w = torch.tensor([[0.5, 2.0]])
    loss, _ = policy_loss(logp, logp.detach(), torch.tensor([1.0]), mask, eps_low=0.2, eps_high=0.2, rollout_weights=w)
    assert float(loss.detach()) == pytest.approx(-1.25)
    loss.backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[-0.25, -1.0]]))
    # the KL term is added unweighted: with ref = logp - 1 per token, k1 = 1 at both tokens, beta 0.1
    ref = logp.detach() - 1.0
    kl_loss, _ = policy_loss(
        logp,
        logp.detach(),
        torch.tensor([1.0]),
        mask,
        eps_low=0.2,
        eps_high=0.2,
        beta=0.1,
        ref_logp=ref,
        kl="k1",
        rollout_weights=w,
    )
    assert float(kl_loss.detach()) == pytest.approx(-1.25 + 0.1)


def test_config_checks_the_mode_and_cap():
    with pytest.raises(UserError, match="train.loss.rollout_correction must be one of none, token_truncate"):
        load_config(None, ["train.loss.rollout_correction=tokens"]).check_training()
    with pytest.raises(UserError, match="rollout_correction_cap"):
        load_config(None, ["train.loss.rollout_correction_cap=0.5"])


def test_the_trainer_corrects_with_the_vllm_backend_only(random_model_dir):
    """A batch whose sampler log-probs sit 0.1 below the trainer's at every token: ratio e^0.1 < cap,
    so token_truncate weights every token by e^0.1 and, with mu = 1 and no KL, the gradient (the SGD
    step at lr 1) is e^0.1 times the uncorrected one. The hf backend logs the same mismatch but
    leaves the loss alone."""
    import copy

    from test_trainer import _batch
    from transformers import AutoModelForCausalLM

    from grpo_cli.perf.logprobs import sequence_logprobs
    from grpo_cli.training.update import policy_update

    base = AutoModelForCausalLM.from_pretrained(str(random_model_dir))
    batch = _batch(random_model_dir)
    with torch.no_grad():
        trainer = sequence_logprobs(base, batch.input_ids, batch.attention_mask, batch.loss_mask)[0]
    batch.old_logp = torch.where(batch.loss_mask, trainer - 0.1, torch.zeros_like(trainer))
    deltas, rows = {}, {}
    for backend in ("hf", "vllm"):
        sets = [
            "train.loss.beta=0",
            "train.optimizer.max_grad_norm=0",
            "sampling.max_new_tokens=8",
            f"sampling.backend={backend}",
        ]
        cfg = load_config(None, sets)
        model = copy.deepcopy(base)
        opt = torch.optim.SGD(model.parameters(), lr=1.0)
        rows[backend] = policy_update(model, None, batch, cfg, opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1))
        deltas[backend] = {k: v - base.state_dict()[k] for k, v in model.state_dict().items()}
    for row in rows.values():
        assert row["mismatch_logp_abs_mean"] == pytest.approx(0.1, abs=1e-5)
        assert row["mismatch_ratio_max"] == pytest.approx(E(0.1), abs=1e-5)
    assert "rollout_weight_mean" not in rows["hf"]
    assert rows["vllm"]["rollout_weight_mean"] == pytest.approx(E(0.1), abs=1e-5)
    for name, delta in deltas["hf"].items():
        torch.testing.assert_close(deltas["vllm"][name], delta * E(0.1), rtol=1e-4, atol=1e-7)
