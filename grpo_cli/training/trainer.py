"""The GRPO loop (docs/design.md, "Algorithm"), read top to bottom in `train`:

for each step: collect a batch (sample G per prompt, score, DAPO dynamic sampling), compute
advantages (or the gradient coefficients of RFT / SFT), run `mu` policy updates over the batch in
micro-batches with gradient accumulation, log a metrics row, checkpoint. Each stage is a function
below; the math lives in `advantages` and `loss`.
"""

from __future__ import annotations

import copy
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from grpo_cli import ranks
from grpo_cli.algorithms import advantages as adv
from grpo_cli.algorithms.loss import micro_batch_weight, policy_loss, rollout_mismatch
from grpo_cli.algorithms.paradigms import ALGORITHMS
from grpo_cli.algorithms.schedules import lr_multiplier
from grpo_cli.config import Config, dump_config
from grpo_cli.errors import UserError
from grpo_cli.models import lora
from grpo_cli.models.loading import enable_activation_checkpointing, model_reference
from grpo_cli.perf import heap
from grpo_cli.perf.logprobs import sequence_logprobs
from grpo_cli.pipeline.sample import (
    Policy,
    load_policy,
    make_sampler,
    problems_from,
    render_prompts,
    sampling_params,
    to_records,
)
from grpo_cli.pipeline.scoring import ScoreSummary, opened_verifiers, score
from grpo_cli.records import Problem, ScoredSample
from grpo_cli.report import Reporter
from grpo_cli.sampling.base import Completion, Sampler
from grpo_cli.training import optim, rollouts, wrapping
from grpo_cli.training.checkpoint import (
    TrainerState,
    latest_checkpoint,
    load_state,
    remove_stale_temp,
    save_checkpoint,
)
from grpo_cli.training.iterative import end_of_step, observe, reward_verifiers, start_reward_model
from grpo_cli.training.tracking import Trackers

TIMING_KEYS = ("step_time", "sampling_time", "scoring_time", "update_time", "tokens_per_s")
"""Metrics that measure wall time: everything else in metrics.jsonl is reproducible for a seed."""


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


class DataOrder:
    """Prompts in a seeded random order, epoch after epoch; its state is two integers."""

    def __init__(self, size: int, seed: int, epoch: int = 0, cursor: int = 0) -> None:
        self.size, self.seed, self.epoch, self.cursor = size, seed, epoch, cursor
        self._perm = self._permutation()

    def _permutation(self) -> list[int]:
        perm = list(range(self.size))
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


@dataclass
class TrainResult:
    run_dir: Path
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    last_checkpoint: Path | None
    steps_done: int


# ----------------------------------------------------------------------------------------- the loop


def train(cfg: Config, report: Reporter, *, resume: bool = False) -> TrainResult:
    """Run (or resume) training; a run that fails or is interrupted before its first step leaves no
    run folder behind (only when this call created it)."""
    run_dir = Path(cfg.train.out_dir)
    fresh = not run_dir.exists()
    try:
        return _train(cfg, report, resume=resume)
    except BaseException:
        if fresh and ranks.is_main():
            _remove_unstarted_run(run_dir)
        raise


