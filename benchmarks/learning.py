"""grpo against TRL on a real model: held-out accuracy against training time, same model, data, reward and
evaluation, for the same budget.

    python benchmarks/learning.py --model SMOL --out runs/bench-learning [--minutes 30] [--seed 0]
        [--sides grpo,trl] [--trl-settings mirror,sft-hi-lr,grpo-lo-lr] [--threads 2]
    python benchmarks/learning.py --out runs/bench-learning --plot-only

grpo: `grpo train --preset smollm2 --model SMOL`, its stages' `train.run.eval_every` set so the held-out
evaluation of the in-memory policy (the code `grpo eval` runs) lands about every --every minutes of training.
TRL (1.16, `pip install trl`; never a dependency of grpo): `SFTTrainer` on the same prompts and worked solutions
for --sft-minutes (the preset's SFT stage trains about 15 minutes), then `GRPOTrainer` for the rest of --minutes,
its reward function our math verifier (the scoring stage grpo runs). A callback saves the model every --every
minutes of training and at the end; `grpo eval --preset smollm2` then evaluates every save.
Same on both sides: prompts rendered by grpo (the preset's chat template, system prompt and instruction), the
held-out set (the first 200 problems of arith:test, 4 samples each at the preset's temperature and length),
bf16 compute with float32 master weights, the thread count. TRL has no dynamic sampling; each setting is listed
in TRL_SETTINGS.
Time axis: training time, evaluations excluded on both sides (grpo: the sum of its steps' step_time over the
stages; TRL: wall time inside `train()` less the time spent saving). A mark's value is the last evaluation at or
before the mark (half a minute of slack: a save lands at the end of the step that crosses it). grpo runs a fixed
number of steps (about 26 minutes of training in 30 of wall time, evaluations and loading included): its last
point stands for the 30-minute mark, while TRL trains the whole --minutes, which favours TRL.

Writes OUT/learning.json (every point) and OUT/learning.png; prints accuracy at each mark.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

MARKS = (10.0, 20.0, 30.0)
SLACK_MIN = 0.5
TRL_SETTINGS: dict[str, dict[str, float]] = {
    # the preset's own settings, translated
    "mirror": {"sft_lr": 3e-5, "grpo_lr": 1e-5, "temperature": 0.7},
    # a faster SFT warm-up
    "sft-hi-lr": {"sft_lr": 1e-4, "grpo_lr": 1e-5, "temperature": 0.7},
    # gentler RL, more exploration
    "grpo-lo-lr": {"sft_lr": 3e-5, "grpo_lr": 3e-6, "temperature": 1.0},
}
"""TRL's settings tried; the best at 30 minutes is TRL's figure. Everything else as the preset: SFT batches of
8 with 5 warm-up steps, GRPO 4 prompts x 8, 48 tokens, no KL, sequence-mean loss (`grpo`), group-scaled rewards."""


# ------------------------------------------------------------------------------ points and marks (pure)


def grpo_points(stages: dict[str, Any], metrics: list[list[dict[str, Any]]]) -> list[tuple[float, float]]:
    """(training minutes, held-out accuracy) of a staged run: its `stages.json` and each stage's metrics rows.
    Minutes are the running sum of step_time; a stage's `eval_accuracy` rows and its after-evaluation are
    points, the first stage's before-evaluation is the point at 0."""
    points = [(0.0, float(stages["accuracy_before"]))]
    elapsed = 0.0
    for stage, rows in zip(stages["stages"], metrics):
        for row in rows:
            elapsed += float(row.get("step_time", 0.0))
            if "eval_accuracy" in row:
                points.append((elapsed / 60, float(row["eval_accuracy"])))
        if stage.get("accuracy_after") is not None:
            points.append((elapsed / 60, float(stage["accuracy_after"])))
    return points


def value_at(points: list[tuple[float, float]], mark: float, slack: float = SLACK_MIN) -> float | None:
    """The last point's accuracy at or before `mark` (+ slack) minutes, or None when there is none."""
    before = [acc for minute, acc in sorted(points) if minute <= mark + slack]
    return before[-1] if before else None


def marks_table(curves: dict[str, list[tuple[float, float]]], marks: tuple[float, ...] = MARKS) -> list[str]:
    """Rows of held-out accuracy (%) at each mark, one per curve."""
    head = f"{'':<22}" + "".join(f"{f'{m:g} min':>10}" for m in marks)
    lines = [head]
    for name, points in curves.items():
        cells = [value_at(points, m) for m in marks]
        lines.append(f"{name:<22}" + "".join(f"{'-' if v is None else f'{100 * v:.1f}%':>10}" for v in cells))
    return lines


# ------------------------------------------------------------------------------------------- grpo side


def run_grpo(args: argparse.Namespace) -> list[tuple[float, float]]:
    out = args.out / "grpo"
    sft_every, grpo_every = args.grpo_eval_every
    cmd = [
        *args.grpo,
        "train",
        "--preset",
        "smollm2",
        "--model",
        str(args.model),
        "--out",
        str(out),
        "--seed",
        str(args.seed),
        "--threads",
        str(args.threads),
        "--set",
        f"stages.sft.train.run.eval_every={sft_every}",
        "--set",
        f"stages.grpo.train.run.eval_every={grpo_every}",
        *(x for item in args.grpo_set for x in ("--set", item)),
    ]
    with (args.out / "grpo.log").open("w") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)
    return read_grpo(out)


