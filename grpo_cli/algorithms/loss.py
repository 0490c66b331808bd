"""The clipped policy-gradient loss of GRPO and its successors, as pure functions over tensors.

Variants are registries of named functions (`KL_ESTIMATORS`, `AGGREGATIONS`, `IMPORTANCE`):
a new variant is a new registered function beside the old ones. Shapes: N sequences (B*G), T completion
positions, V vocabulary. `mask` is `[N, T]`, true on real completion tokens; values at masked
positions (padding, filtered outputs) never reach the loss, even when they are inf or NaN.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from grpo_cli.algorithms.registry import Registry

__all__ = [
    "AGGREGATIONS",
    "IMPORTANCE",
    "KL_ESTIMATORS",
    "LossSpec",
    "LossStats",
    "MismatchStats",
    "ROLLOUT_CORRECTIONS",
    "rollout_mismatch",
    "micro_batch_weight",
    "policy_loss",
    "selected_logprobs",
    "token_entropy",
]


# --- KL estimators of KL[pi_theta || pi_ref] per token (Schulman's k1, k2, k3) ------------------

KL_ESTIMATORS: Registry[Callable[[Tensor, Tensor], Tensor]] = Registry("KL estimator")
"""Name -> per-token estimator `(logp [N, T], ref_logp [N, T]) -> [N, T]`."""


@KL_ESTIMATORS.register("k1")
def kl_k1(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k1 = logp - ref_logp (unbiased, high variance, can be negative)."""
    return logp - ref_logp