def _train(cfg: Config, report: Reporter, *, resume: bool) -> TrainResult:
    cfg.check_training()
    t = cfg.train
    run_dir = Path(t.out_dir)
    stale = remove_stale_temp(run_dir) if ranks.is_main() else []  # checkpoint writes killed midway
    for path in stale:
        report.log(f"removed {path}: an incomplete checkpoint of a run that was killed while saving it")
    start_ckpt = latest_checkpoint(run_dir) if resume else None
    if resume and start_ckpt is None:
        incomplete = f" (only an incomplete one, now removed: {stale[-1].name})" if stale else ""
        raise UserError(
            f"--resume: no complete checkpoint in {run_dir / 'checkpoints'}{incomplete}; "
            "start the run again without --resume"
        )
    if not resume and latest_checkpoint(run_dir) is not None:
        raise UserError(f"{run_dir} already holds checkpoints; pass --resume to continue it or choose another --out")

    owns_group = ranks.setup(cfg.model.device)  # under torchrun: join the ranks
    if not ranks.is_main():
        report = Reporter()  # rank 0 speaks for all
    torch.manual_seed(cfg.seed)
    state = load_state(start_ckpt) if start_ckpt is not None else None
    if t.lora.rank:  # the base model, then a fresh adapter or the checkpoint's
        policy = load_policy(cfg, state.initial_model if state else None, trainable=True)
        lora.attach(policy.model, t.lora, model_reference(policy.model_dir), adapter_dir=start_ckpt)
        if start_ckpt is not None:
            policy.sampler.sync_weights(policy.model)  # an engine with its own copy started from the base
    else:
        if start_ckpt is not None and lora.is_adapter_dir(start_ckpt):
            raise UserError(f"--resume: {start_ckpt} holds a LoRA adapter; resume with the run's train.lora settings")
        policy = load_policy(cfg, str(start_ckpt) if start_ckpt else None, trainable=True)
    ranks.split_threads(cfg.model.threads)
    if t.gradient_checkpointing:  # recompute activations in backward: less memory, ~1/3 more compute
        enable_activation_checkpointing(policy.model)
    model = wrapping.wrap(policy.model, t.parallel)  # DDP / FSDP2 under torchrun, else the model
    paradigm = ALGORITHMS[cfg.algorithm]
    problems = problems_from(cfg.data.train, cfg.data, need_answer=paradigm.samples)
    if not paradigm.samples:  # SFT reads solutions
        _check_solutions(problems, cfg)
    initial_model = state.initial_model if state and state.initial_model else str(policy.model_dir)
    ref_source = start_ckpt / "ref" if start_ckpt is not None and (start_ckpt / "ref").is_dir() else initial_model
    ref_model = None
    if t.beta > 0:  # with LoRA the policy itself, its adapters off during the reference pass: no second copy
        ref_model = policy.model if t.lora.rank else _load_frozen(cfg, ref_source)
    rft_sampler = _rft_sampler(cfg, policy, initial_model) if paradigm.source == "initial_model" else None
    total = t.steps * t.mu
    optimizer, schedule = optim.build(
        model,
        t.lr,
        tuple(t.adam_betas),
        t.weight_decay,
        lambda i: lr_multiplier(i, t.warmup_steps, total, t.lr_schedule),
    )
    order = DataOrder(len(problems), cfg.seed)
    start_step, before = 0, None
    if state is not None:
        wrapping.load_optimizer_state(model, optimizer, state.optimizer)
        schedule.load_state_dict(state.schedule)
        order = DataOrder(len(problems), cfg.seed, **state.data_order)  # the same on every rank
        torch.set_rng_state(state.rng_for(ranks.rank()))
        start_step, before = state.step, state.before
        report.log(f"resuming from {start_ckpt} at step {start_step}")
    metrics_path = run_dir / "metrics.jsonl"  # appended to by record_step
    if ranks.is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(dump_config(cfg), encoding="utf-8")
        _truncate_metrics(metrics_path, start_step)

    reward_model = start_reward_model(cfg, run_dir, start_ckpt, state, policy, report)  # None: the verifiers reward
    eval_problems = _eval_problems(cfg) if t.eval_n else None
    if eval_problems is not None and before is None:
        before = _evaluate_on_main(policy, eval_problems, cfg, report, "before")

    last_ckpt = start_ckpt
    trackers = Trackers(cfg, run_dir, report) if ranks.is_main() else None
    if trackers is not None:
        trackers.log_eval(before, 0)
    with (
        opened_verifiers(reward_verifiers(cfg, reward_model)) as verifiers,
        report.progress("training", total=t.steps) as advance,
    ):
        advance(start_step)
        for step in range(start_step, t.steps):
            t0 = time.perf_counter()
            batch = collect_batch(step, cfg, policy, rft_sampler, problems, order, verifiers)
            t1 = time.perf_counter()
            update = (
                policy_update(model, ref_model, batch, cfg, optimizer, schedule) if batch.size else {"skipped": 1.0}
            )
            if batch.size:
                policy.sampler.sync_weights(
                    policy.model
                )  # a backend with its own copy (vLLM) reloads them; unwrapped: no DDP `module.` prefix
            t2 = time.perf_counter()
            if t.ref_sync_every and ref_model is not None and (step + 1) % t.ref_sync_every == 0:
                ref_model.load_state_dict(
                    wrapping.full_state_dict(policy.model)
                )  # iterative RL: the reference catches up
            observe(reward_model, batch.records)
            rm_row = end_of_step(reward_model, step, verifiers, policy, report)  # Algorithm 1: retrain the RM
            row = {"step": step + 1, **batch.stats, **update, **rm_row, "update_time": t2 - t1, "step_time": t2 - t0}
            row["tokens_per_s"] = batch.stats.get("sampled_tokens", 0) / max(t2 - t0, 1e-9)
            row.update(_periodic_eval(policy, eval_problems, cfg, step + 1))
            if ranks.is_main():
                record_step(run_dir, row, batch, cfg, trackers)
            _warn_about(row, step + 1, report)
            advance(1, status=step_status(row))
            _print_sign_of_life(row, t, report)
            if (t.save_every and (step + 1) % t.save_every == 0) or step + 1 == t.steps:
                saved = TrainerState(
                    step=step + 1,
                    optimizer=wrapping.optimizer_state(model, optimizer),
                    schedule=schedule.state_dict(),
                    data_order=order.state(),
                    torch_rng=torch.get_rng_state(),
                    torch_rng_ranks=ranks.rng_states(),
                    before=before,
                    initial_model=initial_model,
                    extra={"reward_model": reward_model.state()} if reward_model is not None else {},
                )
                synced = ref_model if (t.ref_sync_every and step + 1 >= t.ref_sync_every) else None
                # the adapter alone (LoRA), or the whole weights (FSDP: gathered by all ranks)
                savable = lora.AdapterSavable(policy.model) if t.lora.rank else wrapping.Savable(policy.model)
                if ranks.is_main():
                    last_ckpt = (
                        _checkpoint(
                            run_dir,
                            step + 1,
                            savable,
                            policy.tokenizer,
                            cfg,
                            saved,
                            synced,
                            reward_model if reward_model is not None and reward_model.model is not None else None,
                            final=step + 1 == t.steps,
                            report=report,
                        )
                        or last_ckpt
                    )
                last_ckpt = ranks.broadcast(last_ckpt)  # the other ranks wait for the checkpoint

    after = _evaluate_on_main(policy, eval_problems, cfg, report, "after") if eval_problems is not None else None
    if before is not None and after is not None and ranks.is_main():
        (run_dir / "eval.json").write_text(json.dumps({"before": before, "after": after}, indent=2), encoding="utf-8")
    if trackers is not None:
        trackers.log_eval(after, t.steps)
        trackers.close()
        plot_run(run_dir, cfg, before, after, report)
    if owns_group:
        ranks.teardown()
    return TrainResult(run_dir, before, after, last_ckpt, t.steps - start_step)


