"""The update stage (docs/design.md, "Algorithm"): `mu` optimizer steps over a batch, each
accumulating gradients over micro-batches so the result equals one step on the whole batch. The
loss is the run's `LossSpec`, configured once (`update_spec`); the math lives in `algorithms.loss`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from grpo_cli import ranks
from grpo_cli.algorithms.loss import LossSpec, LossStats, rollout_mismatch
from grpo_cli.algorithms.paradigms import ALGORITHMS
from grpo_cli.config import Config
from grpo_cli.models import lora
from grpo_cli.perf import heap
from grpo_cli.perf.logprobs import LogprobPath, logprob_path
from grpo_cli.training import wrapping
from grpo_cli.training.batch import Batch
from grpo_cli.training.batching import plan_micro_batches

STAT_KEYS = ("loss", "nll", "kl", "clip_low", "clip_high", "clip_frac", "ratio_mean")


@dataclass(frozen=True)
class UpdateSpec:
    """Everything the config decides about an update, resolved once per run.

    loss: the loss (and whether it needs a reference). temperature: the sampling temperature the
    log-probs are taken under. on_policy: whether the sampler's log-probs are the old policy's.
    correction: the rollout correction applied (`none` unless the samples come from a separate
    engine, `sampling.separate_engine`).
    """

    loss: LossSpec
    mu: int
    temperature: float
    micro_batch_size: int
    micro_batch_tokens: int
    max_grad_norm: float
    on_policy: bool
    correction: str
    correction_cap: float


def loss_spec(cfg: Config) -> LossSpec:
    """The run's loss from `train.loss` (beta, kl_estimator, eps_low/high, aggregation, importance)."""
    t = cfg.train
    return LossSpec(
        eps_low=t.loss.eps_low,
        eps_high=t.loss.eps_high,
        beta=t.loss.beta,
        kl=t.loss.kl_estimator,
        aggregation=t.loss.aggregation,
        max_len=cfg.sampling.max_new_tokens,
        importance=t.loss.importance,
    )


def update_spec(cfg: Config) -> UpdateSpec:
    t = cfg.train
    on_policy = ALGORITHMS[cfg.algorithm].on_policy
    correct = on_policy and cfg.sampling.separate_engine and t.loss.rollout_correction != "none"
    return UpdateSpec(
        loss=loss_spec(cfg),
        mu=t.run.mu,
        temperature=cfg.sampling.temperature or 1.0,
        micro_batch_size=t.run.micro_batch_size,
        micro_batch_tokens=t.run.micro_batch_tokens,
        max_grad_norm=t.optimizer.max_grad_norm,
        on_policy=on_policy,
        correction=t.loss.rollout_correction if correct else "none",
        correction_cap=t.loss.rollout_correction_cap,
    )


@dataclass
class Pass:
    """One update's fixed inputs: the micro-batches (row indices, padded width; the first `live`
    are real, the rest padding so every rank runs as many), the normalisers of the whole batch, and
    the log-probs taken before the first optimizer step ([N, T] each, or None)."""

    micro: list[tuple[torch.Tensor, int]]
    live: int
    total_tokens: int
    stat_tokens: int
    device: Any
    trim: bool
    ref_logp: torch.Tensor | None
    old_logp: torch.Tensor | None
    sampled_logp: torch.Tensor | None
    measured: bool
    """Whether the mismatch between the trainer's and the sampler's log-probs is measured (the
    old log-probs are the trainer's)."""


def policy_update(
    model: Any,
    ref_model: Any,
    batch: Batch,
    cfg: Config | UpdateSpec,
    optimizer: Any,
    schedule: Any,
    path: LogprobPath | None = None,
    ref_path: LogprobPath | None = None,
) -> dict[str, float]:
    """`mu` optimizer steps over the batch, each accumulating gradients over micro-batches so the
    result equals one step on the whole batch. `path`, `ref_path`: the models' log-prob paths,
    chosen when the session wrapped them (else chosen here)."""
    spec = cfg if isinstance(cfg, UpdateSpec) else update_spec(cfg)
    path = path or logprob_path(model)
    if ref_model is not None:
        ref_path = ref_path or logprob_path(ref_model)
    plan = prepare(model, ref_model, batch, spec, path, ref_path)
    sums = dict.fromkeys(STAT_KEYS, 0.0)
    mismatch = {"mismatch_abs_sum": 0.0, "mismatch_tokens": 0.0, "rollout_weight_sum": 0.0, "ratio_max": 0.0}
    out: dict[str, float] = {}
    skipped = 0
    model.train()
    for epoch in range(spec.mu):
        optimizer.zero_grad(set_to_none=True)
        entropy = accumulate(model, batch, spec, plan, path, epoch, sums, mismatch)
        if epoch == 0:
            out["entropy"] = entropy
        norm = ranks.local(torch.nn.utils.clip_grad_norm_(model.parameters(), spec.max_grad_norm or float("inf")))
        if not torch.isfinite(norm):
            optimizer.zero_grad(set_to_none=True)  # never let a NaN/inf gradient reach the weights
            skipped += 1
            continue
        out.setdefault("grad_norm", float(norm))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)  # free the gradients now: sampling and the reference pass don't need them
        schedule.step()
    return finish_stats(out, sums, mismatch, spec, plan, schedule, skipped)


