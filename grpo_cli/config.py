"""The one typed configuration (docs/design.md, "Configuration").

Precedence: dataclass defaults < preset YAML < `--set a.b=c` overrides < explicit CLI options.
Each field carries its documentation as the string literal right after it; `field_docs` reads them
back so `grpo presets show --docs` can print them. Unknown keys are errors naming the nearest key.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import math
import os
import re
import textwrap
import time
import types
import typing
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from grpo_cli.errors import UserError


def available_cores() -> int:
    """CPU cores this process may run on (respects taskset/cgroup affinity where the OS exposes it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def free_cores(cores: int, busy: float) -> int:
    """Cores left for us when other processes keep `busy` cores busy right now: torch's CPU kernels
    split work evenly over their threads, so a thread that must share a busy core holds back every
    other one. At least 1, at most `cores`.
    free_cores(2, 0.1) = 2; free_cores(2, 1.4) = 1; free_cores(2, 2.3) = 1; free_cores(16, 3.6) = 12."""
    return max(1, min(cores, cores - round(busy)))


def busy_cores(before: tuple[float, float, float], after: tuple[float, float, float], cpus: int) -> float:
    """Cores that processes other than this one kept busy between two `cpu_sample()`s:
    `(busy jiffies of the machine, all jiffies, this process's CPU seconds * 100)`.
    busy_cores((0, 0, 0), (20, 40, 0), 2) = 1.0 (half of two cores); with this process using 10
    of those 20 jiffies: 0.5."""
    total = after[1] - before[1]
    if total <= 0:
        return 0.0
    others = (after[0] - before[0]) - (after[2] - before[2])
    return max(0.0, others / total * cpus)


def cpu_sample() -> tuple[float, float, float] | None:
    """`(busy, total)` jiffies of the whole machine from /proc/stat, and this process's CPU time in
    jiffies (USER_HZ is 100 on Linux); None where /proc/stat does not exist."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [float(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + fields[4]  # idle and iowait: a process waiting on I/O leaves its core free
    own = os.times()
    return sum(fields) - idle, sum(fields), (own.user + own.system) * 100


def auto_threads(window: float = 0.25) -> int:
    """`model.threads: 0`: the cores available to this process that other work keeps busy now,
    sampled over `window` seconds of /proc/stat (the load average lags a minute and counts sleeping
    I/O, so light background work made it pick 1 thread of 2); the load average where there is no
    /proc/stat."""
    before = cpu_sample()
    if before is None:
        try:
            return free_cores(available_cores(), os.getloadavg()[0])
        except (AttributeError, OSError):  # no load average on this OS
            return available_cores()
    time.sleep(window)
    after = cpu_sample()
    return free_cores(available_cores(), busy_cores(before, after, os.cpu_count() or 1)) if after else 1


@dataclass
class ModelConfig:
    path: str = "tiny"
    """Local Hugging Face causal LM directory, or `tiny` for the model shipped with grpo."""
    dtype: str = "auto"
    """Compute dtype: float32, bfloat16, float16, or auto (bfloat16 where the hardware runs it
    natively and the model's MLP weight has at least 256 x 1024 entries, else float32). Weights that
    train and their optimizer state stay float32 (grpo_cli.models.precision)."""
    device: str = "auto"
    """cpu, cuda, cuda:N, or auto (cuda when available)."""
    threads: int = 0
    """Torch CPU threads; 0: the cores available to the process (CPU affinity) less those other
    processes keep busy now (CPU time sampled over a quarter second), at least 1. Set it for exact
    reproducibility."""
    impl: str = "auto"
    """native (grpo's own Llama/Qwen2/Qwen3/Mistral code: less memory, faster small-batch steps), transformers, or auto
    (native where it supports the model)."""
    base: str = ""
    """The base model of a LoRA checkpoint given as the model (`tiny` or a folder); empty: the one its
    adapter_config.json names (`base_model_name_or_path`). Set it where that folder moved."""

    def __post_init__(self) -> None:
        _check_choice("model.dtype", self.dtype, ("auto", "float32", "bfloat16", "float16"))
        _check_choice("model.impl", self.impl, ("auto", "native", "transformers"))
        if self.threads < 0:
            raise UserError(f"config: model.threads must be >= 0, got {self.threads}")


@dataclass
class DataConfig:
    train: str = "arith:train"
    """Training problems: a JSONL/JSON/Parquet/CSV file, `arith:train|test` (built-in task), `hf:NAME[:SPLIT]` (a
    hub name or local folder; `datasets` installed), or `rg:TASK[?size=N&seed=S&KEY=VALUE]` (reasoning-gym)."""
    eval: str = "arith:test"
    """Held-out problems for `grpo eval` and the before/after evaluation of `grpo train`; same forms as `train`."""
    prompt_field: str = "prompt"
    """Field holding the prompt (a string, or a list of chat messages). GSM8K: question; MATH: problem."""
    answer_field: str = "answer"
    """Field holding the gold answer. GSM8K: answer (ends with `#### N`); MATH: solution (has `\\boxed{}`)."""
    id_field: str = "id"
    """Field holding a problem id; the row number is used when absent."""
    template: str = "{prompt}\n"
    """Prompt template for models without a chat template; `{prompt}` and any row field may appear."""
    chat_template: str = "auto"
    """auto: use the tokenizer's chat template when it has one; never: always use `template`."""
    system_prompt: str = ""
    """System message for chat templates (empty: none)."""
    instruction: str = ""
    """Text appended to the user message under a chat template, e.g. an answer-format instruction."""
    solution_field: str = "solution"
    """Field holding a worked solution, used by `algorithm: sft`. GSM8K: answer; MATH: solution."""
    limit: int = 0
    """Use only the first N problems (0: all)."""

    def __post_init__(self) -> None:
        _check_choice("data.chat_template", self.chat_template, ("auto", "never"))
        if self.limit < 0:
            raise UserError(f"config: data.limit must be >= 0, got {self.limit}")


@dataclass
class SamplingConfig:
    backend: str = "hf"
    """Sampling backend: hf (transformers) or vllm (an in-process vLLM engine; install the vllm extra)."""
    n: int = 8
    """Completions per prompt (G, the group size)."""
    temperature: float = 1.0
    """Sampling temperature; 0 is greedy. Log-probs are recorded under this temperature."""
    top_p: float = 1.0
    """Nucleus sampling mass (1.0: off)."""
    max_new_tokens: int = 64
    """Longest completion in tokens; longer ones stop with finish_reason `length`."""
    batch_size: int = 256
    """Sequences generated together (prompts x completions)."""
    vllm_kwargs: dict[str, Any] = field(default_factory=dict)
    """backend vllm: extra `vllm.LLM` arguments over grpo's defaults (e.g. gpu_memory_utilization: 0.5,
    kv_cache_memory_bytes)."""

    @property
    def separate_engine(self) -> bool:
        """Whether the backend samples in an engine of its own (vllm: its own weights copy and
        kernels), so its log-probs differ slightly from the trainer's (train.loss.rollout_correction)."""
        return self.backend == "vllm"

    def __post_init__(self) -> None:
        _check_choice("sampling.backend", self.backend, ("hf", "vllm"))
        for name in ("n", "max_new_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise UserError(f"config: sampling.{name} must be >= 1, got {getattr(self, name)}")
        if self.temperature < 0:
            raise UserError(f"config: sampling.temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise UserError(f"config: sampling.top_p must be in (0, 1], got {self.top_p}")


@dataclass
class VerifierConfig:
    name: str = "math"
    """Verifier plugin name (see `grpo verifiers list`)."""
    weight: float = 1.0
    """Weight of this verifier's reward in the summed reward."""
    options: dict[str, Any] = field(default_factory=dict)
    """Keyword options passed to the verifier."""
    failure_value: float = 0.0
    """Reward given to a sample when this verifier raises, hangs or returns garbage for it."""
    hang_timeout: float = 60.0
    """Seconds per sample a verify() call may run before its samples count as timed out (0: no limit)."""

    def __post_init__(self) -> None:
        if not math.isfinite(self.weight) or not math.isfinite(self.failure_value):
            raise UserError(f"config: verifier {self.name!r} weight and failure_value must be finite")
        if not math.isfinite(self.hang_timeout) or self.hang_timeout < 0:
            raise UserError(
                f"config: verifier {self.name!r} hang_timeout must be a number >= 0, got {self.hang_timeout}"
            )


@dataclass
class EvalConfig:
    n: int = 16
    """Samples per problem for evaluation."""
    k: list[int] = field(default_factory=lambda: [1, 4, 16])
    """The k values reported for pass@k and maj@k (each <= n)."""
    metrics: list[str] = field(default_factory=lambda: ["maj@k", "pass@k"])
    """Metrics to report besides accuracy: maj@k, pass@k."""
    threshold: float = 1.0
    """A sample counts as correct when its reward is at least this."""

    def __post_init__(self) -> None:
        if self.n < 1:
            raise UserError(f"config: eval.n must be >= 1, got {self.n}")
        bad = [k for k in self.k if k < 1]
        if bad or not self.k:
            raise UserError(f"config: eval.k must be a non-empty list of integers >= 1, got {self.k}")
        too_big = [k for k in self.k if k > self.n]
        if too_big:
            raise UserError(f"config: eval.k={too_big[0]} > eval.n={self.n} samples per problem")
        unknown = [m for m in self.metrics if m not in ("maj@k", "pass@k")]
        if unknown:
            raise UserError(f"config: unknown metric {unknown[0]!r} in eval.metrics; expected maj@k or pass@k")


@dataclass
class RewardModelConfig:
    path: str = ""
    """A learned reward model rewards the policy instead of the verifiers (which then only label and report): a folder
    from `grpo rm train`, `bootstrap` (build one from model.path and train it on that model's samples first), or
    empty (off)."""
    kind: str = "prm"
    """prm (a score per step) or orm (one score per completion); checked against the folder's reward_model.json."""
    style: str = "math_shepherd"
    """Head shape: math_shepherd (P(+) among +/- at a step tag of a causal LM) or qwen (2-class token head at
    <extra_0>)."""
    retrain_every: int = 0
    """Iterative RL (DeepSeekMath Algorithm 1): every N steps the RM trains further on those steps' samples plus a
    replay of earlier ones (0: a fixed RM)."""
    replay_fraction: float = 0.1
    """Share of the historical (earlier iterations') labelled samples replayed into each retraining; DeepSeekMath:
    10%."""
    labels: str = "rule"
    """How the policy's samples are labelled for the RM: rule (the prm rule checker, or the verifiers for an orm) or
    rollouts (Math-Shepherd: K continuations per step)."""
    rollouts: int = 4
    """labels=rollouts: continuations sampled from each step (K)."""
    samples_per_iteration: int = 1024
    """Most samples of an iteration labelled and kept for the RM (a seeded subsample; bounds its time and the
    buffer)."""
    epochs: int = 1
    """Passes of each RM training over its data."""
    batch_size: int = 32
    """Samples per RM optimizer step."""
    lr: float = 1.0e-4
    """RM AdamW learning rate (constant)."""
    held_out_prompts: int = 16
    """The RM's fixed held-out set: the initial policy's samples of this many held-out prompts (accuracy and AUC in
    metrics.jsonl; 0: none)."""
    bootstrap_prompts: int = 256
    """path=bootstrap: training prompts whose samples train the starting RM."""

    def __post_init__(self) -> None:
        _check_choice("train.reward_model.kind", self.kind, ("prm", "orm"))
        _check_choice("train.reward_model.style", self.style, ("math_shepherd", "qwen"))
        _check_choice("train.reward_model.labels", self.labels, ("rule", "rollouts"))
        if not (math.isfinite(self.replay_fraction) and 0 <= self.replay_fraction <= 1):
            raise UserError(f"config: train.reward_model.replay_fraction must be in [0, 1], got {self.replay_fraction}")
        for name in ("rollouts", "samples_per_iteration", "epochs", "batch_size", "bootstrap_prompts"):
            if getattr(self, name) < 1:
                raise UserError(f"config: train.reward_model.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("retrain_every", "held_out_prompts"):
            if getattr(self, name) < 0:
                raise UserError(f"config: train.reward_model.{name} must be >= 0, got {getattr(self, name)}")
        if not math.isfinite(self.lr) or self.lr <= 0:
            raise UserError(f"config: train.reward_model.lr must be a number > 0, got {self.lr}")


@dataclass
class LoraConfig:
    rank: int = 0
    """LoRA rank r of the adapter (peft); 0: off, full fine-tuning."""
    alpha: float = 16.0
    """LoRA scaling numerator: the adapter's update is B A * alpha / rank."""
    dropout: float = 0.0
    """Dropout on the adapter's input while training (0: none, and mu = 1's importance ratio stays exactly 1)."""
    target_modules: list[str] = field(default_factory=lambda: ["all-linear"])
    """Names of the linear layers given an adapter (e.g. [q_proj, v_proj]); all-linear: all but the head."""

    def __post_init__(self) -> None:
        if self.rank < 0:
            raise UserError(f"config: train.lora.rank must be >= 0, got {self.rank}")
        if not math.isfinite(self.alpha) or self.alpha <= 0:
            raise UserError(f"config: train.lora.alpha must be a number > 0, got {self.alpha}")
        if not 0 <= self.dropout < 1:
            raise UserError(f"config: train.lora.dropout must be in [0, 1), got {self.dropout}")
        if not self.target_modules:
            raise UserError("config: train.lora.target_modules must name at least one module (or all-linear)")


@dataclass
class RunConfig:
    steps: int = 60
    """Policy optimisation steps; each samples one batch."""
    batch_size: int = 256
    """Completions per step (prompts per step = batch_size / sampling.n)."""
    micro_batch_size: int = 64
    """Sequences per forward/backward; gradients accumulate to the whole batch."""
    micro_batch_tokens: int = 2048
    """Token budget per forward/backward (sequences x longest length in it; 0: sequences only). Sequences are grouped
    by length either way, so padding stays small. 2048 measured fastest and leanest on CPU (benchmarks/README.md)."""
    gradient_checkpointing: bool = False
    """Recompute activations during backward instead of keeping them: less memory, about a third more compute."""
    mu: int = 1
    """Policy updates (optimizer steps) per sampled batch; 1 needs no old-policy forward pass."""
    parallel: str = "ddp"
    """Under torchrun (`grpo train --nproc N`): ddp (a whole model per rank, gradients averaged) or fsdp (FSDP2:
    parameters, gradients and optimizer state sharded over ranks, for models that do not fit one device)."""
    out_dir: str = "runs/train"
    """Run folder: checkpoints/, metrics.jsonl, config.yaml."""
    save_every: int = 0
    """Checkpoint every N steps (0: only at the end)."""
    keep_last: int = 2
    """Checkpoints kept on disk (older ones are deleted)."""
    log_completions: int = 0
    """Write the step's prompts, completions, rewards and advantages to rollouts/step-NNNNNN.jsonl every N steps,
    besides every save_every steps and the last step (0: only those)."""
    report_to: list[str] = field(default_factory=lambda: ["auto"])
    """Where metrics go besides metrics.jsonl: any of auto (TensorBoard when installed, else nothing, silently),
    tensorboard (an error when not installed), wandb (the wandb extra; WANDB_MODE=offline works offline);
    [] for none."""
    log_every: int = 10
    """When the output is not a terminal (a log file, a batch scheduler), print a one-line summary every N
    steps (0: never); a terminal shows it in the progress bar."""
    eval_n: int = 8
    """Samples per held-out problem for the before/after evaluation (0: skip it)."""
    eval_limit: int = 0
    """Held-out problems used for the before/after evaluation (0: all)."""
    eval_after: bool = True
    """Run the held-out evaluation when training ends (false: a staged run's middle stage skips it, a
    minute of a real model's budget; the next stage then has no before)."""
    eval_every: int = 0
    """Also run the held-out evaluation every N steps (eval_n samples per problem), logged and written to
    metrics.jsonl as `eval_accuracy` (0: only before and after)."""

    def __post_init__(self) -> None:
        _check_choice("train.run.parallel", self.parallel, ("ddp", "fsdp"))
        for name in ("steps", "batch_size", "micro_batch_size", "mu", "keep_last"):
            if getattr(self, name) < 1:
                raise UserError(f"config: train.run.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("eval_every", "log_every", "save_every", "log_completions", "micro_batch_tokens"):
            if getattr(self, name) < 0:
                raise UserError(f"config: train.run.{name} must be >= 0, got {getattr(self, name)}")
        unknown = [r for r in self.report_to if r not in REPORT_TO]
        if unknown:
            raise UserError(
                f"config: train.run.report_to: unknown {unknown[0]!r}; expected some of {', '.join(REPORT_TO)}"
            )


@dataclass
class OptimizerConfig:
    lr: float = 1e-6
    """AdamW peak learning rate, reached after warmup."""
    warmup_steps: int = 0
    """Linear learning-rate warmup, in optimizer steps."""
    schedule: str = "constant"
    """After warmup: constant, or linear / cosine decay to 0 at the last optimizer step (steps x mu)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    """AdamW betas."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm (0: off)."""

    def __post_init__(self) -> None:
        _check_non_negative("train.optimizer", self, ("lr", "weight_decay", "max_grad_norm"))
        if len(self.betas) != 2:
            raise UserError(f"config: train.optimizer.betas must be two numbers, got {self.betas}")


@dataclass
class LossConfig:
    beta: float = 0.04
    """KL coefficient to the reference model; 0 loads no reference model."""
    kl_estimator: str = "k3"
    """KL estimator in the loss: k1, k2 or k3."""
    eps_low: float = 0.2
    """Lower clip range: the ratio is clipped below at 1 - eps_low."""
    eps_high: float = 0.2
    """Upper clip range: the ratio is clipped above at 1 + eps_high (DAPO clip-higher: > eps_low)."""
    importance: str = "token"
    """Importance ratio: token (GRPO) or sequence (GSPO)."""
    aggregation: str = "sequence"
    """sequence (GRPO: per-sequence token mean, then mean), token (DAPO), constant (Dr. GRPO)."""
    ref_sync_every: int = 0
    """Iterative RL: every N steps the reference model of the KL term becomes a copy of the policy (0: never)."""
    rollout_correction: str = "token_truncate"
    """Sampler/trainer mismatch correction, with sampling.backend=vllm only (the hf backend's log-probs
    are the trainer's own): each token's loss weighted by the ratio pi_trainer / pi_sampler, per token
    or per sequence, capped (truncate) or zeroed above the cap (mask); none: off. Logged either way."""
    rollout_correction_cap: float = 2.0
    """Cap C of rollout_correction's importance ratio."""

    def __post_init__(self) -> None:
        _check_non_negative("train.loss", self, ("beta", "eps_low", "eps_high"))
        if self.ref_sync_every < 0:
            raise UserError(f"config: train.loss.ref_sync_every must be >= 0, got {self.ref_sync_every}")
        if not math.isfinite(self.rollout_correction_cap) or self.rollout_correction_cap < 1:
            raise UserError(
                f"config: train.loss.rollout_correction_cap must be a number >= 1, got {self.rollout_correction_cap}"
            )


@dataclass
class AdvantageConfig:
    kind: str = "outcome"
    """outcome (one advantage per completion), process (from the verifiers' step rewards) or correct (1 on a
    correct completion, 0 otherwise: RFT's coefficient)."""
    scale: str = "group"
    """Advantage normalisation: group std (GRPO), batch std, or none (Dr. GRPO)."""
    correct_threshold: float = 1.0
    """rft / online_rft: a completion counts as correct when its reward is at least this."""


@dataclass
class FilteringConfig:
    dynamic_sampling: bool = False
    """DAPO: drop groups whose rewards are all equal and sample more prompts to fill the batch."""
    max_sampling_rounds: int = 3
    """Dynamic sampling: most sampling rounds per step before training on what was collected."""
    overlong_filter: bool = False
    """DAPO: mask truncated completions out of the loss."""
    soft_overlong: bool = False
    """DAPO: soft overlong punishment added to the reward (uses sampling.max_new_tokens as L_max)."""
    overlong_cache: int = 16
    """DAPO: L_cache of the soft overlong punishment, in tokens."""

    def __post_init__(self) -> None:
        if self.max_sampling_rounds < 1:
            raise UserError(f"config: train.filtering.max_sampling_rounds must be >= 1, got {self.max_sampling_rounds}")


def _check_non_negative(prefix: str, obj: Any, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(obj, name)
        if not math.isfinite(value) or value < 0:
            raise UserError(f"config: {prefix}.{name} must be a finite number >= 0, got {value}")


@dataclass
class TrainConfig:
    run: RunConfig = field(default_factory=RunConfig)
    """Length, batch and micro-batch shape, parallelism, the run folder, logging and the held-out evaluation."""
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    """AdamW and its learning-rate schedule."""
    loss: LossConfig = field(default_factory=LossConfig)
    """The policy loss: clip ranges, importance ratio, aggregation, the KL term and its reference."""
    advantage: AdvantageConfig = field(default_factory=AdvantageConfig)
    """How rewards become advantages."""
    filtering: FilteringConfig = field(default_factory=FilteringConfig)
    """Which groups and completions reach the loss (DAPO's dynamic sampling and overlong handling)."""
    reward_model: RewardModelConfig = field(default_factory=RewardModelConfig)
    """A learned reward model and DeepSeekMath's iterative RL (Algorithm 1)."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """LoRA: train a low-rank adapter instead of the whole model (off while rank is 0)."""


FLAT_TRAIN_KEYS: dict[str, str] = {
    **{
        name: f"run.{name}"
        for name in (
            "steps",
            "batch_size",
            "micro_batch_size",
            "micro_batch_tokens",
            "gradient_checkpointing",
            "mu",
            "parallel",
            "out_dir",
            "save_every",
            "keep_last",
            "log_completions",
            "report_to",
            "log_every",
            "eval_n",
            "eval_limit",
            "eval_every",
        )
    },
    "lr": "optimizer.lr",
    "warmup_steps": "optimizer.warmup_steps",
    "lr_schedule": "optimizer.schedule",
    "weight_decay": "optimizer.weight_decay",
    "adam_betas": "optimizer.betas",
    "max_grad_norm": "optimizer.max_grad_norm",
    "beta": "loss.beta",
    "kl_estimator": "loss.kl_estimator",
    "eps_low": "loss.eps_low",
    "eps_high": "loss.eps_high",
    "importance": "loss.importance",
    "loss_aggregation": "loss.aggregation",
    "ref_sync_every": "loss.ref_sync_every",
    "rollout_correction": "loss.rollout_correction",
    "rollout_correction_cap": "loss.rollout_correction_cap",
    "advantage": "advantage.kind",
    "scale_rewards": "advantage.scale",
    "correct_threshold": "advantage.correct_threshold",
    "dynamic_sampling": "filtering.dynamic_sampling",
    "max_sampling_rounds": "filtering.max_sampling_rounds",
    "overlong_filter": "filtering.overlong_filter",
    "soft_overlong": "filtering.soft_overlong",
    "overlong_cache": "filtering.overlong_cache",
}
"""The flat `train:` keys of earlier versions (`train.beta`) -> their place in the grouped TrainConfig
(`train.loss.beta`). Flat keys in a YAML file, a `--set` or an old run's config.yaml are moved there
(`nest_train_keys`); `advantage` is both an old key and a group: a mapping is the group."""


def nest_train_keys(data: dict[str, Any]) -> dict[str, Any]:
    """`{"train": {"beta": 0.1}}` -> `{"train": {"loss": {"beta": 0.1}}}` through FLAT_TRAIN_KEYS; a flat
    key stated beside its grouped place in the same mapping is an error naming both."""
    train = data.get("train")
    if not isinstance(train, dict) or not any(_is_flat(k, v) for k, v in train.items()):
        return data
    nested = {key: value for key, value in train.items() if not _is_flat(key, value)}
    for key, value in train.items():
        if _is_flat(key, value):
            group, leaf = FLAT_TRAIN_KEYS[key].split(".")
            node = nested.setdefault(group, {})
            if not isinstance(node, dict):
                raise UserError(f"config: train.{group} must be a mapping, got {node!r}")
            if leaf in node:
                raise UserError(
                    f"config: train.{key} and train.{group}.{leaf} both set; keep train.{group}.{leaf} "
                    f"(train.{key} is its old name)"
                )
            nested[group] = {**node, leaf: value}
    return {**data, "train": nested}


def _is_flat(key: Any, value: Any) -> bool:
    return key in FLAT_TRAIN_KEYS and not (key == "advantage" and isinstance(value, dict))


def nested_key(key: str) -> str:
    """A dotted key with an old flat train key moved to its group: `train.beta` -> `train.loss.beta`."""
    parts = key.split(".")
    if len(parts) == 2 and parts[0] == "train" and parts[1] in FLAT_TRAIN_KEYS:
        return f"train.{FLAT_TRAIN_KEYS[parts[1]]}"
    return key


REPORT_TO = ("auto", "tensorboard", "wandb")
"""Trackers `train.run.report_to` may name (grpo_cli.training.tracking)."""


@dataclass
class Config:
    seed: int = 0
    """Seed for sampling, data order and initialisation."""
    algorithm: str = "grpo"
    """grpo; rft (learn from the initial model's correct samples); online_rft (from the current policy's); sft (the
    dataset's solutions). DeepSeekMath section 5.2."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The policy model."""
    data: DataConfig = field(default_factory=DataConfig)
    """Problems and prompt formatting."""
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    """How completions are generated."""
    verifiers: list[VerifierConfig] = field(default_factory=lambda: [VerifierConfig()])
    """Reward sources; the reward is the weighted sum of their rewards."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Evaluation settings for `grpo eval`."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Policy optimisation settings for `grpo train`."""

    def check_training(self) -> None:
        """Checks that concern `grpo train` only (so `grpo sample --n 3` is not refused for them).
        The variant names are checked against the registries that own them (grpo_cli.algorithms);
        they import torch, which only training needs."""
        from grpo_cli.algorithms import advantages, loss, paradigms, schedules

        t = self.train
        for key, value, registry in (
            ("algorithm", self.algorithm, paradigms.ALGORITHMS),
            ("train.loss.kl_estimator", t.loss.kl_estimator, loss.KL_ESTIMATORS),
            ("train.loss.aggregation", t.loss.aggregation, loss.AGGREGATIONS),
            ("train.loss.importance", t.loss.importance, loss.IMPORTANCE),
            ("train.advantage.kind", t.advantage.kind, advantages.ADVANTAGES),
            ("train.advantage.scale", t.advantage.scale, advantages.SCALES),
            ("train.optimizer.schedule", t.optimizer.schedule, schedules.LR_SCHEDULES),
        ):
            _check_choice(key, value, registry.names())
        _check_choice(
            "train.loss.rollout_correction", t.loss.rollout_correction, ("none", *loss.ROLLOUT_CORRECTIONS.names())
        )
        if self.train.run.batch_size % self.sampling.n:
            raise UserError(
                f"config: train.run.batch_size={self.train.run.batch_size} must be a multiple of "
                f"sampling.n={self.sampling.n} (whole groups)"
            )
        if self.train.reward_model.path and any(v.name == "prm" for v in self.verifiers):
            raise UserError(
                "config: train.reward_model scores with the `prm` verifier itself; drop `prm` from verifiers "
                "(they label the RM's samples and report accuracy)"
            )
        if self.sampling.backend == "vllm" and self.train.run.parallel == "fsdp":
            # the engine reloads whole weights from the policy, which FSDP keeps sharded
            raise UserError(
                "config: sampling.backend=vllm does not work with train.run.parallel=fsdp; use ddp or the hf backend"
            )
        if self.train.lora.rank and self.train.run.parallel == "fsdp":
            # not built: adapter checkpoints and merged weights for the sampler are gathered without FSDP
            raise UserError("config: train.lora does not work with train.run.parallel=fsdp; use train.run.parallel=ddp")
        if self.train.lora.rank and self.train.loss.ref_sync_every:
            raise UserError(
                "config: train.loss.ref_sync_every needs full fine-tuning: with train.lora the reference is the base "
                "model"
            )


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UserError(f"config: {key} must be one of {', '.join(choices)}; got {value!r}")


# ----------------------------------------------------------------------------- building from dicts


def _nearest(word: str, options: list[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.5)
    if close:
        return f" (did you mean '{prefix}{close[0]}'?)"
    return f"; valid keys: {', '.join(prefix + o for o in options)}"


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Convert a YAML/CLI value to the field's declared type, or raise a one-line UserError."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise UserError(f"config: {key} must be a mapping, got {value!r}")
        return _build(tp, value, key + ".")
    if origin in (list, tuple):
        (item_tp,) = typing.get_args(tp)[:1]
        if isinstance(value, str) and item_tp in (int, str, float):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise UserError(f"config: {key} must be a list, got {value!r}")
        return [_coerce(f"{key}[{i}]", v, item_tp) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"config: {key} must be a mapping, got {value!r}")
        return dict(value)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(key, value, args[0])
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise UserError(f"config: {key} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise UserError(f"config: {key} must be an integer, got {value!r}")
        try:
            return int(value)
        except ValueError:
            raise UserError(f"config: {key} must be an integer, got {value!r}") from None
    if tp is float:
        if isinstance(value, bool):
            raise UserError(f"config: {key} must be a number, got {value!r}")
        try:
            return float(value)  # YAML reads `1e-6` as a string; accept it
        except (TypeError, ValueError):
            raise UserError(f"config: {key} must be a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, (dict, list)) or value is None:
            raise UserError(f"config: {key} must be a string, got {value!r}")
        return str(value)
    return value


def _build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            if cls is TrainConfig:  # suggest among the grouped keys, the old flat ones named by their new place
                near = difflib.get_close_matches(str(key), [*names, *FLAT_TRAIN_KEYS], n=1, cutoff=0.5)
                if near and near[0] in FLAT_TRAIN_KEYS:
                    raise UserError(
                        f"config: unknown key '{prefix}{key}' (did you mean '{prefix}{FLAT_TRAIN_KEYS[near[0]]}'?)"
                    )
            raise UserError(f"config: unknown key '{prefix}{key}'{_nearest(str(key), names, prefix)}")
        kwargs[key] = _coerce(prefix + key, value, hints[key])
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any]) -> Config:
    """Build and validate a Config from a nested dict (unknown keys are errors; old flat `train:`
    keys are moved to their groups)."""
    return _build(Config, nest_train_keys(data))


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "options":
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


# ----------------------------------------------------------------------------- presets and overrides


def _presets_dir() -> Any:
    try:
        return resources.files("grpo_cli.presets")
    except ModuleNotFoundError:
        # Run from a source checkout: its grpo_cli/ shadows the install's mapping of presets/.
        return Path(__file__).resolve().parent.parent / "presets"


def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in _presets_dir().iterdir() if p.name.endswith(".yaml"))


def preset_text(name_or_path: str) -> tuple[str, str]:
    """Return (source description, YAML text) of a built-in preset name or a YAML file path."""
    if name_or_path.endswith((".yaml", ".yml")) or os.sep in name_or_path:
        path = Path(name_or_path)
        if not path.is_file():
            raise UserError(f"preset file not found: {path}")
        return str(path), path.read_text(encoding="utf-8")
    names = preset_names()
    if name_or_path not in names:
        hint = difflib.get_close_matches(name_or_path, names, n=1)
        suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
        raise UserError(f"unknown preset '{name_or_path}'{suggestion}; available: {', '.join(names)}")
    res = _presets_dir() / f"{name_or_path}.yaml"
    return f"preset {name_or_path}", res.read_text(encoding="utf-8")


def _parse_yaml(source: str, text: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise UserError(f"{source}{where}: invalid YAML ({getattr(e, 'problem', e)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{source}: expected a mapping of config keys at the top level")
    return data


def parse_set(item: str) -> dict[str, Any]:
    """`a.b=c` -> {"a": {"b": c}}: c as written for a string field (`data.instruction=Answer as: #### N`)
    unless quoted, else parsed as YAML (so numbers, lists, booleans and escapes work)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise UserError(f"--set {item!r}: expected KEY=VALUE, e.g. --set sampling.temperature=0.7")
    if _field_type(nested_key(key.strip())) is str and not raw.strip().startswith(("'", '"')):
        return parse_set_value(key.strip(), raw)  # a quoted value is YAML: `'data.template="Q: {prompt}\n"'`
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return parse_set_value(key.strip(), value)


def _field_type(key: str) -> Any:
    """The declared type of a dotted config key (`str | None` counts as str), or None when the key
    names no field (the error then comes from building the config)."""
    tp: Any = Config
    for part in key.split("."):
        if not dataclasses.is_dataclass(tp) or part not in {f.name for f in dataclasses.fields(tp)}:
            return None
        tp = typing.get_type_hints(tp)[part]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        tp = args[0] if len(args) == 1 else tp
    return tp


DEFAULT_PRESET = "tiny"


def load_config(
    preset: str | None = None,
    sets: list[str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> Config:
    """Resolve the config: defaults < preset (default `tiny`) < `--set` items < CLI `overrides`.

    `overrides` uses dotted keys (`{"sampling.n": 4}`); None values are ignored (option not given).
    A preset's `stages` are validated here; this is the base config they all start from.
    """
    return base_config(config_layers(preset, sets, overrides))


# ----------------------------------------------------------------------------- stages


STAGE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
STAGE_SET_PREFIX = "stages."


@dataclass(frozen=True)
class Stage:
    """One entry of a preset's `stages:` list: a name and the dotted keys (as `--set` takes them) it
    sets over the base config, kept as written."""

    name: str
    set: dict[str, Any]


@dataclass(frozen=True)
class ConfigLayers:
    """What a config resolves from, each layer a nested dict with the flat train keys grouped:
    `preset` (its keys less `stages`), its `stages`, the user's `user` layers (`--set` items, then
    the explicit options, in order) and `user_stage` (`--set stages.NAME.KEY=V`, by stage name)."""

    source: str
    preset: dict[str, Any]
    stages: list[Stage]
    user: list[dict[str, Any]]
    user_stage: dict[str, list[dict[str, Any]]]


def config_layers(
    preset: str | None = None,
    sets: list[str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> ConfigLayers:
    """Read the preset and the user's overrides into layers, validating the preset and its stages
    (an error names the preset and the stage entry) and the `--set stages.NAME.KEY` items."""
    source, text = preset_text(preset or DEFAULT_PRESET)
    data = _parse_yaml(source, text)
    raw_stages = data.pop("stages", None)
    # Validate the preset alone first so an error names the preset file, not the merged result.
    try:
        config_from_dict(data)
        stages = parse_stages(raw_stages) if raw_stages is not None else []
        base = nest_train_keys(data)  # each layer grouped before merging, so a later flat key still wins
        for i, stage in enumerate(stages):
            _check_stage_layer(f"stages[{i}].set", base, stage.set, first=i == 0)
    except UserError as e:
        raise UserError(f"{source}: {e}") from None
    user: list[dict[str, Any]] = []
    user_stage: dict[str, list[dict[str, Any]]] = {}
    names = [s.name for s in stages]
    for item in sets or []:
        if not item.startswith(STAGE_SET_PREFIX):
            user.append(nest_train_keys(parse_set(item)))
            continue
        name, _, rest = item[len(STAGE_SET_PREFIX) :].partition(".")
        if name not in names:
            known = f"its stages: {', '.join(names)}" if names else "it has no stages"
            raise UserError(f"--set {item!r}: {source} has no stage named {name!r} ({known})")
        layer = nest_train_keys(parse_set(rest))
        _check_stage_layer(f"--set {item!r}", base, layer, first=name == names[0])
        user_stage.setdefault(name, []).append(layer)
    for key, value in (overrides or {}).items():
        if value is not None:
            user.append(nest_train_keys(parse_set_value(key, value)))
    return ConfigLayers(source, base, stages, user, user_stage)


def base_config(layers: ConfigLayers) -> Config:
    """The config without stages: preset < `--set` < options."""
    data = layers.preset
    for layer in layers.user:
        data = _merge(data, layer)
    return config_from_dict(data)


def stage_configs(layers: ConfigLayers) -> list[tuple[str, Config]]:
    """Each stage's config: preset < the stage's `set` < the user's `--set` and options < the user's
    `--set stages.NAME.KEY`; its run folder is `<out_dir>/<i+1>-<name>` of the base config's
    out_dir. Chaining a stage to the previous one's checkpoint (`model.path`) is the trainer's
    (training/stages.py). [] for a config without stages."""
    out_dir = base_config(layers).train.run.out_dir
    configs = []
    for i, stage in enumerate(layers.stages):
        data = _merge(layers.preset, stage_layer(stage.set))
        for layer in (*layers.user, *layers.user_stage.get(stage.name, [])):
            data = _merge(data, layer)
        run_dir = str(Path(out_dir) / f"{i + 1}-{stage.name}")
        configs.append((stage.name, config_from_dict(_merge(data, {"train": {"run": {"out_dir": run_dir}}}))))
    return configs


def parse_stages(raw: Any) -> list[Stage]:
    """A preset's `stages:` value -> its Stages; a one-line UserError naming the entry otherwise."""
    if not isinstance(raw, list) or not raw:
        raise UserError("stages: expected a non-empty list of {name: NAME, set: {KEY: VALUE, ...}}")
    stages: list[Stage] = []
    for i, entry in enumerate(raw):
        where = f"stages[{i}]"
        if not isinstance(entry, dict):
            raise UserError(f"{where}: expected a mapping with name and set, got {entry!r}")
        extra = sorted(str(k) for k in entry if k not in ("name", "set"))
        if extra:
            raise UserError(f"{where}: unknown key {extra[0]!r}; a stage has only name and set")
        name = entry.get("name")
        if not isinstance(name, str) or not STAGE_NAME.match(name):
            raise UserError(f"{where}.name: expected a simple identifier (letters, digits, _ and -), got {name!r}")
        if name in (s.name for s in stages):
            raise UserError(f"{where}.name: duplicate stage name {name!r}")
        if "set" not in entry:
            raise UserError(f"{where}.set: missing; expected a mapping of config keys to values")
        keys = entry["set"]
        if not isinstance(keys, dict) or not all(isinstance(k, str) and k for k in keys):
            raise UserError(f"{where}.set: expected a mapping of dotted config keys to values, got {keys!r}")
        stages.append(Stage(name, dict(keys)))
    return stages


def stage_layer(keys: dict[str, Any]) -> dict[str, Any]:
    """A stage's `set` (`{"train.steps": 3}`) as one nested layer (`{"train": {"run": {"steps": 3}}}`)."""
    layer: dict[str, Any] = {}
    for key, value in keys.items():
        layer = _merge(layer, parse_set_value(key, value))
    return nest_train_keys(layer)


def _check_stage_layer(where: str, base: dict[str, Any], keys: dict[str, Any], *, first: bool) -> None:
    """A stage's keys (dotted, or a nested layer) build a valid config over the preset and leave the
    keys the stages own alone."""
    try:
        layer = stage_layer(keys)
    except UserError as e:
        raise UserError(f"{where}: {str(e).removeprefix('config: ')}") from None
    if "stages" in layer:
        raise UserError(f"{where}: stages cannot be set inside a stage")
    if _has_key(layer, "train.run.out_dir"):
        raise UserError(f"{where}: train.run.out_dir is set per stage (<out_dir>/<i>-<name>); set it outside stages")
    if not first and _has_key(layer, "model.path"):
        raise UserError(f"{where}: model.path of a later stage is the previous stage's final checkpoint")
    try:
        config_from_dict(_merge(base, layer))
    except UserError as e:
        raise UserError(f"{where}: {str(e).removeprefix('config: ')}") from None


def _has_key(data: dict[str, Any], key: str) -> bool:
    node: Any = data
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def stages_preset(base: Config, configs: list[tuple[str, Config]]) -> dict[str, Any]:
    """A preset that resolves, with no other input, to `base` and to each stage's config: the base
    config's keys plus, per stage, the leaf keys where the stage's config differs from it (less
    its run folder, and a later stage's model.path). Written as a staged run's config.yaml."""
    base_flat = _flat_items(config_to_dict(base))
    stages = []
    for i, (name, cfg) in enumerate(configs):
        owned = {"train.run.out_dir", *(["model.path"] if i else [])}
        flat = _flat_items(config_to_dict(cfg))
        keys = {k: v for k, v in flat.items() if k not in owned and (k not in base_flat or base_flat[k] != v)}
        stages.append({"name": name, "set": keys})
    return {**config_to_dict(base), "stages": stages}


def _flat_items(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings -> dotted leaf keys (lists and empty mappings are leaves)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out.update(_flat_items(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


@cache
def _default_preset_data() -> dict[str, Any]:
    source, text = preset_text(DEFAULT_PRESET)
    return nest_train_keys(_parse_yaml(source, text))


def default_value(key: str) -> str:
    """The value a dotted config key takes when nothing overrides it (the default preset's, else the
    field's), as help text shows it; reads YAML only, so `--help` stays instant."""
    key = nested_key(key)
    node: Any = _default_preset_data()
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if node is None:
        node = Config()
        for part in key.split("."):
            node = getattr(node, part)
    if isinstance(node, list):
        return ",".join(str(v["name"]) if isinstance(v, dict) and "name" in v else str(v) for v in node)
    return str(node)


def parse_set_value(key: str, value: Any) -> dict[str, Any]:
    """`("a.b", c)` -> {"a": {"b": c}}."""
    out: dict[str, Any] = {}
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False, allow_unicode=True)


def write_config_beside(cfg: Config, output: Path) -> Path:
    """Write the resolved config next to an output file (`out.jsonl` -> `out.config.yaml`)."""
    target = output / "config.yaml" if output.is_dir() else output.with_name(output.stem + ".config.yaml")
    target.write_text(dump_config(cfg), encoding="utf-8")
    return target


# ----------------------------------------------------------------------------- field documentation


@cache
def field_docs(cls: type) -> dict[str, str]:
    """Docstrings written as the string literal after each dataclass field."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for prev, node in zip(body, body[1:]):
        if (
            isinstance(prev, ast.AnnAssign)
            and isinstance(prev.target, ast.Name)
            and isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            docs[prev.target.id] = " ".join(node.value.value.split())  # wrapped lines -> one line
    return docs


def documented_keys(cls: type = Config, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, type, doc) for every leaf field, for `grpo presets show --docs`."""
    rows = []
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows.extend(documented_keys(tp, f"{prefix}{f.name}."))
        else:
            name = getattr(tp, "__name__", None) or str(tp).replace("typing.", "")
            rows.append((prefix + f.name, name, docs.get(f.name, "")))
    return rows


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside brackets and quotes, so `extract=[boxed,hash]` stays one item."""
    parts, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def parse_verifier_option(text: str) -> VerifierConfig:
    """`NAME[:key=value,...]` (the `--verifier` option): `weight`, `failure_value` and `hang_timeout`
    set those fields; every other key becomes a verifier option (values parsed as YAML, so a list is
    `key=[a,b]`)."""
    name, _, rest = text.partition(":")
    if not name.strip():
        raise UserError(f"--verifier {text!r}: expected NAME[:key=value,...]")
    spec: dict[str, Any] = {"name": name.strip(), "options": {}}
    for item in filter(None, (s.strip() for s in _split_top_level(rest))):
        key, sep, raw = item.partition("=")
        if not sep:
            raise UserError(f"--verifier {text!r}: expected key=value, got {item!r}")
        value = yaml.safe_load(raw)
        if isinstance(value, str) and re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+", value):
            value = float(value)  # YAML 1.1 reads a bare 1e-4 as text
        if key in ("weight", "failure_value", "hang_timeout"):
            spec[key] = value
        else:
            spec["options"][key] = value
    return _build(VerifierConfig, spec, "verifier.")