def read_grpo(out: Path) -> list[tuple[float, float]]:
    stages = json.loads((out / "stages.json").read_text())
    metrics = [
        [json.loads(line) for line in (Path(s["run_dir"]) / "metrics.jsonl").read_text().splitlines() if line]
        for s in stages["stages"]
    ]
    return grpo_points(stages, metrics)


# -------------------------------------------------------------------------------------------- TRL side


def rendered_problems(model: Path) -> list[dict[str, Any]]:
    """arith:train as grpo's smollm2 preset renders it: prompt text, answer, worked solution."""
    from transformers import AutoTokenizer

    from grpo_cli.config import load_config
    from grpo_cli.pipeline.sample import problems_from, render_prompts

    cfg = load_config("smollm2")
    problems = problems_from(cfg.data.train, cfg.data)
    prompts = render_prompts(problems, AutoTokenizer.from_pretrained(str(model)), cfg.data)
    return [
        {"prompt": text, "answer": p["answer"], "id": p["id"], "solution": p[cfg.data.solution_field]}
        for text, p in zip(prompts, problems)
    ]


class TrainingClock:
    """Training minutes across TRL's trainers, saves excluded; a TrainerCallback (built in `callback`) saves
    the model every `every` minutes and stops its trainer at `until` minutes."""

    def __init__(self, save_dir: Path, every: float) -> None:
        self.save_dir, self.every = save_dir, every
        self.spent = 0.0  # minutes of training before the current trainer
        self.next_save = every
        self.started: float | None = None  # perf_counter at the current trainer's start; None between trainers
        self.paused = 0.0

    def minutes(self) -> float:
        if self.started is None:
            return self.spent
        return self.spent + (time.perf_counter() - self.started - self.paused) / 60

    def save(self, model: Any, tokenizer: Any) -> None:
        t = time.perf_counter()
        folder = self.save_dir / f"min-{self.minutes():06.2f}"
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        self.paused += time.perf_counter() - t

    def callback(self, until: float, tokenizer: Any) -> Any:
        from transformers import TrainerCallback

        clock = self

        class Clock(TrainerCallback):
            def on_train_begin(self, *a: Any, **k: Any) -> None:
                clock.started, clock.paused = time.perf_counter(), 0.0

            def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **k: Any) -> None:
                if clock.minutes() >= until:
                    control.should_training_stop = True
                elif clock.minutes() >= clock.next_save:
                    clock.save(model, tokenizer)
                    clock.next_save += clock.every

            def on_train_end(self, *a: Any, **k: Any) -> None:
                clock.spent, clock.started = clock.minutes(), None

        return Clock()


def trl_worker(args: argparse.Namespace) -> None:
    """One TRL setting, in its own process: SFT for --sft-minutes, GRPO to --minutes, saves under OUT/trl-NAME."""
    import tempfile

    import torch
    import trl_side
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer, SFTConfig, SFTTrainer

    from grpo_cli.config import load_config
    from grpo_cli.pipeline.scoring import opened_verifiers

    setting = TRL_SETTINGS[args.worker]
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rows = rendered_problems(args.model)
    tokenizer = AutoTokenizer.from_pretrained(str(args.model))
    model = AutoModelForCausalLM.from_pretrained(str(args.model), dtype=torch.float32)
    save_dir = args.out / f"trl-{args.worker}"
    clock = TrainingClock(save_dir, args.every)
    common = {
        "use_cpu": True,
        "bf16": True,
        "report_to": "none",
        "save_strategy": "no",
        "logging_steps": 10,
        "disable_tqdm": True,
        "seed": args.seed,
        "lr_scheduler_type": "constant_with_warmup",
        "adam_beta1": 0.9,
        "adam_beta2": 0.99,
        "weight_decay": 0.0,
        "max_grad_norm": 1.0,
        "max_steps": 1_000_000,  # the clock stops training
        "dataloader_num_workers": 0,
    }
    if args.sft_minutes > 0:
        sft = SFTTrainer(
            model=model,
            args=SFTConfig(
                output_dir=tempfile.mkdtemp(prefix="trl-sft-"),
                per_device_train_batch_size=8,
                learning_rate=setting["sft_lr"],
                warmup_steps=5,
                completion_only_loss=True,
                **common,
            ),
            train_dataset=Dataset.from_list([{"prompt": r["prompt"], "completion": r["solution"]} for r in rows]),
            processing_class=tokenizer,
            callbacks=[clock.callback(args.sft_minutes, tokenizer)],
        )
        sft.train()
        model = sft.model
    specs = load_config("smollm2").verifiers
    with opened_verifiers(specs) as verifiers:
        math_reward = trl_side.math_reward(verifiers)

        tokenizer.padding_side = "left"
        grpo = GRPOTrainer(
            model=model,
            reward_funcs=math_reward,
            args=GRPOConfig(
                output_dir=tempfile.mkdtemp(prefix="trl-grpo-"),
                per_device_train_batch_size=32,
                gradient_accumulation_steps=1,
                num_generations=8,
                max_completion_length=48,
                temperature=setting["temperature"],
                top_p=1.0,
                top_k=0,
                beta=0.0,
                num_iterations=1,
                loss_type="grpo",
                scale_rewards="group",
                learning_rate=setting["grpo_lr"],
                warmup_steps=3,
                use_vllm=False,
                gradient_checkpointing=False,
                log_completions=False,
                **common,
            ),
            train_dataset=Dataset.from_list([{k: r[k] for k in ("prompt", "answer", "id")} for r in rows]),
            processing_class=tokenizer,
            callbacks=[clock.callback(args.minutes, tokenizer)],
        )
        grpo.train()
    clock.save(grpo.model, tokenizer)  # the end point