@KL_ESTIMATORS.register("k2")
def kl_k2(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k2 = (logp - ref_logp)^2 / 2 (biased, low variance, >= 0)."""
    return 0.5 * (logp - ref_logp) ** 2


@KL_ESTIMATORS.register("k3")
def kl_k3(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k3 = exp(ref - logp) - (ref - logp) - 1 (unbiased, >= 0; GRPO's choice)."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1


# --- Aggregations: per-token values [N, T] -> scalar ---------------------------------------------


AGGREGATIONS: Registry[Callable[[Tensor, Tensor, int | None], Tensor]] = Registry("loss aggregation")
"""Name -> `(per_token [N, T], mask [N, T], max_len) -> scalar`."""


def _masked(per_token: Tensor, mask: Tensor) -> Tensor:
    return torch.where(mask.bool(), per_token, torch.zeros_like(per_token))  # [N, T]


@AGGREGATIONS.register("sequence")
def aggregate_sequence(per_token: Tensor, mask: Tensor, max_len: int | None = None) -> Tensor:
    """GRPO: mean over each sequence's tokens, then mean over sequences.

    A sequence with no tokens contributes 0 and still counts in the mean over sequences.
    """
    per_seq = _masked(per_token, mask).sum(-1) / mask.sum(-1).clamp(min=1)  # [N]
    return per_seq.mean()


@AGGREGATIONS.register("token")
def aggregate_token(per_token: Tensor, mask: Tensor, max_len: int | None = None) -> Tensor:
    """DAPO: sum over all tokens / total number of tokens (every token weighs the same)."""
    return _masked(per_token, mask).sum() / mask.sum().clamp(min=1)


@AGGREGATIONS.register("constant")
def aggregate_constant(per_token: Tensor, mask: Tensor, max_len: int | None = None) -> Tensor:
    """Dr. GRPO: sum over all tokens / (num_sequences * max_len).

    `max_len` is the maximum completion length (not the padded width of this batch).
    """
    if max_len is None:
        raise ValueError("aggregation 'constant' needs max_len (the max completion length)")
    return _masked(per_token, mask).sum() / (per_token.shape[0] * max_len)


# Each aggregation's micro-batch weight lives on its registry entry (`.micro_batch_weight`): the
# scale of a micro-batch's aggregated loss so that the scaled micro-batch losses sum to the aggregate
# over the whole batch (gradient accumulation equals one big batch). mask: `[n, T]` of the micro-batch.


def _weight_by_sequences(mask: Tensor, total_sequences: int, total_tokens: int) -> float:
    """sequence and constant average over sequences: sequences here / all sequences."""
    return mask.shape[0] / total_sequences


def _weight_by_tokens(mask: Tensor, total_sequences: int, total_tokens: int) -> float:
    """token averages over tokens: tokens here / all tokens."""
    return float(mask.sum()) / max(total_tokens, 1)


aggregate_sequence.micro_batch_weight = _weight_by_sequences  # type: ignore[attr-defined]
aggregate_token.micro_batch_weight = _weight_by_tokens  # type: ignore[attr-defined]
aggregate_constant.micro_batch_weight = _weight_by_sequences  # type: ignore[attr-defined]


def micro_batch_weight(aggregation: str, mask: Tensor, total_sequences: int, total_tokens: int) -> float:
    """The registered aggregation's micro-batch weight (see above)."""
    return AGGREGATIONS[aggregation].micro_batch_weight(mask, total_sequences, total_tokens)  # type: ignore[attr-defined]


# --- Importance ratios: log rho, broadcastable to [N, T] -----------------------------------------

IMPORTANCE: Registry[Callable[[Tensor, Tensor, Tensor], Tensor]] = Registry("importance ratio")
"""Name -> `(logp [N, T], old_logp [N, T], mask [N, T]) -> log ratio [N, T]` (token: GRPO, sequence: GSPO)."""


@IMPORTANCE.register("token")
def log_ratio_token(logp: Tensor, old_logp: Tensor, mask: Tensor) -> Tensor:
    """PPO/GRPO: one ratio per token, `log rho_t = logp_t - old_logp_t`: `[N, T]`."""
    return _masked(logp - old_logp, mask)  # [N, T]


@IMPORTANCE.register("sequence")
def log_ratio_sequence(logp: Tensor, old_logp: Tensor, mask: Tensor) -> Tensor:
    """GSPO: one ratio per sequence, `log s_i = mean over its tokens of (logp - old_logp)`.

    Written as GSPO-token: `log s_{i,t} = sg(log s_i) + logp_t - sg(logp_t)`. Its value is the
    sequence ratio at every token (so clipping is per sequence); its gradient at token t flows
    through `logp_t` only, scaled by `s_i`. With one advantage per sequence this gives exactly the
    gradient of GSPO's sequence ratio; with per-token advantages it is GSPO-token.
    """
    m = mask.bool()
    log_s = _masked(logp - old_logp, m).sum(-1, keepdim=True) / m.sum(-1, keepdim=True).clamp(min=1)
    per_token = log_s.detach() + logp - logp.detach()  # [N, T]
    return _masked(per_token, m)  # [N, T]


# --- Rollout correction: the sampler is not the trainer ------------------------------------------
# An inference engine (vLLM) computes the sampling distribution with other kernels than the trainer,
# so its log-probs, and the tokens it draws, differ slightly from the trainer's policy. Truncated
# importance sampling (Yao et al. 2025; TRL's vllm_importance_sampling_*, verl's rollout_is) weights
# each token's policy-gradient term by w = pi_trainer / pi_sampler, capped at C (truncate) or set to
# 0 above C (mask), per token or with one ratio per sequence (the product of its token ratios).


ROLLOUT_CORRECTIONS: Registry[Callable[[Tensor, Tensor, Tensor, float], Tensor]] = Registry("rollout correction")
"""Name -> `(trainer_logp [N, T], sampler_logp [N, T], mask [N, T], cap) -> weights [N, T]` (inputs detached);
`train.loss.rollout_correction: none` is the absence of one."""


def _log_ratio(trainer_logp: Tensor, sampler_logp: Tensor, mask: Tensor) -> Tensor:
    return _masked(trainer_logp - sampler_logp, mask)  # [N, T]


@ROLLOUT_CORRECTIONS.register("token_truncate")
def correction_token_truncate(trainer_logp: Tensor, sampler_logp: Tensor, mask: Tensor, cap: float) -> Tensor:
    """w_t = min(exp(trainer_t - sampler_t), cap): `[N, T]`."""
    return torch.exp(_log_ratio(trainer_logp, sampler_logp, mask).clamp(max=math.log(cap)))


@ROLLOUT_CORRECTIONS.register("token_mask")
def correction_token_mask(trainer_logp: Tensor, sampler_logp: Tensor, mask: Tensor, cap: float) -> Tensor:
    """w_t = exp(trainer_t - sampler_t) where that is <= cap, else 0: `[N, T]`."""
    log_w = _log_ratio(trainer_logp, sampler_logp, mask)
    return torch.where(log_w <= math.log(cap), torch.exp(log_w.clamp(max=math.log(cap))), torch.zeros_like(log_w))


@ROLLOUT_CORRECTIONS.register("sequence_truncate")
def correction_sequence_truncate(trainer_logp: Tensor, sampler_logp: Tensor, mask: Tensor, cap: float) -> Tensor:
    """w_i = min(prod_t exp(trainer_t - sampler_t), cap) at every token of sequence i: `[N, T]`."""
    log_w = _log_ratio(trainer_logp, sampler_logp, mask).sum(-1, keepdim=True)  # [N, 1]
    return torch.exp(log_w.clamp(max=math.log(cap))).expand_as(trainer_logp)


@ROLLOUT_CORRECTIONS.register("sequence_mask")
def correction_sequence_mask(trainer_logp: Tensor, sampler_logp: Tensor, mask: Tensor, cap: float) -> Tensor:
    """w_i = prod_t exp(trainer_t - sampler_t) where that is <= cap, else 0, at every token of i: `[N, T]`."""
    log_w = _log_ratio(trainer_logp, sampler_logp, mask).sum(-1, keepdim=True)  # [N, 1]
    w = torch.where(log_w <= math.log(cap), torch.exp(log_w.clamp(max=math.log(cap))), torch.zeros_like(log_w))
    return w.expand_as(trainer_logp)


@dataclass(frozen=True)
class MismatchStats:
    """Sums over one micro-batch's masked tokens (so micro-batches and ranks add up), and the largest ratio.

    abs_diff_sum: sum of |trainer_logp - sampler_logp|. tokens: how many tokens.
    ratio_max: the largest token ratio pi_trainer / pi_sampler (0 without tokens).
    weight_sum: sum of the correction weights (tokens, when no correction applies).
    """

    abs_diff_sum: float
    tokens: float
    ratio_max: float
    weight_sum: float


def rollout_mismatch(
    trainer_logp: Tensor, sampler_logp: Tensor, mask: Tensor, correction: str, cap: float
) -> tuple[Tensor | None, MismatchStats]:
    """The correction's weights `[N, T]` (None for `none`) and the mismatch between the trainer's
    and the sampler's log-probs of the sampled tokens. Inputs `[N, T]`, no gradient taken."""
    with torch.no_grad():
        mask = mask.bool()
        diff = _log_ratio(trainer_logp.detach(), sampler_logp, mask)  # [N, T]
        weights = (
            None
            if correction == "none"
            else _masked(ROLLOUT_CORRECTIONS[correction](trainer_logp.detach(), sampler_logp, mask, cap), mask)
        )
        tokens = int(mask.sum())
        stats = MismatchStats(
            abs_diff_sum=float(diff.abs().sum()),
            tokens=float(tokens),
            ratio_max=float(torch.exp(diff[mask].max())) if tokens else 0.0,
            weight_sum=float(weights.sum()) if weights is not None else float(tokens),
        )
    return weights, stats


# --- The loss ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LossStats:
    """Detached scalars about one loss evaluation, all over masked (real) tokens.

    clip_low: fraction of tokens with A < 0 and ratio < 1 - eps_low (clipped, no gradient).
    clip_high: fraction of tokens with A > 0 and ratio > 1 + eps_high (clipped, no gradient).
    clip_total: clip_low + clip_high.
    ratio_mean: mean importance ratio.
    kl: mean per-token KL estimate, or None when no ref_logp was given.
    """

    clip_low: Tensor
    clip_high: Tensor
    clip_total: Tensor
    ratio_mean: Tensor
    kl: Tensor | None


def _masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    return (_masked(x, mask).sum() / mask.sum().clamp(min=1)).detach()


def policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    eps_low: float,
    eps_high: float,
    beta: float = 0.0,
    ref_logp: Tensor | None = None,
    kl: str = "k3",
    aggregation: str = "sequence",
    max_len: int | None = None,
    importance: str = "token",
    rollout_weights: Tensor | None = None,
) -> tuple[Tensor, LossStats]:
    """Clipped surrogate loss (to minimize) and its stats.

    Per token: `min(rho*A, clip(rho, 1-eps_low, 1+eps_high)*A) - beta*KL_t`; the loss is minus its
    aggregate. logp, old_logp, ref_logp, mask: `[N, T]`; advantages: `[N]` (one per output) or
    `[N, T]` (per token, e.g. process supervision). `kl`, `aggregation`, `importance` are keys of
    `KL_ESTIMATORS`, `AGGREGATIONS`, `IMPORTANCE`; `max_len` is needed by "constant" only.
    With `beta > 0`, `ref_logp` is required; with `beta == 0` it is optional (used for stats).
    `rollout_weights` `[N, T]` (from `rollout_mismatch`) scale each token's clipped term, not the KL.
    """
    kl_fn, aggregate, log_ratio = KL_ESTIMATORS[kl], AGGREGATIONS[aggregation], IMPORTANCE[importance]
    if beta != 0.0 and ref_logp is None:
        raise ValueError(f"beta={beta} needs ref_logp (reference log-probs)")
    mask = mask.bool()  # [N, T]
    # Zero the masked positions first, so inf/NaN there cannot leak into values or gradients.
    logp, old_logp = _masked(logp, mask), _masked(old_logp, mask)  # [N, T]
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(-1)  # [N, 1]
    advantages = advantages.expand_as(logp)  # [N, T]

    ratio = torch.exp(log_ratio(logp, old_logp, mask))  # [N, T]
    clipped = torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high)  # [N, T]
    objective = torch.minimum(ratio * advantages, clipped * advantages)  # [N, T]
    if rollout_weights is not None:
        objective = objective * rollout_weights.detach()  # [N, T]

    kl_mean = None
    if ref_logp is not None:
        kl_t = _masked(kl_fn(logp, _masked(ref_logp, mask)), mask)  # [N, T]
        if beta != 0.0:
            objective = objective - beta * kl_t
        kl_mean = _masked_mean(kl_t, mask)

    loss = -aggregate(objective, mask, max_len)

    with torch.no_grad():
        low = (ratio < 1.0 - eps_low) & (advantages < 0) & mask  # [N, T]
        high = (ratio > 1.0 + eps_high) & (advantages > 0) & mask  # [N, T]
        stats = LossStats(
            clip_low=_masked_mean(low.float(), mask),
            clip_high=_masked_mean(high.float(), mask),
            clip_total=_masked_mean((low | high).float(), mask),
            ratio_mean=_masked_mean(ratio, mask),
            kl=kl_mean,
        )
    return loss, stats