def prepare(
    model: Any, ref_model: Any, batch: Batch, spec: UpdateSpec, path: LogprobPath, ref_path: LogprobPath | None
) -> Pass:
    """The rows trained on, their micro-batches, and the reference and old log-probs."""
    rows = torch.arange(batch.size)[spec.loss.trained_rows(batch.advantages)]
    total_tokens = int(batch.loss_mask.sum())  # normalisers stay those of the whole batch
    stat_tokens = max(int(batch.loss_mask[rows].sum()), 1)
    rows = rows[ranks.shard(len(rows))]  # under torchrun: this rank's share of the rows
    micro = micro_batches(batch, rows, spec.micro_batch_size, spec.micro_batch_tokens)
    live = len(micro)
    micro += [(mb, 2) for mb in ranks.padding(live)]  # as many forward/backward passes on every rank
    device = next(model.parameters()).device
    trim = heap.worth_trimming(model)
    if trim:
        heap.trim()  # sampling's free pages, before the reference pass
    # The sampler's log-probs of its own samples; a separate engine (vLLM) computes them with other
    # kernels than the trainer, and the rollout correction weights the loss by the ratio of the two.
    sampled_logp = batch.old_logp if spec.on_policy else None
    correct = spec.correction != "none"
    with torch.no_grad():
        ref_logp = None
        if ref_model is not None:
            with lora.adapters_disabled(ref_model):  # LoRA: the reference is the base under the adapter
                ref_logp = logprobs(ref_path, batch, micro, spec.temperature, device)
        # With mu = 1 the ratio is exactly 1 (old = current, detached): no extra forward pass. With
        # mu > 1 the sampling-time log-probs are the old policy's, unless the samples came from
        # elsewhere (RFT's frozen model, SFT's dataset) or from another engine whose numbers the
        # correction compares with the trainer's: then the policy scores them once here.
        old_logp = sampled_logp
        if spec.mu > 1 and (old_logp is None or correct):
            old_logp = logprobs(path, batch, micro, spec.temperature, device)
    measured = sampled_logp is not None and (spec.mu == 1 or correct)
    return Pass(micro, live, total_tokens, stat_tokens, device, trim, ref_logp, old_logp, sampled_logp, measured)


def accumulate(
    model: Any,
    batch: Batch,
    spec: UpdateSpec,
    plan: Pass,
    path: LogprobPath,
    epoch: int,
    sums: dict[str, float],
    mismatch: dict[str, float],
) -> float:
    """Forward and backward over every micro-batch (gradients reduced over ranks on the last); on
    the first epoch, add the token-weighted stats to `sums`. Returns the mean entropy (epoch 0)."""
    entropy_sum = 0.0
    for i, (mb, width) in enumerate(wrapping.accumulate(model, plan.micro)):
        cols = slice(0, width - 1)  # this micro-batch's target positions: its own padding only
        if plan.trim:
            heap.trim()  # the step's peak is this micro-batch's: drop earlier phases' free pages first
        ids, attn, mask = (
            batch.input_ids[mb, :width].to(plan.device),
            batch.attention_mask[mb, :width].to(plan.device),
            batch.loss_mask[mb, cols].to(plan.device),
        )
        mask &= i < plan.live  # a padding micro-batch has no token: zero loss, zero gradient
        logp, entropy = path(ids, attn, mask, spec.temperature, entropy=epoch == 0)  # [n, T]
        old = logp.detach() if spec.mu == 1 else plan.old_logp[mb, cols].to(plan.device)
        advantages = batch.advantages[mb] if batch.advantages.dim() == 1 else batch.advantages[mb, cols]
        weights = _rollout_weights(old, mb, cols, mask, spec, plan, mismatch if epoch == 0 else None)
        ref = plan.ref_logp[mb, cols].to(plan.device) if plan.ref_logp is not None else None
        loss, st = spec.loss(logp, old, advantages.to(plan.device), mask, ref, weights)
        w = spec.loss.micro_batch_weight(mask, batch.size, plan.total_tokens)
        (loss * w * ranks.grad_scale()).backward()
        if epoch == 0:
            tokens_w = float(mask.sum()) / plan.stat_tokens  # token-weighted stats over the rows trained on
            nll = float(-(logp.detach() * mask).sum() / mask.sum().clamp(min=1))  # what SFT minimizes
            _add_stats(sums, float(loss.detach()) * w, st, tokens_w, nll)
            entropy_sum += float(entropy) * tokens_w
    return entropy_sum


