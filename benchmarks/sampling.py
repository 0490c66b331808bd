"""Sampling throughput, vLLM vs transformers, on the shipped model and the tiny preset's workload.

    python benchmarks/sampling.py [--prompts 32] [--n 8] [--threads 1,2] [--repeats 3]

One GRPO step's sampling: `--prompts` arithmetic training prompts x `--n` completions, the tiny
preset's max_new_tokens and temperature. For each thread count the two backends alternate, each
timed over `--repeats` calls with fresh seeds after one untimed warm-up call; prints generated tokens
per second (best and mean), the vLLM/HF ratio, and vLLM's engine start and `sync_weights` times.
Needs vLLM (see README, "vLLM backend"). A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from grpo_cli.config import load_config
from grpo_cli.models.loading import eos_token_ids, load_model, load_tokenizer, resolve_model_dir, setup_torch
from grpo_cli.pipeline.sample import problems_from, render_prompts, sampling_params
from grpo_cli.sampling.hf import HFSampler
from grpo_cli.sampling.vllm import VLLMSampler


def timed(sampler, prompts, params) -> tuple[float, int]:
    start = time.perf_counter()
    out = sampler.generate(prompts, params)
    seconds = time.perf_counter() - start
    return seconds, sum(len(c.token_ids) for group in out for c in group)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--threads", default="1,2", help="comma-separated torch thread counts")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="config override, e.g. model.impl=transformers"
    )
    args = parser.parse_args()

    cfg = load_config("tiny", [f"sampling.n={args.n}", f"data.limit={args.prompts}", *args.set])
    setup_torch(1)
    model_dir = resolve_model_dir(cfg.model.path)
    tokenizer = load_tokenizer(model_dir)
    model = load_model(model_dir, cfg.model)
    prompts = render_prompts(problems_from(cfg.data.train, cfg.data), tokenizer, cfg.data)
    stops = eos_token_ids(model, tokenizer)
    batch = len(prompts) * args.n
    hf = HFSampler(model, tokenizer, stops, batch_size=batch)
    start = time.perf_counter()
    vllm = VLLMSampler(model, tokenizer, stops, batch_size=batch, vllm_kwargs=cfg.sampling.vllm_kwargs)
    engine_s = time.perf_counter() - start
    start = time.perf_counter()
    vllm.sync_weights(model)
    sync_s = time.perf_counter() - start
    print(
        f"workload: {len(prompts)} prompts x {args.n}, max_new_tokens {cfg.sampling.max_new_tokens}, "
        f"temperature {cfg.sampling.temperature}; vLLM engine start {engine_s:.1f}s, sync_weights "
        f"{1000 * sync_s:.0f} ms"
    )
    print(f"{'threads':>7}  {'backend':<7} {'tokens/s best':>13} {'mean':>8} {'s/call':>7}  {'tokens/call':>11}")
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        rates: dict[str, list[float]] = {"hf": [], "vllm": []}
        calls: dict[str, list[tuple[float, int]]] = {"hf": [], "vllm": []}
        for sampler in (hf, vllm):
            timed(sampler, prompts, sampling_params(cfg, seed=10_000))  # warm-up
        for r in range(args.repeats):
            for name, sampler in (("hf", hf), ("vllm", vllm)):
                seconds, tokens = timed(sampler, prompts, sampling_params(cfg, seed=r))
                rates[name].append(tokens / seconds)
                calls[name].append((seconds, tokens))
        for name in ("hf", "vllm"):
            secs = statistics.mean(s for s, _ in calls[name])
            toks = statistics.mean(t for _, t in calls[name])
            print(
                f"{threads:>7}  {name:<7} {max(rates[name]):>13.0f} {statistics.mean(rates[name]):>8.0f} "
                f"{secs:>7.2f}  {toks:>11.0f}"
            )
        print(
            f"{threads:>7}  vLLM / HF tokens/s (mean): "
            f"{statistics.mean(rates['vllm']) / statistics.mean(rates['hf']):.2f}x",
            flush=True,
        )


if __name__ == "__main__":
    main()