@dataclass(frozen=True)
class LossSpec:
    """A run's loss, configured once: the `policy_loss` options (keys of `KL_ESTIMATORS`,
    `AGGREGATIONS`, `IMPORTANCE`; `max_len` for "constant") and what `beta` decides besides the KL
    term: whether a reference model is needed and which rows can be skipped."""

    eps_low: float
    eps_high: float
    beta: float = 0.0
    kl: str = "k3"
    aggregation: str = "sequence"
    max_len: int | None = None
    importance: str = "token"

    @property
    def needs_reference(self) -> bool:
        """A KL term needs reference log-probs; without one none is loaded and no KL is logged."""
        return self.beta > 0

    def trained_rows(self, advantages: Tensor) -> Tensor:
        """Bool `[N]` of the rows whose forward and backward passes can change the gradient.
        advantages: `[N]` or `[N, T]`. Without a KL term a row whose advantage is 0 everywhere
        (a zero-variance group, RFT's wrong samples) adds nothing, so it is skipped."""
        n = advantages.shape[0]
        if self.needs_reference:
            return torch.ones(n, dtype=torch.bool)
        return advantages.reshape(n, -1).ne(0).any(dim=1)  # [N]

    def micro_batch_weight(self, mask: Tensor, total_sequences: int, total_tokens: int) -> float:
        return micro_batch_weight(self.aggregation, mask, total_sequences, total_tokens)

    def __call__(
        self,
        logp: Tensor,
        old_logp: Tensor,
        advantages: Tensor,
        mask: Tensor,
        ref_logp: Tensor | None = None,
        rollout_weights: Tensor | None = None,
    ) -> tuple[Tensor, LossStats]:
        """`policy_loss` with this spec's options."""
        return policy_loss(
            logp,
            old_logp,
            advantages,
            mask,
            eps_low=self.eps_low,
            eps_high=self.eps_high,
            beta=self.beta,
            ref_logp=ref_logp,
            kl=self.kl,
            aggregation=self.aggregation,
            max_len=self.max_len,
            importance=self.importance,
            rollout_weights=rollout_weights,
        )


