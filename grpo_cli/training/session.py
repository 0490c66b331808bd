"""A training session: everything one run needs, built from a Config (or restored from the run's
last checkpoint), with the stages the loop calls (`collect`, `update`, `evaluate`, `save`). The
trainer (`trainer.train`), the benchmarks and the tests build runs through `Session.open` only.

Building order matters for bit-exact resume: the seed is set before any model is loaded (a LoRA
adapter's initial weights draw from it), and the checkpoint's RNG state is restored after every
model is built.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from grpo_cli import ranks
from grpo_cli.algorithms.paradigms import ALGORITHMS
from grpo_cli.algorithms.schedules import lr_multiplier
from grpo_cli.config import Config
from grpo_cli.errors import UserError
from grpo_cli.models import lora, precision
from grpo_cli.models.loading import enable_activation_checkpointing, model_reference
from grpo_cli.perf.logprobs import LogprobPath, logprob_path
from grpo_cli.pipeline.sample import Policy, load_policy, make_sampler, problems_from
from grpo_cli.records import Problem
from grpo_cli.report import Reporter
from grpo_cli.sampling.base import Sampler
from grpo_cli.training import optim, wrapping
from grpo_cli.training.batch import Batch, DataOrder, check_solutions
from grpo_cli.training.checkpoint import (
    TrainerState,
    latest_checkpoint,
    load_state,
    remove_stale_temp,
    save_checkpoint,
)
from grpo_cli.training.collect import collect_batch
from grpo_cli.training.iterative import RewardModelLoop, start_reward_model
from grpo_cli.training.recorder import Recorder
from grpo_cli.training.update import UpdateSpec, policy_update, update_spec


@dataclass
class Session:
    """One run's live objects. `model` is the policy as wrapped for training (DDP / FSDP2 under
    torchrun, else `policy.model`); `ref_model` is None without a KL term (with LoRA it is the
    policy itself, its adapters off during the reference pass); `frozen_sampler` is RFT's sampler
    on the initial model. `spec` is the update as the config decides it, `path`/`ref_path` the
    models' log-prob paths, chosen once here."""

    cfg: Config
    report: Reporter
    run_dir: Path
    policy: Policy
    model: Any
    ref_model: Any
    frozen_sampler: Sampler | None
    problems: list[Problem]
    order: DataOrder
    optimizer: Any
    schedule: Any
    spec: UpdateSpec
    path: LogprobPath
    ref_path: LogprobPath | None
    initial_model: str
    start_step: int = 0
    checkpoint: Path | None = None
    before: dict[str, Any] | None = None
    eval_problems: list[Problem] | None = None
    reward_model: RewardModelLoop | None = None
    recorder: Recorder | None = None
    owns_group: bool = False

    @classmethod
    def open(
        cls,
        cfg: Config,
        report: Reporter,
        *,
        resume: bool = False,
        record: bool = True,
        before: dict[str, Any] | None = None,
        evaluate_before: bool = True,
    ) -> Session:
        """Build the run: check the run folder, join the ranks, assemble the models, the optimizer
        and the data order, restore the checkpoint's state when resuming, open the recorder (when
        `record`), the reward model and the before-evaluation: the checkpoint's when resuming, else
        `before` when given (a staged run's previous after-evaluation), else evaluated now unless
        `evaluate_before` is False."""
        cfg.check_training()
        start_ckpt = check_run_folder(Path(cfg.train.run.out_dir), resume, report)
        owns_group = ranks.setup(cfg.model.device)  # under torchrun: join the ranks
        report = report if ranks.is_main() else Reporter()  # rank 0 speaks for all
        torch.manual_seed(cfg.seed)
        state = load_state(start_ckpt) if start_ckpt is not None else None
        session = cls._assemble(cfg, report, start_ckpt, state)
        session.owns_group = owns_group
        if state is not None:
            session._restore(state)
        elif before is not None:
            session.before = before
        if record:
            session.recorder = Recorder(cfg, session.run_dir, report, session.start_step)
        session.reward_model = start_reward_model(cfg, session.run_dir, start_ckpt, state, session.policy, report)
        session.eval_problems = eval_problems(cfg) if cfg.train.run.eval_n else None
        if session.eval_problems is not None and session.before is None and evaluate_before:
            session.before = session.evaluate("before")
        if session.recorder is not None:
            session.recorder.start(session.before)
        return session

    @classmethod
    def _assemble(cls, cfg: Config, report: Reporter, start_ckpt: Path | None, state: TrainerState | None) -> Session:
        t = cfg.train
        policy = policy_for(cfg, start_ckpt, state)
        ranks.split_threads(cfg.model.threads)
        if t.run.gradient_checkpointing:  # recompute activations in backward: less memory, ~1/3 more compute
            enable_activation_checkpointing(policy.model)
        model = wrapping.wrap(policy.model, t.run.parallel)  # DDP / FSDP2 under torchrun, else the model
        precision.mark(model, precision.compute_dtype(policy.model))  # a DDP wrapper computes as its module
        if ranks.is_main():  # what the run computes with: the thread rule's and `model.dtype: auto`'s choices
            dtype = str(precision.compute_dtype(policy.model)).removeprefix("torch.")
            report.log(f"{torch.get_num_threads()} torch threads, {dtype} compute")
        paradigm = ALGORITHMS[cfg.algorithm]
        problems = problems_from(cfg.data.train, cfg.data, need_answer=paradigm.samples)
        if not paradigm.samples:  # SFT reads solutions
            check_solutions(problems, cfg)
        initial_model = state.initial_model if state and state.initial_model else str(policy.model_dir)
        spec = update_spec(cfg)
        ref_model = reference_for(cfg, policy, start_ckpt, initial_model) if spec.loss.needs_reference else None
        frozen = (
            make_sampler(load_frozen(cfg, initial_model), policy.tokenizer, cfg) if paradigm.frozen_sampler else None
        )
        total = t.run.steps * t.run.mu
        optimizer, schedule = optim.build(
            model,
            t.optimizer.lr,
            tuple(t.optimizer.betas),
            t.optimizer.weight_decay,
            lambda i: lr_multiplier(i, t.optimizer.warmup_steps, total, t.optimizer.schedule),
        )
        ref_path = logprob_path(ref_model) if ref_model is not None else None
        order = DataOrder(len(problems), cfg.seed)
        return cls(
            cfg, report, Path(t.run.out_dir), policy, model, ref_model, frozen, problems, order, optimizer, schedule,
            spec, logprob_path(model), ref_path, initial_model, checkpoint=start_ckpt,
        )  # fmt: skip

    def _restore(self, state: TrainerState) -> None:
        """The checkpoint's optimizer, schedule, data order and RNG state (the same order on every rank)."""
        wrapping.load_optimizer_state(self.model, self.optimizer, state.optimizer)
        self.schedule.load_state_dict(state.schedule)
        self.order = DataOrder(len(self.problems), self.cfg.seed, **state.data_order)
        torch.set_rng_state(state.rng_for(ranks.rank()))
        self.start_step, self.before = state.step, state.before
        self.report.log(f"resuming from {self.checkpoint} at step {self.start_step}")

    # ------------------------------------------------------------------------------ the stages

    def collect(self, step: int, verifiers: list[Any]) -> Batch:
        """The step's batch: sampled (from RFT's frozen sampler or the policy), scored, filtered,
        with advantages; or the dataset's solutions (SFT)."""
        return collect_batch(step, self.cfg, self.policy, self.frozen_sampler, self.problems, self.order, verifiers)

    def update(self, batch: Batch) -> dict[str, float]:
        """`mu` optimizer steps on the batch, then the sampler and (iterative RL) the reference
        catch up with the new weights."""
        if not batch.size:
            return {"skipped": 1.0}
        out = policy_update(
            self.model, self.ref_model, batch, self.spec, self.optimizer, self.schedule, self.path, self.ref_path
        )
        self.policy.sampler.sync_weights(self.policy.model)  # an engine with its own copy (vLLM) reloads them
        return out

    def sync_reference(self, step: int) -> None:
        """Iterative RL: every `ref_sync_every` steps the reference becomes a copy of the policy."""
        every = self.cfg.train.loss.ref_sync_every
        if every and self.ref_model is not None and step % every == 0:
            self.ref_model.load_state_dict(wrapping.full_state_dict(self.policy.model))

    def evaluate(self, label: str, report: Reporter | None = None) -> dict[str, Any]:
        """Held-out accuracy, pass@k and maj@k of the in-memory policy (same seed and n every time),
        run by rank 0 alone (the others wait for its result)."""
        from grpo_cli.pipeline import evaluate

        cfg = copy.deepcopy(self.cfg)
        cfg.eval.n, cfg.eval.k = cfg.train.run.eval_n, sorted({1, cfg.train.run.eval_n})
        with wrapping.full_weights(self.policy.model):
            result = None
            if ranks.is_main():
                run = evaluate.evaluate_policy(
                    self.policy, self.eval_problems, cfg, report or self.report, f"eval ({label})"
                )
                result = run.result
        return ranks.broadcast(result)

    def periodic_eval(self, step: int) -> dict[str, float]:
        """`eval_accuracy` every `train.run.eval_every` steps (not at the last when the after-evaluation
        is that one)."""
        t = self.cfg.train
        last = step >= t.run.steps and t.run.eval_after
        if not (t.run.eval_every and self.eval_problems and step % t.run.eval_every == 0 and not last):
            return {}
        result = self.evaluate(f"step {step}", Reporter())  # no bar inside the bar
        return {"eval_accuracy": float(result["accuracy"])}

    def checkpoint_due(self, step: int) -> bool:
        t = self.cfg.train
        return bool((t.run.save_every and step % t.run.save_every == 0) or step == t.run.steps)

    def state(self, step: int) -> TrainerState:
        """What resuming after `step` needs besides the weights."""
        return TrainerState(
            step=step,
            optimizer=wrapping.optimizer_state(self.model, self.optimizer),
            schedule=self.schedule.state_dict(),
            data_order=self.order.state(),
            torch_rng=torch.get_rng_state(),
            torch_rng_ranks=ranks.rng_states(),
            before=self.before,
            initial_model=self.initial_model,
            extra={"reward_model": self.reward_model.state()} if self.reward_model is not None else {},
        )

    def save(self, step: int) -> Path | None:
        """Checkpoint after `step` (rank 0 writes; FSDP gathers the weights on every rank). A write
        that fails warns and training goes on, except at the last step; the last good checkpoint."""
        t, state = self.cfg.train, self.state(step)
        synced = self.ref_model if (t.loss.ref_sync_every and step >= t.loss.ref_sync_every) else None
        # the adapter alone (LoRA), or the whole weights (FSDP: gathered by all ranks)
        savable = lora.AdapterSavable(self.policy.model) if t.lora.rank else wrapping.Savable(self.policy.model)
        rm = self.reward_model if self.reward_model is not None and self.reward_model.model is not None else None
        if ranks.is_main():
            written = write_checkpoint(self, step, savable, state, synced, rm, final=step == t.run.steps)
            self.checkpoint = written or self.checkpoint
        self.checkpoint = ranks.broadcast(self.checkpoint)  # the other ranks wait for the checkpoint
        return self.checkpoint

    def close(self) -> None:
        if self.owns_group:
            ranks.teardown()