def _rollout_weights(
    old: torch.Tensor,
    mb: torch.Tensor,
    cols: slice,
    mask: torch.Tensor,
    spec: UpdateSpec,
    plan: Pass,
    mismatch: dict[str, float] | None,
) -> torch.Tensor | None:
    """The rollout correction's weights (None without one), and the mismatch sums on the first epoch."""
    if not plan.measured:
        return None
    sampled = plan.sampled_logp[mb, cols].to(plan.device)
    weights, mm = rollout_mismatch(old, sampled, mask, spec.correction, spec.correction_cap)
    if mismatch is not None:
        mismatch["mismatch_abs_sum"] += mm.abs_diff_sum
        mismatch["mismatch_tokens"] += mm.tokens
        mismatch["rollout_weight_sum"] += mm.weight_sum
        mismatch["ratio_max"] = max(mismatch["ratio_max"], mm.ratio_max)
    return weights


def _add_stats(sums: dict[str, float], weighted_loss: float, st: LossStats, tokens_w: float, nll: float) -> None:
    sums["loss"] += weighted_loss
    sums["nll"] += nll * tokens_w
    sums["kl"] += float(st.kl) * tokens_w if st.kl is not None else 0.0
    sums["clip_low"] += float(st.clip_low) * tokens_w
    sums["clip_high"] += float(st.clip_high) * tokens_w
    sums["clip_frac"] += float(st.clip_total) * tokens_w
    sums["ratio_mean"] += float(st.ratio_mean) * tokens_w


def finish_stats(
    out: dict[str, float],
    sums: dict[str, float],
    mismatch: dict[str, float],
    spec: UpdateSpec,
    plan: Pass,
    schedule: Any,
    skipped: int,
) -> dict[str, float]:
    """The update's metrics: each rank summed its share, so the sums add over ranks."""
    out.update(ranks.all_sum({**sums, "entropy": out["entropy"]}))
    if plan.measured:
        ratio_max = mismatch.pop("ratio_max")
        mismatch = ranks.all_sum(mismatch)
        if mismatch["mismatch_tokens"]:  # none when every row was skipped
            tokens = mismatch["mismatch_tokens"]
            out["mismatch_logp_abs_mean"] = mismatch["mismatch_abs_sum"] / tokens  # mean |log pi_trainer - log pi_s|
            out["mismatch_ratio_max"] = ranks.all_max(ratio_max)  # largest token ratio pi_trainer / pi_sampler
            if spec.correction != "none":
                out["rollout_weight_mean"] = mismatch["rollout_weight_sum"] / tokens
    out["lr"] = schedule.get_last_lr()[0]
    out["skipped_updates"] = float(skipped)
    if plan.ref_logp is None:
        out.pop("kl")
    return out


def micro_batches(batch: Batch, rows: torch.Tensor, max_rows: int, max_tokens: int) -> list[tuple[torch.Tensor, int]]:
    """(row indices, padded width) of each micro-batch: rows grouped by length (grpo_cli.training.batching)."""
    lengths = batch.attention_mask[rows].sum(dim=1).tolist()  # right-padded: real length per row
    plan = plan_micro_batches(lengths, max_rows, max_tokens)
    return [(rows[mb], max(lengths[i] for i in mb)) for mb in plan]


def logprobs(
    path: LogprobPath, batch: Batch, micro: list[tuple[torch.Tensor, int]], temperature: float, device: Any
) -> torch.Tensor:
    """Log-probs [N, T] of the batch's tokens under the model of `path`, filled in on the rows of `micro`."""
    out = torch.zeros(batch.loss_mask.shape, dtype=torch.float32)
    for mb, width in micro:
        ids, attn, mask = (
            batch.input_ids[mb, :width].to(device),
            batch.attention_mask[mb, :width].to(device),
            batch.loss_mask[mb, : width - 1].to(device),
        )
        out[mb, : width - 1] = path(ids, attn, mask, temperature)[0].cpu()
    return out