# ------------------------------------------------------------------------------------- the stages


def collect_batch(
    step: int,
    cfg: Config,
    policy: Policy,
    rft_sampler: Sampler | None,
    problems: list[Problem],
    order: DataOrder,
    verifiers: list[Any],
) -> Batch:
    """Sample and score whole groups until the batch is full (one round unless dynamic sampling
    drops zero-variance groups), then build the training tensors and advantages."""
    t = cfg.train
    paradigm = ALGORITHMS[cfg.algorithm]
    G = cfg.sampling.n if paradigm.samples else 1
    wanted = t.batch_size // cfg.sampling.n  # prompts per step
    if not paradigm.samples:
        chosen = [problems[i] for i in order.take(wanted)]
        return _sft_batch(chosen, cfg, policy.tokenizer)

    sampler = rft_sampler or policy.sampler
    kept: list[tuple[Problem, list[Completion], list[ScoredSample]]] = []
    stats = {
        "sampling_rounds": 0.0,
        "groups_dropped": 0.0,
        "prompts_sampled": 0.0,
        "sampling_time": 0.0,
        "scoring_time": 0.0,
    }
    all_scored: list[ScoredSample] = []
    summaries: list[ScoreSummary] = []
    for rnd in range(t.max_sampling_rounds if t.dynamic_sampling else 1):
        chosen = [problems[i] for i in order.take(wanted if rnd == 0 else wanted - len(kept))]
        t0 = time.perf_counter()
        mine = ranks.shard(len(chosen))  # under torchrun each rank samples and scores a share of the groups
        prompts = render_prompts(chosen[mine], policy.tokenizer, cfg.data)
        params = sampling_params(cfg, seed=_step_seed(cfg.seed, step, rnd), prompt_offset=mine.start)
        with wrapping.full_weights(policy.model):
            completions = sampler.generate(prompts, params)
        t1 = time.perf_counter()
        scored, summary = score(to_records(chosen[mine], completions, logprobs=False), verifiers)
        completions, scored, round_summaries = ranks.gather(
            completions, scored, [summary]
        )  # the whole round, on every rank
        stats["sampling_time"] += t1 - t0
        stats["scoring_time"] += time.perf_counter() - t1
        stats["sampling_rounds"] += 1
        stats["prompts_sampled"] += len(chosen)
        summaries += round_summaries
        all_scored += scored
        for g, (problem, comps) in enumerate(zip(chosen, completions)):
            group = scored[g * G : (g + 1) * G]
            rewards = [r["reward"] for r in group]
            if t.dynamic_sampling and max(rewards) == min(rewards):
                stats["groups_dropped"] += 1
                continue
            if len(kept) < wanted:
                kept.append((problem, comps, group))
        if len(kept) >= wanted:
            break

    stats.update(_reward_stats(all_scored, summaries, G, cfg.eval.threshold))
    for record in all_scored:
        record["advantage"] = None  # set below for the groups trained on
    if not kept:
        return Batch(
            torch.zeros(0, 1, dtype=torch.long),
            torch.zeros(0, 1),
            torch.zeros(0, 0, dtype=torch.bool),
            None,
            torch.zeros(0),
            stats,
        )
    comps = [c for _, group, _ in kept for c in group]
    records = [r for _, _, group in kept for r in group]
    rewards = torch.tensor([r["reward"] for r in records], dtype=torch.float32)  # [N]
    lengths = torch.tensor([len(c.token_ids) for c in comps], dtype=torch.float32)  # [N]
    if t.soft_overlong:
        penalty = adv.soft_overlong_penalty(lengths, cfg.sampling.max_new_tokens, t.overlong_cache)
        rewards = rewards + penalty
        stats["overlong_penalty_mean"] = float(penalty.mean())
    input_ids, attention_mask, loss_mask, old_logp = _pack(comps, policy.tokenizer.pad_token_id)
    if t.overlong_filter:
        truncated = torch.tensor([c.finish_reason == "length" for c in comps])
        loss_mask &= ~truncated[:, None]
    advantages = _advantages(cfg, rewards, records, comps, policy.tokenizer, G, loss_mask)
    stats["advantage_abs_mean"] = float(advantages.abs().mean())
    stats["sampled_tokens"] = float(sum(len(c.token_ids) for _, group, _ in kept for c in group))
    for i, record in enumerate(records):
        row = advantages[i] if advantages.dim() == 1 else advantages[i][loss_mask[i]]  # process: its token mean
        record["advantage"] = round(float(row.mean()), 6) if row.numel() else 0.0
    return Batch(input_ids, attention_mask, loss_mask, old_logp, advantages, stats, all_scored)


