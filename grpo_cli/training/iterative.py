"""The learned reward model in `grpo train`: DeepSeekMath's iterative RL (Algorithm 1, section 4.1.4).

With `train.reward_model.path` set, the policy's reward is the reward model's, scored by the `prm`
verifier's `hf` backend on a live copy of the RM in the run folder (`reward_model/current`); the
configured verifiers still score every sample, at weight 0, so metrics.jsonl keeps their true
reward (`reward/math_mean`) and the RM's labels come from them. With `retrain_every: N`, every N
steps is an iteration:

    reference <- policy              (train.loss.ref_sync_every, the same N in the preset)
    N steps: sample, score with the RM, update the policy     (the trainer's loop)
    the RM trains further on the iteration's samples, labelled by the rule (or by rollouts),
    plus a replay of `replay_fraction` (10%) of the earlier iterations' labelled samples

The RM's figures go into that step's metrics row (`rm/...`): its training loss, how many new and
replayed examples it saw, and its step accuracy and AUC on a fixed held-out set (the initial
policy's samples of held-out prompts, labelled the same way). Checkpoints carry the RM's weights
(`reward_model/`) and, in the trainer state, its optimizer, its replay buffer (`history`), the
iteration's samples so far and the held-out set, so a killed run resumes exactly.
"""

from __future__ import annotations

import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from grpo_cli.config import Config, VerifierConfig
from grpo_cli.errors import UserError
from grpo_cli.report import Reporter
from grpo_cli.training import reward_model as rmod
from grpo_cli.training.checkpoint import TrainerState


@dataclass
class RewardModelLoop:
    """A run's learned reward model and Algorithm 1's state.

    live: the folder the reward verifier reads; model: the RM being trained (None for a fixed RM);
    history: labelled examples of the finished iterations (the replay buffer); pending: this
    iteration's scored sample records; held_out: the fixed held-out examples; iteration: finished
    iterations.
    """

    cfg: Config
    live: Path
    meta: dict[str, Any]
    model: rmod.RewardModel | None = None
    history: list[rmod.Example] = field(default_factory=list)
    pending: list[dict[str, Any]] = field(default_factory=list)
    held_out: list[rmod.Example] = field(default_factory=list)
    iteration: int = 0

    def state(self) -> dict[str, Any]:
        return {
            "history": rmod.examples_to_state(self.history),
            "pending": self.pending,
            "held_out": rmod.examples_to_state(self.held_out),
            "iteration": self.iteration,
            "optimizer": self.model.state() if self.model is not None else None,
        }

    def save_pretrained(self, folder: Path, **_: Any) -> None:
        """The checkpoint's copy of the RM (the checkpoint writer calls this like a model's)."""
        shutil.copytree(self.live, folder)


def start_reward_model(
    cfg: Config, run_dir: Path, checkpoint: Path | None, state: TrainerState | None, policy: Any, report: Reporter
) -> RewardModelLoop | None:
    """The run's RM, from the checkpoint when resuming, else from `reward_model.path` (built first when
    it is `bootstrap`); None when the run has none."""
    rm = cfg.train.reward_model
    if not rm.path:
        return None
    from grpo_cli import ranks

    if ranks.world() > 1:
        raise UserError("train.reward_model runs in one process; drop --nproc / torchrun for it")
    saved = state.extra.get("reward_model") if state is not None else None
    if checkpoint is not None and saved is not None and (checkpoint / "reward_model").is_dir():
        source = checkpoint / "reward_model"
    elif rm.path == "bootstrap":
        source = run_dir / "reward_model" / "initial"
        if not (source / "eval.json").is_file():  # written last: a finished build
            report.log("building the starting reward model from the policy's base model")
            run_dir.mkdir(parents=True, exist_ok=True)
            rmod.bootstrap_reward_model(cfg, source, report)
    else:
        source = Path(rm.path)
        if not source.is_dir():
            raise UserError(f"train.reward_model.path: {source} is not a folder (a reward model from `grpo rm train`)")
    meta = rmod.check_head(source, rm.style, rm.kind)
    if meta is None:
        raise UserError(f"train.reward_model.path: {source} has no {rmod.META_FILE}; train one with `grpo rm train`")
    if not rm.retrain_every:
        return RewardModelLoop(cfg, source, meta)  # a fixed RM is read where it is
    live = run_dir / "reward_model" / "current"
    if source.resolve() != live.resolve():
        shutil.rmtree(live, ignore_errors=True)
        live.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(source, live)
    loop = RewardModelLoop(cfg, live, meta, model=rmod.RewardModel(live, lr=rm.lr))
    if saved is not None:
        loop.history = rmod.examples_from_state(saved["history"])
        loop.pending = list(saved["pending"])
        loop.held_out = rmod.examples_from_state(saved["held_out"])
        loop.iteration = saved["iteration"]
        loop.model.load_state(saved["optimizer"])
    elif rm.held_out_prompts:
        loop.held_out = _held_out_examples(cfg, policy, report)
    return loop


