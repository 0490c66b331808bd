"""This machine's matmul floor at a model's shapes (GFLOP/s, fp32 and bf16) and its memory bandwidth.

    python benchmarks/floor.py [--model DIR] [--threads 1] [--rows 512] [--repeats 5]

benchmarks/step.py and benchmarks/real_sampling.py divide each phase's useful GFLOP/s by this floor,
so "near the limit" is a number: 1.0 would be a phase running as fast as its weight matmuls alone
run here, at the same thread count, in wall time; the rest of a phase's time is everything else
(attention, softmax, casts, the optimizer's bookkeeping, Python, waiting for memory).

- `model_floor`: best-of-N GFLOP/s of each of the model's weight matmuls for `rows` token rows
  (Q, K, V and output projections, the MLP's gate/up/down, the LM head), combined as the FLOP-weighted
  harmonic mean: the model's matmul FLOPs over the time of running each of them once per layer, i.e.
  the rate of a forward pass made of these matmuls and nothing else.
- `memory_gbps`: a large tensor copy's bytes read + written per second. Sampling a token reads every
  weight once, so decoding a small batch is bound by bandwidth, not FLOPs: a sampling phase's weight
  bytes per second over this is its bandwidth fraction (weights small enough to stay in the CPU's
  caches, like the tiny model's 4 MB, can exceed 1).

Useful FLOPs (estimates, as the callers print them): 2 x N per token for a forward pass, 6 x N for
forward + backward (every weight trains), N = the matmul weights (`matmul_weight_stats`: every
parameter but the input embedding table, a lookup; a tied embedding counts once, as the LM head).
Attention's own score and value products (about 4 x layers x context x width per token) are not
counted: a few percent at the lengths the benchmarks run.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import torch

ROWS = 512
"""Token rows of the measured matmuls: about a micro-batch of sequences times their length."""
NOT_GATED = {"gpt2", "gpt_neox", "gptj", "gpt_bigcode", "opt", "bloom", "falcon", "phi"}
"""Model types whose MLP is up -> down (no gate projection); others (Llama, Qwen2, Mistral, ...) are gated."""


class Matmul(NamedTuple):
    """`count` matmuls [rows x inner] @ [inner x out] per forward pass, named for the printout."""

    name: str
    inner: int
    out: int
    count: int


# ------------------------------------------------------------------------------- pure arithmetic


def matmul_flops(rows: int, inner: int, out: int) -> int:
    """Multiply-adds of [rows x inner] @ [inner x out], two FLOPs each."""
    return 2 * rows * inner * out


def gflops(flops: float, seconds: float) -> float:
    return flops / seconds / 1e9 if seconds > 0 else 0.0


def fraction(value: float, floor: float) -> float:
    """`value` as a fraction of `floor` (0 where there is no floor to compare with)."""
    return value / floor if floor > 0 else 0.0


def forward_flops(params: int, tokens: float) -> float:
    """Useful FLOPs of a forward pass over `tokens` tokens: one multiply-add per weight per token."""
    return 2.0 * params * tokens


def train_flops(params: int, tokens: float) -> float:
    """Forward + backward: the backward pass computes the gradients of activations and of weights,
    each as much as the forward."""
    return 6.0 * params * tokens


def decode_gbps(decode_steps: float, weight_bytes: int, seconds: float) -> float:
    """Weight bytes read per second by `decode_steps` steps that each read every weight once."""
    return decode_steps * weight_bytes / seconds / 1e9 if seconds > 0 else 0.0


def text_config(config: dict[str, Any]) -> dict[str, Any]:
    """The language model's part of a config.json (a multimodal model's `text_config`)."""
    return config.get("text_config", config)


def layer_matmuls(config: dict[str, Any], hidden: int, intermediate: int) -> list[Matmul]:
    """The weight matmuls of one forward pass of the model `config` describes, `hidden` wide with an
    MLP `intermediate` wide (`grpo_cli.models.loading.matmul_shape`)."""
    config = text_config(config)
    layers = int(config.get("num_hidden_layers") or config.get("n_layer") or 0)
    heads = int(config.get("num_attention_heads") or config.get("n_head") or 1)
    kv_heads = int(config.get("num_key_value_heads") or heads)
    head_dim = int(config.get("head_dim") or hidden // heads)
    vocab = int(config.get("vocab_size") or 0)
    mlp = [Matmul("up", hidden, intermediate, layers), Matmul("down", intermediate, hidden, layers)]
    if config.get("model_type") not in NOT_GATED:
        mlp.insert(0, Matmul("gate", hidden, intermediate, layers))
    return [
        Matmul("q", hidden, heads * head_dim, layers),
        Matmul("k", hidden, kv_heads * head_dim, layers),
        Matmul("v", hidden, kv_heads * head_dim, layers),
        Matmul("o", heads * head_dim, hidden, layers),
        *mlp,
        Matmul("head", hidden, vocab, 1),
    ]


def distinct_shapes(matmuls: list[Matmul]) -> dict[tuple[int, int], list[str]]:
    """(inner, out) -> the names of the matmuls of that shape: each shape is timed once."""
    shapes: dict[tuple[int, int], list[str]] = {}
    for m in matmuls:
        shapes.setdefault((m.inner, m.out), []).append(m.name)
    return shapes


def weighted_floor(matmuls: list[Matmul], rates: dict[tuple[int, int], float]) -> float:
    """FLOP-weighted harmonic mean of the shapes' GFLOP/s: all the matmuls' FLOPs over the sum of
    their times (the per-row FLOPs suffice: the row count cancels)."""
    flops = [m.inner * m.out * m.count for m in matmuls]
    seconds = [f / rates[(m.inner, m.out)] for f, m in zip(flops, matmuls) if f]
    return sum(flops) / sum(seconds) if seconds else 0.0


# ----------------------------------------------------------------------------------- measurement


def best_seconds(fn: Callable[[], Any], repeats: int, min_seconds: float = 0.01) -> float:
    """The fastest of `repeats` timings of `fn`, each the mean over enough calls to last about
    `min_seconds` (a 0.1 ms matmul timed once is mostly timer and scheduling noise)."""
    fn()  # warm-up: kernel choice, workspace, first touch of the pages
    start = time.perf_counter()
    fn()
    number = max(1, math.ceil(min_seconds / max(time.perf_counter() - start, 1e-9)))
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - start) / number)
    return best


def matmul_gflops(rows: int, inner: int, out: int, dtype: torch.dtype, repeats: int = 5) -> float:
    """Best-of-`repeats` GFLOP/s of [rows x inner] @ [inner x out] in `dtype` at torch's current
    thread count. Constant inputs (never torch.randn): measuring must not move the global RNG."""
    a = torch.ones((rows, inner), dtype=dtype)
    b = torch.full((inner, out), 1.0 / max(inner, 1), dtype=dtype)  # products stay about 1
    c = torch.empty((rows, out), dtype=dtype)
    return gflops(matmul_flops(rows, inner, out), best_seconds(lambda: torch.matmul(a, b, out=c), repeats))


def memory_gbps(mib: int = 256, repeats: int = 5) -> float:
    """Bytes read + written per second by a copy of `mib` MiB (well past the CPU's caches)."""
    src = torch.ones(mib * 2**20 // 4, dtype=torch.float32)
    dst = torch.empty_like(src)
    return 2 * src.nbytes / best_seconds(lambda: dst.copy_(src), repeats) / 1e9


def model_matmuls(source: Path | str | dict[str, Any]) -> list[Matmul]:
    """`layer_matmuls` of a model folder (its config.json) or an already parsed config."""
    from grpo_cli.models.loading import config_matmul_shape

    config = source if isinstance(source, dict) else json.loads((Path(source) / "config.json").read_text())
    return layer_matmuls(config, *config_matmul_shape(config))


def shape_rates(
    matmuls: list[Matmul], dtype: torch.dtype, rows: int = ROWS, repeats: int = 5
) -> dict[tuple[int, int], float]:
    """GFLOP/s of each distinct (inner, out) shape of `matmuls` for `rows` rows."""
    return {shape: matmul_gflops(rows, *shape, dtype, repeats) for shape in distinct_shapes(matmuls) if all(shape)}


def model_floor(source: Path | str | dict[str, Any], dtype: torch.dtype, rows: int = ROWS, repeats: int = 5) -> float:
    """The model's matmul floor in `dtype`: `weighted_floor` of its matmuls' measured GFLOP/s."""
    matmuls = model_matmuls(source)
    return weighted_floor(matmuls, shape_rates(matmuls, dtype, rows, repeats))


def matmul_weight_stats(model: Any) -> tuple[int, int]:
    """(N, bytes) of `model`'s matmul weights: every parameter but the input embedding table, which a
    forward pass only indexes; a tied embedding is the LM head's weight too, so it counts once, as
    the head (norms and biases, a few thousand entries, count too)."""
    params = {id(p): p for p in model.parameters()}
    embed = model.get_input_embeddings()
    head = model.get_output_embeddings()
    if embed is not None and (head is None or head.weight is not embed.weight):
        params.pop(id(embed.weight), None)
    return sum(p.numel() for p in params.values()), sum(p.numel() * p.element_size() for p in params.values())


# ------------------------------------------------------------------------------------------- CLI


def main() -> None:
    from grpo_cli.models.loading import matmul_shape, tiny_model_dir

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=tiny_model_dir(), help="a Hugging Face model folder (default: tiny)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rows", type=int, default=ROWS, help="token rows of each matmul")
    p.add_argument("--repeats", type=int, default=5, help="timings per shape; the best counts")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    hidden, intermediate = matmul_shape(args.model)
    matmuls = model_matmuls(args.model)
    dtypes = (torch.float32, torch.bfloat16)
    rates = {dtype: shape_rates(matmuls, dtype, args.rows, args.repeats) for dtype in dtypes}
    print(
        f"{args.model}: hidden {hidden}, MLP {intermediate}, {matmuls[0].count} layers, vocabulary "
        f"{matmuls[-1].out}; {torch.get_num_threads()} threads, {args.rows} rows, best of {args.repeats}"
    )
    print(f"{'matmul [rows x inner] @ [inner x out]':<44}{'fp32 GFLOP/s':>14}{'bf16 GFLOP/s':>14}")
    for shape, names in distinct_shapes(matmuls).items():
        if all(shape):
            label = f"{'/'.join(names)} {args.rows} x {shape[0]} @ {shape[0]} x {shape[1]}"
            print(f"{label:<44}" + "".join(f"{rates[d][shape]:>14.1f}" for d in dtypes))
    floors = [weighted_floor(matmuls, rates[d]) for d in dtypes]
    print(f"{'model floor (FLOP-weighted harmonic mean)':<44}" + "".join(f"{f:>14.1f}" for f in floors))
    print(f"memory copy: {memory_gbps(repeats=args.repeats):.1f} GB/s (bytes read + written)")


if __name__ == "__main__":
    main()