def run_trl(args: argparse.Namespace, name: str) -> list[tuple[float, float]]:
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, __file__, "--worker", name, "--model", str(args.model), "--out", str(args.out)]
    for key in ("minutes", "sft_minutes", "every", "seed", "threads"):
        cmd += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    with (args.out / f"trl-{name}.log").open("w") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT, env=env)
    return evaluate_saves(args, args.out / f"trl-{name}")


def evaluate_saves(args: argparse.Namespace, folder: Path) -> list[tuple[float, float]]:
    """`grpo eval` on every save of a TRL run (the held-out set of the preset's training evaluation); the
    untrained model is the point at 0."""
    points = []
    for save in [args.model, *sorted(folder.glob("min-*"))]:
        minute = 0.0 if save == args.model else float(save.name[4:])
        cached = folder / f"eval-{minute:06.2f}.json"
        if not cached.exists():
            cmd = [*args.grpo, "eval", "--preset", "smollm2", "--model", str(save), "--n", "4"]
            cmd += ["--set", "data.limit=200", "--seed", str(args.seed), "--threads", str(args.threads), "--json"]
            cmd += ["--quiet"]
            proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
            cached.write_text(proc.stdout)
        result = json.loads(cached.read_text())["results"]
        points.append((minute, float(next(iter(result.values()))["accuracy"])))
    return points


# ------------------------------------------------------------------------------------------------ main


def plot(curves: dict[str, list[tuple[float, float]]], out: Path, model: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, points in curves.items():
        xs, ys = zip(*sorted(points))
        ax.plot(xs, [100 * y for y in ys], "o-" if name == "grpo" else "s--", label=name, lw=2 if name == "grpo" else 1)
    for m in MARKS:
        ax.axvline(m, color="grey", lw=0.5)
    ax.set_xlabel("training time (min), evaluations excluded, 2 CPU cores")
    ax.set_ylabel("held-out accuracy (%), 200 x 4")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(f"{model} on the built-in arithmetic task: grpo --preset smollm2 vs TRL", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=90)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, help="SmolLM2-135M-Instruct: a Hugging Face folder")
    p.add_argument("--out", type=Path, default=Path("runs/bench-learning"))
    p.add_argument("--minutes", type=float, default=30.0, help="TRL's training budget")
    p.add_argument("--sft-minutes", type=float, default=15.0, help="TRL's SFT share of it (0: GRPO alone)")
    p.add_argument("--every", type=float, default=5.0, help="minutes of training between TRL's saves")
    p.add_argument(
        "--grpo-eval-every",
        type=lambda s: tuple(int(x) for x in s.split(",")),
        default=(125, 30),
        help="grpo's eval_every in its SFT and GRPO stages (about 5 minutes each)",
    )
    p.add_argument("--grpo-set", action="append", default=[], help="more --set items for grpo train")
    p.add_argument("--sides", default="grpo,trl")
    p.add_argument("--trl-settings", default=",".join(TRL_SETTINGS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--grpo", nargs="+", default=[str(Path(sys.executable).with_name("grpo"))], help=argparse.SUPPRESS)
    p.add_argument("--plot-only", action="store_true", help="redraw from OUT/learning.json")
    p.add_argument("--worker", choices=tuple(TRL_SETTINGS), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return trl_worker(args)
    args.out.mkdir(parents=True, exist_ok=True)
    record = args.out / "learning.json"
    curves: dict[str, list[tuple[float, float]]] = json.loads(record.read_text()) if record.exists() else {}
    if not args.plot_only:
        if args.model is None:
            p.error("--model is needed to run")
        sides = args.sides.split(",")
        if "grpo" in sides:
            curves["grpo"] = run_grpo(args)
            record.write_text(json.dumps(curves, indent=1))
        for name in args.trl_settings.split(",") if "trl" in sides else []:
            curves[f"trl:{name}"] = run_trl(args, name)
            record.write_text(json.dumps(curves, indent=1))
    print("\n".join(marks_table(curves)))
    plot(curves, args.out / "learning.png", args.model.name if args.model else "SmolLM2-135M-Instruct")
    print(f"-> {record}, {args.out / 'learning.png'}")


if __name__ == "__main__":
    main()