# ------------------------------------------------------------------------------------ building


def check_run_folder(run_dir: Path, resume: bool, report: Reporter) -> Path | None:
    """The checkpoint to resume from (None for a fresh run), after removing the temporary folders
    of checkpoint writes that were killed midway; refuses a resume with nothing to resume and a
    fresh run over an existing one."""
    stale = remove_stale_temp(run_dir) if ranks.is_main() else []
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
    return start_ckpt


def policy_for(cfg: Config, start_ckpt: Path | None, state: TrainerState | None) -> Policy:
    """The trainable policy: the configured model (or the checkpoint's weights), and with LoRA the
    base model plus a fresh adapter or the checkpoint's."""
    if cfg.train.lora.rank:
        policy = load_policy(cfg, state.initial_model if state else None, trainable=True)
        lora.attach(policy.model, cfg.train.lora, model_reference(policy.model_dir), adapter_dir=start_ckpt)
        precision.store_frozen(policy.model)  # the base does not train: no float32 master copy of it
        if start_ckpt is not None:
            policy.sampler.sync_weights(policy.model)  # an engine with its own copy started from the base
        return policy
    if start_ckpt is not None and lora.is_adapter_dir(start_ckpt):
        raise UserError(f"--resume: {start_ckpt} holds a LoRA adapter; resume with the run's train.lora settings")
    return load_policy(cfg, str(start_ckpt) if start_ckpt else None, trainable=True)