def policy_update(
    model: Any, ref_model: Any, batch: Batch, cfg: Config, optimizer: Any, schedule: Any
) -> dict[str, float]:
    """`mu` optimizer steps over the batch, each accumulating gradients over micro-batches so the
    result equals one step on the whole batch."""
    t = cfg.train
    temperature = cfg.sampling.temperature or 1.0
    rows = torch.arange(batch.size)
    if t.beta == 0:
        # Without a KL term a sequence whose advantage is 0 everywhere adds nothing to the gradient
        # (zero-variance groups, RFT's wrong samples): skip its forward and backward passes.
        rows = rows[batch.advantages.reshape(batch.size, -1).ne(0).any(dim=1)]
    total_tokens = int(batch.loss_mask.sum())  # normalisers stay those of the whole batch
    stat_tokens = max(int(batch.loss_mask[rows].sum()), 1)
    rows = rows[ranks.shard(len(rows))]  # under torchrun: this rank's share of the rows
    micro = _micro_batches(batch, rows, t.micro_batch_size, t.micro_batch_tokens)
    live = len(micro)
    micro += [(mb, 2) for mb in ranks.padding(live)]  # as many forward/backward passes on every rank
    device = next(model.parameters()).device
    trim = heap.worth_trimming(model)
    if trim:
        heap.trim()  # sampling's free pages, before the reference pass
    # The sampler's log-probs of its own samples; a separate engine (vLLM) computes them with other
    # kernels than the trainer, and `rollout_correction` weights the loss by the ratio of the two.
    sampled_logp = batch.old_logp if ALGORITHMS[cfg.algorithm].on_policy else None
    correct = sampled_logp is not None and cfg.sampling.backend == "vllm" and t.rollout_correction != "none"
    with torch.no_grad():
        with lora.adapters_disabled(ref_model):  # LoRA: the reference is the base under the adapter
            ref_logp = _logprobs(ref_model, batch, micro, temperature, device) if ref_model is not None else None
        # With mu = 1 the ratio is exactly 1 (old = current, detached): no extra forward pass. With
        # mu > 1 the sampling-time log-probs are the old policy's, unless the samples came from
        # elsewhere (RFT's frozen model, SFT's dataset) or from another engine whose numbers the
        # correction compares with the trainer's: then the policy scores them once here.
        old_logp = sampled_logp
        if t.mu > 1 and (old_logp is None or correct):
            old_logp = _logprobs(model, batch, micro, temperature, device)
    mismatch_measured = sampled_logp is not None and (t.mu == 1 or correct)  # old_logp is the trainer's
    sums: dict[str, float] = {
        "loss": 0.0,
        "kl": 0.0,
        "clip_low": 0.0,
        "clip_high": 0.0,
        "clip_frac": 0.0,
        "ratio_mean": 0.0,
    }
    mismatch = {"mismatch_abs_sum": 0.0, "mismatch_tokens": 0.0, "rollout_weight_sum": 0.0}
    ratio_max = 0.0
    out: dict[str, float] = {}
    skipped = 0
    model.train()
    for epoch in range(t.mu):
        optimizer.zero_grad(set_to_none=True)
        entropy_sum = 0.0
        for i, (mb, width) in enumerate(wrapping.accumulate(model, micro)):  # gradients reduced over ranks on the last
            cols = slice(0, width - 1)  # this micro-batch's target positions: its own padding only
            if trim:
                heap.trim()  # the step's peak is this micro-batch's: drop earlier phases' free pages first
            ids, attn, mask = (
                batch.input_ids[mb, :width].to(device),
                batch.attention_mask[mb, :width].to(device),
                batch.loss_mask[mb, cols].to(device),
            )
            mask &= i < live  # a padding micro-batch has no token: zero loss, zero gradient
            logp, entropy = sequence_logprobs(model, ids, attn, mask, temperature, entropy=epoch == 0)  # [n, T]
            old = logp.detach() if t.mu == 1 else old_logp[mb, cols].to(device)
            advantages = batch.advantages[mb] if batch.advantages.dim() == 1 else batch.advantages[mb, cols]
            weights = None
            if mismatch_measured:
                weights, mm = rollout_mismatch(
                    old,
                    sampled_logp[mb, cols].to(device),
                    mask,
                    t.rollout_correction if correct else "none",
                    t.rollout_correction_cap,
                )
                if epoch == 0:
                    mismatch["mismatch_abs_sum"] += mm.abs_diff_sum
                    mismatch["mismatch_tokens"] += mm.tokens
                    mismatch["rollout_weight_sum"] += mm.weight_sum
                    ratio_max = max(ratio_max, mm.ratio_max)
            loss, st = policy_loss(
                logp,
                old,
                advantages.to(device),
                mask,
                eps_low=t.eps_low,
                eps_high=t.eps_high,
                beta=t.beta,
                ref_logp=ref_logp[mb, cols].to(device) if ref_logp is not None else None,
                kl=t.kl_estimator,
                aggregation=t.loss_aggregation,
                max_len=cfg.sampling.max_new_tokens,
                importance=t.importance,
                rollout_weights=weights,
            )
            w = micro_batch_weight(t.loss_aggregation, mask, batch.size, total_tokens)
            (loss * w * ranks.grad_scale()).backward()
            tokens_w = float(mask.sum()) / stat_tokens  # token-weighted stats over the rows trained on
            if epoch == 0:
                sums["loss"] += float(loss.detach()) * w
                sums["kl"] += float(st.kl) * tokens_w if st.kl is not None else 0.0
                sums["clip_low"] += float(st.clip_low) * tokens_w
                sums["clip_high"] += float(st.clip_high) * tokens_w
                sums["clip_frac"] += float(st.clip_total) * tokens_w
                sums["ratio_mean"] += float(st.ratio_mean) * tokens_w
                entropy_sum += float(entropy) * tokens_w
        if epoch == 0:
            out["entropy"] = entropy_sum
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), t.max_grad_norm or float("inf"))
        norm = ranks.local(norm)
        if not torch.isfinite(norm):
            optimizer.zero_grad(set_to_none=True)  # never let a NaN/inf gradient reach the weights
            skipped += 1
            continue
        out.setdefault("grad_norm", float(norm))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)  # free the gradients now: sampling and the reference pass don't need them
        schedule.step()
    out.update(ranks.all_sum({**sums, "entropy": out["entropy"]}))  # each rank summed its share
    if mismatch_measured:
        mismatch = ranks.all_sum(mismatch)
    if mismatch_measured and mismatch["mismatch_tokens"]:  # none when every row was skipped
        tokens = mismatch["mismatch_tokens"]
        out["mismatch_logp_abs_mean"] = mismatch["mismatch_abs_sum"] / tokens  # mean |log pi_trainer - log pi_sampler|
        out["mismatch_ratio_max"] = ranks.all_max(ratio_max)  # largest token ratio pi_trainer / pi_sampler
        if correct:
            out["rollout_weight_mean"] = mismatch["rollout_weight_sum"] / tokens
    out["lr"] = schedule.get_last_lr()[0]
    out["skipped_updates"] = float(skipped)
    if ref_logp is None:
        out.pop("kl")
    return out