def reward_verifiers(cfg: Config, loop: RewardModelLoop | None) -> list[VerifierConfig]:
    """The verifiers the policy's samples are scored with: the configured ones, or, with a learned
    RM, the RM (weight 1) followed by the configured ones at weight 0 (true reward, for the logs)."""
    if loop is None:
        return list(cfg.verifiers)
    rm_spec = VerifierConfig(name="prm", weight=1.0, options=rmod.verifier_options(loop.live, loop.meta))
    return [rm_spec, *(VerifierConfig(**{**vars(v), "weight": 0.0}) for v in cfg.verifiers)]


def observe(loop: RewardModelLoop | None, records: list[dict[str, Any]]) -> None:
    """Keep a step's scored samples for the iteration's RM training."""
    if loop is not None and loop.model is not None:
        loop.pending.extend(records)


def end_of_step(
    loop: RewardModelLoop | None, step: int, verifiers: list[Any], policy: Any, report: Reporter
) -> dict[str, float]:
    """At the end of an iteration (every `retrain_every` steps): train the RM on the iteration's
    samples plus the replay, reload it into the reward verifier (`verifiers[0]`), and return its
    metrics; {} on other steps."""
    if loop is None or loop.model is None or (step + 1) % loop.cfg.train.reward_model.retrain_every:
        return {}
    rm, seed = loop.cfg.train.reward_model, loop.cfg.seed * 1_000_003 + loop.iteration
    rng = random.Random(seed)
    chosen = (
        loop.pending
        if len(loop.pending) <= rm.samples_per_iteration
        else rng.sample(loop.pending, rm.samples_per_iteration)
    )
    new = _label(loop.cfg, chosen, policy, seed)
    replay = rmod.replay_sample(loop.history, rm.replay_fraction, rng)
    before = [p.detach().clone() for p in loop.model.model.parameters()]
    stats = loop.model.train_on(new + replay, epochs=rm.epochs, batch_size=rm.batch_size, seed=seed)
    delta = float(torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in zip(loop.model.model.parameters(), before))))
    loop.history += new
    loop.pending = []
    loop.iteration += 1
    loop.model.save(loop.live, iterations=loop.iteration)
    _reload(verifiers, loop)
    row = {
        "rm/iteration": float(loop.iteration),
        "rm/loss": stats["loss"],
        "rm/updates": stats["updates"],
        "rm/new_examples": float(len(new)),
        "rm/replayed": float(len(replay)),
        "rm/buffer": float(len(loop.history)),
        "rm/weight_delta": delta,
    }
    if loop.held_out:
        held = rmod.evaluate_folder(loop.live, loop.held_out)
        row.update({f"rm/held_out_{k}": v for k, v in held.items()})
    report.log(f"step {step + 1}: reward model iteration {loop.iteration}: loss {stats['loss']:.4f}")
    return row


def _label(cfg: Config, records: list[dict[str, Any]], policy: Any, seed: int) -> list[rmod.Example]:
    rm = cfg.train.reward_model
    rollout = rmod.make_rollout(policy, cfg, cfg.verifiers, rm.rollouts, seed) if rm.labels == "rollouts" else None
    plain = [{k: v for k, v in r.items() if k not in ("reward", "rewards", "info", "steps")} for r in records]
    if rm.labels == "rollouts":  # the last step's label is the outcome: the configured verifiers' reward
        from grpo_cli.pipeline.scoring import opened_verifiers, score

        with opened_verifiers(cfg.verifiers) as gold:
            plain, _ = score(plain, gold)
    return rmod.label_records(
        plain, rm.kind, rm.labels, gold=cfg.verifiers, threshold=cfg.train.advantage.correct_threshold, rollout=rollout
    )


def _held_out_examples(cfg: Config, policy: Any, report: Reporter) -> list[rmod.Example]:
    """The initial policy's samples of the first `held_out_prompts` held-out problems, labelled."""
    from grpo_cli.pipeline.sample import problems_from, sample_problems, sampling_params

    problems = problems_from(cfg.data.eval, cfg.data)[: cfg.train.reward_model.held_out_prompts]
    records = sample_problems(policy, problems, cfg, sampling_params(cfg, seed=cfg.seed + 11), report, logprobs=False)
    return _label(cfg, records, policy, cfg.seed + 11)


def _reload(verifiers: list[Any], loop: RewardModelLoop) -> None:
    """The reward verifier reads the RM's new weights: close it and open it again on the live folder."""
    from grpo_cli.plugins import load_verifier

    spec, old = verifiers[0]
    old.close()
    verifiers[0] = (spec, load_verifier(spec.name, spec.options))