def reference_for(cfg: Config, policy: Policy, start_ckpt: Path | None, initial_model: str) -> Any:
    """The KL reference: with LoRA the policy itself (its adapters off during the reference pass: no
    second copy); else the checkpoint's `ref/` (iterative RL replaced it) or the initial model."""
    if cfg.train.lora.rank:
        return policy.model
    synced = start_ckpt / "ref" if start_ckpt is not None and (start_ckpt / "ref").is_dir() else None
    return load_frozen(cfg, synced or initial_model)


def load_frozen(cfg: Config, path: str | Path) -> Any:
    """A frozen model (reference, or RFT's sampler) loaded from a model folder."""
    from grpo_cli.models.loading import load_model, resolve_model_dir

    return load_model(resolve_model_dir(str(path)), cfg.model, trainable=False)


def eval_problems(cfg: Config) -> list[Problem]:
    problems = problems_from(cfg.data.eval, cfg.data)
    return problems[: cfg.train.run.eval_limit] if cfg.train.run.eval_limit else problems


def write_checkpoint(
    session: Session, step: int, savable: Any, state: TrainerState, ref: Any, reward_model: Any, *, final: bool
) -> Path | None:
    """`save_checkpoint`, with a failed write (disk full) a warning, or at the last step an error."""
    try:
        path = save_checkpoint(
            session.run_dir,
            step,
            model=savable,
            tokenizer=session.policy.tokenizer,
            cfg=session.cfg,
            state=state,
            ref_model=ref,
            reward_model=reward_model,
            keep_last=session.cfg.train.run.keep_last,
        )
    except OSError as e:
        last = latest_checkpoint(session.run_dir)
        message = f"checkpoint at step {step} not written ({e.strerror or e}); last good checkpoint: {last or 'none'}"
        if final:
            raise UserError(message) from None
        session.report.warn(message + "; training goes on")
        return None
    session.report.log(f"checkpoint {path}")
    return path