# ---------------------------------------------------------------------------------------- helpers


def _step_seed(seed: int, step: int, rnd: int) -> int:
    """Sampling seed of one round: a function of (seed, step, round), so a resumed run samples
    exactly what the uninterrupted run did."""
    return (seed * 1_000_003 + step * 1_009 + rnd) % (2**63)


def _load_frozen(cfg: Config, path: str | Path) -> Any:
    """A frozen model (reference, or RFT's sampler) loaded from a model folder."""
    from grpo_cli.models.loading import load_model, resolve_model_dir

    return load_model(resolve_model_dir(str(path)), cfg.model, trainable=False)


def _rft_sampler(cfg: Config, policy: Policy, initial_model: str) -> Sampler:
    """RFT samples from the initial (SFT) model throughout, never from the policy being trained."""
    return make_sampler(_load_frozen(cfg, initial_model), policy.tokenizer, cfg)


def _pack(comps: list[Completion], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
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


def _advantages(
    cfg: Config,
    rewards: torch.Tensor,
    records: list[ScoredSample],
    comps: list[Completion],
    tokenizer: Any,
    G: int,
    loss_mask: torch.Tensor,
) -> torch.Tensor:
    """GRPO advantages ([N] outcome or [N, T] process), or the RFT gradient coefficients ([N])."""
    t = cfg.train
    if ALGORITHMS[cfg.algorithm].coefficient == "correct":
        return (rewards >= t.correct_threshold).float()  # coefficient 1 on correct samples, 0 otherwise
    if t.advantage == "outcome":
        return adv.ADVANTAGES["outcome"](rewards, G, t.scale_rewards)
    # Process supervision: step ends are character offsets in the completion -> token positions.
    step_rewards, step_ends = [], []
    for rec, comp in zip(records, comps):
        steps = rec.get("steps") or []
        offsets = _token_char_offsets(tokenizer, comp.token_ids)
        step_rewards.append([float(s["reward"]) for s in steps])
        step_ends.append(adv.char_to_token_ends([int(s["end"]) for s in steps], offsets) if steps and offsets else [])
    if not any(step_rewards):
        raise UserError("train.advantage=process needs a verifier that returns step rewards (e.g. `prm`); none did")
    width = max(len(c.token_ids) for c in comps)
    per_completion = adv.ADVANTAGES["process"](step_rewards, step_ends, G, width)  # [N, L]
    out = torch.zeros(loss_mask.shape, dtype=torch.float32)  # [N, T]
    for i, c in enumerate(comps):
        start = len(c.prompt_ids) - 1
        out[i, start : start + len(c.token_ids)] = per_completion[i, : len(c.token_ids)]
    return out


def _token_char_offsets(tokenizer: Any, token_ids: list[int]) -> list[tuple[int, int]]:
    """(start, end) character span of each completion token in the decoded completion text."""
    offsets, prev = [], 0
    for i in range(len(token_ids)):
        end = len(tokenizer.decode(token_ids[: i + 1], skip_special_tokens=True))
        offsets.append((prev, max(end, prev)))
        prev = max(end, prev)
    return offsets


def _check_solutions(problems: list[Problem], cfg: Config) -> None:
    field_name = cfg.data.solution_field
    for i, p in enumerate(problems):
        if not isinstance(p.get(field_name), str):
            raise UserError(
                f"{cfg.data.train} row {i + 1}: algorithm sft needs a solution in field '{field_name}' "
                "(data.solution_field)"
            )


def _sft_batch(chosen: list[Problem], cfg: Config, tokenizer: Any) -> Batch:
    """SFT: the dataset's solutions as completions, gradient coefficient 1."""
    from grpo_cli.sampling.hf import _encode

    prompts = render_prompts(chosen, tokenizer, cfg.data)
    eos = tokenizer.eos_token_id
    comps = []
    for prompt, problem in zip(prompts, chosen):
        ids = tokenizer(problem[cfg.data.solution_field], add_special_tokens=False)["input_ids"][
            : cfg.sampling.max_new_tokens - 1
        ]
        comps.append(Completion(problem[cfg.data.solution_field], _encode(tokenizer, prompt), ids + [eos], [], "stop"))
    ids, attn, loss_mask, _ = _pack(comps, tokenizer.pad_token_id)
    stats = {
        "sampled_tokens": float(sum(len(c.token_ids) for c in comps)),
        "completion_len_mean": float(sum(len(c.token_ids) for c in comps) / len(comps)),
    }
    return Batch(ids, attn, loss_mask, None, torch.ones(len(comps)), stats)


def _micro_batches(batch: Batch, rows: torch.Tensor, max_rows: int, max_tokens: int) -> list[tuple[torch.Tensor, int]]:
    """(row indices, padded width) of each micro-batch: rows grouped by length (grpo_cli.training.batching)."""
    from grpo_cli.training.batching import plan_micro_batches

    lengths = batch.attention_mask[rows].sum(dim=1).tolist()  # right-padded: real length per row
    plan = plan_micro_batches(lengths, max_rows, max_tokens)
    return [(rows[mb], max(lengths[i] for i in mb)) for mb in plan]


def _logprobs(
    model: Any, batch: Batch, micro: list[tuple[torch.Tensor, int]], temperature: float, device: Any
) -> torch.Tensor:
    """Log-probs [N, T] of the batch's tokens under `model`, filled in on the rows of `micro`."""
    out = torch.zeros(batch.loss_mask.shape, dtype=torch.float32)
    for mb, width in micro:
        ids, attn, mask = (
            batch.input_ids[mb, :width].to(device),
            batch.attention_mask[mb, :width].to(device),
            batch.loss_mask[mb, : width - 1].to(device),
        )
        out[mb, : width - 1] = sequence_logprobs(model, ids, attn, mask, temperature)[0].cpu()
    return out


def _reward_stats(
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
    out["verifier_failures"] = float(sum(c.failed for s in summaries for c in s.verifiers.values()))
    out["verifier_timeouts"] = float(sum(c.timed_out for s in summaries for c in s.verifiers.values()))
    for name in summaries[0].verifiers if summaries else []:
        out[f"failures/{name}"] = float(sum(s.verifiers[name].failed for s in summaries if name in s.verifiers))
        out[f"timeouts/{name}"] = float(sum(s.verifiers[name].timed_out for s in summaries if name in s.verifiers))
    return out


def _warn_about(row: dict[str, Any], step: int, report: Reporter) -> None:
    if row.get("skipped_updates"):
        report.warn(
            f"step {step}: {int(row['skipped_updates'])} update(s) skipped: non-finite gradient (weights unchanged)"
        )
    if row.get("skipped"):
        report.warn(f"step {step}: no group with unequal rewards after dynamic sampling; update skipped")
    elif row.get("zero_std_frac") == 1.0:
        report.warn(f"step {step}: every group has equal rewards: no learning signal this step")
    failed = row.get("verifier_failures", 0) + row.get("verifier_timeouts", 0)
    if failed:
        report.warn(
            f"step {step}: verifiers failed or timed out on {int(failed)} of {int(row['samples_scored'])} "
            "samples (they got the failure value)"
        )


def record_step(run_dir: Path, row: dict[str, Any], batch: Batch, cfg: Config, trackers: Trackers | None) -> None:
    """The log stage (rank 0): the metrics row to metrics.jsonl and the trackers, and on the steps
    `rollouts.due` picks, what the model wrote to rollouts/step-NNNNNN.jsonl."""
    step, t = row["step"], cfg.train
    _append_metrics(run_dir / "metrics.jsonl", row)
    if trackers is not None:
        trackers.log(row, step)
    if batch.records and rollouts.due(step, t.steps, t.save_every, t.log_completions):
        rollouts.write(run_dir, step, batch.records, cfg.sampling.n)


def training_title(cfg: Config) -> str:
    from grpo_cli.pipeline.plot import training_title as title

    return title(str(cfg.model.path), cfg.data.train, cfg.algorithm)


def plot_run(
    run_dir: Path, cfg: Config, before: dict[str, Any] | None, after: dict[str, Any] | None, report: Reporter
) -> Path | None:
    """training-curves.png in the run folder: reward, accuracy (with the held-out before/after),
    KL, length and zero-std fraction per step. A plotting failure warns; the run stands."""
    from grpo_cli.pipeline.data import read_jsonl
    from grpo_cli.pipeline.plot import plot_training

    path = run_dir / "training-curves.png"
    try:
        rows = read_jsonl(run_dir / "metrics.jsonl")
        plot_training(rows, path, title=training_title(cfg), before=before, after=after)
    except Exception as e:  # a figure must never cost the trained model
        report.warn(f"training curves not drawn ({type(e).__name__}: {e})")
        return None
    return path


def step_status(row: dict[str, Any]) -> str:
    """The last step in a few figures: mean reward, loss, seconds per step (and held-out accuracy)."""
    parts = [f"reward {row['reward_mean']:.3f}"] if "reward_mean" in row else []
    parts += [f"loss {row['loss']:+.4f}"] if "loss" in row else []
    parts += [f"{row['step_time']:.2f} s/step"]
    parts += [f"held-out {100 * row['eval_accuracy']:.1f}%"] if "eval_accuracy" in row else []
    return "  ".join(parts)


def _print_sign_of_life(row: dict[str, Any], t: Any, report: Reporter) -> None:
    """A sign of life where no progress bar is drawn (output to a file): one line every `log_every`
    steps, every held-out evaluation, and the last step."""
    step = row["step"]
    due = (t.log_every and step % t.log_every == 0) or "eval_accuracy" in row or step == t.steps
    if not report.interactive and due:
        report.log(f"step {step}/{t.steps}  {step_status(row)}")


def _periodic_eval(policy: Policy, problems: list[dict[str, Any]] | None, cfg: Config, step: int) -> dict[str, float]:
    """`eval_accuracy` every `train.eval_every` steps (not at the last: the after-evaluation is that one)."""
    t = cfg.train
    if not (t.eval_every and problems and step % t.eval_every == 0 and step < t.steps):
        return {}
    result = _evaluate_on_main(policy, problems, cfg, Reporter(), f"step {step}")  # no bar inside the bar
    return {"eval_accuracy": float(result["accuracy"])}


def _remove_unstarted_run(run_dir: Path) -> None:
    """Delete a run folder that holds no checkpoint and no metrics row (config.yaml alone, say)."""
    import shutil

    metrics = run_dir / "metrics.jsonl"
    if latest_checkpoint(run_dir) is None and not (metrics.exists() and metrics.stat().st_size):
        shutil.rmtree(run_dir, ignore_errors=True)


def _append_metrics(path: Path, row: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(row) + "\n")


def _truncate_metrics(path: Path, keep_until: int) -> None:
    """Keep the rows of steps <= keep_until (a resumed run rewrites what followed its checkpoint)."""
    if not path.exists():
        return
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a kill
            continue
        if row.get("step", 0) <= keep_until:
            rows.append(line)
    path.write_text("".join(r + "\n" for r in rows), encoding="utf-8")


def _checkpoint(
    run_dir: Path,
    step: int,
    model: Any,
    tokenizer: Any,
    cfg: Config,
    state: TrainerState,
    ref: Any,
    reward_model: Any,
    *,
    final: bool,
    report: Reporter,
) -> Path | None:
    try:
        path = save_checkpoint(
            run_dir,
            step,
            model=model,
            tokenizer=tokenizer,
            cfg=cfg,
            state=state,
            ref_model=ref,
            reward_model=reward_model,
            keep_last=cfg.train.keep_last,
        )
    except OSError as e:
        last = latest_checkpoint(run_dir)
        message = f"checkpoint at step {step} not written ({e.strerror or e}); last good checkpoint: {last or 'none'}"
        if final:
            raise UserError(message) from None
        report.warn(message + "; training goes on")
        return None
    report.log(f"checkpoint {path}")
    return path


def _eval_problems(cfg: Config) -> list[Problem]:
    problems = problems_from(cfg.data.eval, cfg.data)
    return problems[: cfg.train.eval_limit] if cfg.train.eval_limit else problems


def evaluate_policy(
    policy: Policy, problems: list[dict[str, Any]], cfg: Config, report: Reporter, label: str
) -> dict[str, Any]:
    """Held-out accuracy, pass@k and maj@k of the in-memory policy (same seed and n every time)."""
    from grpo_cli.pipeline import evaluate

    n = cfg.train.eval_n
    eval_cfg = copy.deepcopy(cfg)
    eval_cfg.eval.n, eval_cfg.eval.k = n, sorted({1, n})
    return evaluate.evaluate_policy(policy, problems, eval_cfg, report, f"eval ({label})").result


def _evaluate_on_main(
    policy: Policy, problems: list[dict[str, Any]], cfg: Config, report: Reporter, label: str
) -> dict[str, Any]:
    """The held-out evaluation, run by rank 0 alone (the others wait for its result)."""
    with wrapping.full_weights(policy.model):
        result = evaluate_policy(policy, problems, cfg, report, label) if ranks.is_main() else None
    return ranks.broadcast(result)
