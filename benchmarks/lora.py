"""LoRA against full fine-tuning: peak memory and time of one GRPO update on the same batch.

    python benchmarks/lora.py [--model DIR] [--rows 16] [--completion 32] [--steps 2] [--rank 16] [--threads 0]

One update = the reference pass (beta 0.04: full fine-tuning keeps a second, frozen copy of the
model; LoRA runs the same module with its adapter off), forward+backward over the batch and the
AdamW step (`grpo_cli.training.update.policy_update`, as `grpo train` runs it). Sampling is left out,
so both sides train on identical tokens: real chat-template prompts of the arithmetic task, and
completions of fixed length drawn uniformly from the vocabulary. Each side runs in its own
subprocess (`--side`); peak memory is the process's VmHWM (model, reference, optimizer state and
step included), "step mem" the peak minus the RSS after loading, before the first update. The
update time is the median over `--steps` updates after one warm-up update; the sides alternate
run by run, so machine load drifts into both alike. Default model: SmolLM2-135M-Instruct at
/work/models/smollm2 (an HF folder; see tests/test_lora_smollm2.py for building it from the wheel).
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

ROOT = Path(__file__).resolve().parent.parent


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def side(args: argparse.Namespace) -> dict:
    import torch

    from grpo_cli.builtin import arith
    from grpo_cli.config import load_config
    from grpo_cli.models import lora
    from grpo_cli.pipeline.sample import load_policy, render_prompts
    from grpo_cli.sampling.base import Completion
    from grpo_cli.training import optim
    from grpo_cli.training.batch import Batch, pack
    from grpo_cli.training.session import load_frozen

    sets = [
        f"model.threads={args.threads}",
        "model.impl=" + args.impl,
        f"sampling.n={args.group}",
        f"train.run.batch_size={args.rows}",
        f"train.run.micro_batch_size={args.rows}",
        "train.loss.beta=0.04",
        "train.optimizer.lr=1e-5",
    ]
    rank = args.rank if args.side == "lora" else 0
    sets += [f"train.lora.rank={rank}", f"train.lora.alpha={2 * max(rank, 1)}"]
    cfg = load_config("smollm2-arith", sets, {"model.path": args.model})
    torch.manual_seed(0)
    policy = load_policy(cfg, trainable=True)
    if args.side == "lora":
        lora.attach(policy.model, cfg.train.lora, str(policy.model_dir))
        ref = policy.model
    else:
        ref = load_frozen(cfg, policy.model_dir)
    optimizer, schedule = optim.build(policy.model, cfg.train.optimizer.lr, (0.9, 0.99), 0.0, lambda i: 1.0)

    problems = arith.load_split("test")[: args.rows // args.group]
    prompts = render_prompts(problems, policy.tokenizer, cfg.data)
    g = torch.Generator().manual_seed(1)
    vocab = policy.model.get_output_embeddings().weight.shape[0]
    comps = []
    for prompt in prompts:
        ids = policy.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        for _ in range(args.group):
            tokens = torch.randint(3, vocab, (args.completion,), generator=g).tolist()
            comps.append(Completion("", ids, tokens, [0.0] * len(tokens), "length"))
    input_ids, attention_mask, loss_mask, old_logp = pack(comps, policy.tokenizer.pad_token_id)
    advantages = torch.randn(len(comps), generator=g)
    batch = Batch(input_ids, attention_mask, loss_mask, old_logp, advantages)

    from grpo_cli.training.update import policy_update

    trainable = sum(p.numel() for p in policy.model.parameters() if p.requires_grad)
    loaded_kb = _status_kb("VmRSS")
    times, cpu = [], []
    for i in range(args.steps + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        policy_update(policy.model, ref, batch, cfg, optimizer, schedule)
        if i:  # the first update is a warm-up (allocator, optimizer state)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    return {
        "side": args.side,
        "trainable_params": trainable,
        "update_s": statistics.median(times),
        "update_cpu_s": statistics.median(cpu),
        "peak_mb": _status_kb("VmHWM") / 1024,
        "step_mem_mb": (_status_kb("VmHWM") - loaded_kb) / 1024,
        "tokens": int(loss_mask.sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="/work/models/smollm2")
    parser.add_argument("--impl", default="transformers")
    parser.add_argument("--rows", type=int, default=16, help="sequences in the batch")
    parser.add_argument("--group", type=int, default=8, help="completions per prompt (G)")
    parser.add_argument("--completion", type=int, default=32, help="completion tokens per sequence")
    parser.add_argument("--steps", type=int, default=2, help="measured updates per run (after one warm-up)")
    parser.add_argument("--runs", type=int, default=1, help="runs per side, alternating")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--side", choices=["full", "lora"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        print(json.dumps(side(args)))
        return
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    results: dict[str, list[dict]] = {"full": [], "lora": []}
    for _ in range(args.runs):
        for name in ("full", "lora"):
            cmd = [sys.executable, __file__, *sys.argv[1:], "--side", name]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
            if out.returncode:
                sys.exit(out.stderr[-2000:])
            results[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(
        f"model {args.model}, {args.rows} rows x {args.completion} completion tokens, beta 0.04, LoRA rank {args.rank}"
    )
    print(f"{'':>6} {'trainable':>12} {'update s':>9} {'cpu s':>8} {'peak MB':>8} {'step MB':>8}")
    for name, rows in results.items():
        best = min(rows, key=lambda r: r["update_s"])
        print(
            f"{name:>6} {best['trainable_params']:>12,} {best['update_s']:>9.2f} {best['update_cpu_s']:>8.2f} "
            f"{max(r['peak_mb'] for r in rows):>8.0f} {max(r['step_mem_mb'] for r in rows):>8.0f}"
        )
    full, lo = results["full"], results["lora"]
    ratios = [b["update_s"] / a["update_s"] for a, b in zip(full, lo)]
    print(
        f"lora / full: update time {statistics.median(ratios):.2f} (paired by run), "
        f"peak memory {max(r['peak_mb'] for r in lo) / max(r['peak_mb'] for r in full):.2f}"
    )


if __name__ == "__main__":
    main()