# --- Log-prob and entropy helpers over logits, in blocks: no whole [N, T, V] log-softmax --------


def _blocks(n: int, t: int, chunk_size: int) -> Iterator[tuple[slice, slice]]:
    """Cover an `[n, t]` grid with row-major blocks of at most `chunk_size` positions each.

    Whole sequences at a time when a sequence fits in a chunk, else pieces of one sequence, so
    `logits[rows, cols]` is always a view (no copy, even of a sliced, non-contiguous tensor).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if chunk_size >= t:
        step = chunk_size // max(t, 1)
        for i in range(0, n, step):
            yield slice(i, i + step), slice(0, t)
    else:
        for i in range(n):
            for j in range(0, t, chunk_size):
                yield slice(i, i + 1), slice(j, j + chunk_size)


def _assemble(pieces: list[Tensor], n: int, t: int, chunk_size: int) -> Tensor:
    """Put the per-block results of `_blocks` back into one `[n, t]` tensor."""
    if chunk_size >= t:
        return torch.cat(pieces, dim=0)  # [n, t]
    per_row = -(-t // chunk_size)
    rows = [torch.cat(pieces[i * per_row : (i + 1) * per_row], dim=1) for i in range(n)]
    return torch.cat(rows, dim=0)  # [n, t]


def selected_logprobs(logits: Tensor, tokens: Tensor, temperature: float = 1.0, chunk_size: int = 4096) -> Tensor:
    """Log-probs of `tokens` under `softmax(logits / temperature)`.

    logits `[N, T, V]` (any strides: a slice like `logits[:, :-1]` is not copied), tokens `[N, T]`
    -> `[N, T]`.

    Computed block by block (at most `chunk_size` positions at a time) as
    `logit[token] - logsumexp(logits)` in float32, so no full `[N, T, V]` log-softmax exists. Under
    no_grad only one block's float32 work exists at a time; under autograd each block's float32
    logits are kept for backward. Gradients flow to `logits`.
    """
    n, t, _ = logits.shape
    if n == 0 or t == 0:
        return logits.new_zeros(n, t, dtype=torch.float32)
    pieces = []
    for rows, cols in _blocks(n, t, chunk_size):
        block = logits[rows, cols].float()  # [n', t', V]
        if temperature != 1.0:
            block = block / temperature
        picked = block.gather(-1, tokens[rows, cols].unsqueeze(-1)).squeeze(-1)  # [n', t']
        pieces.append(picked - torch.logsumexp(block, dim=-1))  # [n', t']
    return _assemble(pieces, n, t, chunk_size)  # [N, T]


@torch.no_grad()
def token_entropy(logits: Tensor, mask: Tensor, chunk_size: int = 4096) -> Tensor:
    """Mean entropy of the next-token distributions over masked positions (a detached scalar).

    logits: `[N, T, V]`, mask: `[N, T]`. For metrics; computed block by block in float32.
    """
    n, t, _ = logits.shape
    if n == 0 or t == 0:
        return torch.zeros((), device=logits.device)
    pieces = []
    for rows, cols in _blocks(n, t, chunk_size):
        p = torch.softmax(logits[rows, cols].float(), dim=-1)  # [n', t', V]
        pieces.append(-torch.xlogy(p, p).sum(-1))  # [n', t']; 0 * log 0 = 0
    entropy = _assemble(pieces, n, t, chunk_size)  # [N, T]
    return _masked_mean(entropy, mask.bool())
