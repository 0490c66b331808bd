"""benchmarks/floor.py's arithmetic (FLOP counts, fractions, the weighted floor, the model's matmul
shapes and weight count), worked by hand; and step.py's per-step counts. No timing is asserted."""

from __future__ import annotations

import json

import pytest
import torch
from benchmark_script import load

floor = load("floor")


def test_flop_counts_and_rates():
    assert floor.matmul_flops(512, 128, 512) == 2 * 512 * 128 * 512 == 67_108_864
    assert floor.forward_flops(1000, 10) == 20_000  # 2 x N x tokens
    assert floor.train_flops(1000, 10) == 60_000  # 6 x N x tokens
    assert floor.gflops(3e9, 1.5) == pytest.approx(2.0)
    assert floor.gflops(1.0, 0.0) == 0.0
    assert floor.fraction(25.0, 100.0) == 0.25
    assert floor.fraction(1.0, 0.0) == 0.0
    # 32 decode steps reading 4 MB of weights each in 64 ms: 2 GB/s.
    assert floor.decode_gbps(32, 4_000_000, 0.064) == pytest.approx(2.0)
    assert floor.decode_gbps(32, 4_000_000, 0.0) == 0.0


def test_weighted_floor_is_flops_over_total_time():
    matmuls = [floor.Matmul("a", 1, 100, 1), floor.Matmul("b", 3, 100, 1)]
    # a: 100 FLOP units at 10/s = 10 s; b: 300 at 100/s = 3 s; 400 units in 13 s (not the
    # FLOP-weighted arithmetic mean, 77.5).
    assert floor.weighted_floor(matmuls, {(1, 100): 10.0, (3, 100): 100.0}) == pytest.approx(400 / 13)
    assert floor.weighted_floor([], {}) == 0.0


def tiny_config() -> dict:
    from grpo_cli.models.loading import tiny_model_dir

    return json.loads((tiny_model_dir() / "config.json").read_text())


def test_layer_matmuls_of_the_tiny_model():
    matmuls = floor.model_matmuls(tiny_config())
    assert floor.distinct_shapes(matmuls) == {
        (128, 128): ["q", "k", "v", "o"],
        (128, 512): ["gate", "up"],
        (512, 128): ["down"],
        (128, 259): ["head"],
    }
    # 4 layers x (4 x 128 x 128 + 3 x 128 x 512) + the 128 x 259 head: the "1.08M-parameter model".
    assert sum(m.inner * m.out * m.count for m in matmuls) == 4 * (65_536 + 196_608) + 33_152 == 1_081_728
    assert floor.model_matmuls({"text_config": tiny_config()}) == matmuls  # a multimodal config's text part
    from grpo_cli.models.loading import tiny_model_dir

    assert floor.model_matmuls(tiny_model_dir()) == matmuls


def test_layer_matmuls_gqa_and_ungated():
    gqa = {"hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 2}
    shapes = {m.name: (m.inner, m.out, m.count) for m in floor.layer_matmuls({**gqa, "vocab_size": 10}, 64, 256)}
    assert shapes["q"] == (64, 64, 2) and shapes["k"] == shapes["v"] == (64, 32, 2)  # 2 heads of 16
    assert shapes["gate"] == shapes["up"] == (64, 256, 2) and shapes["head"] == (64, 10, 1)
    gpt2 = {"model_type": "gpt2", "n_embd": 64, "n_head": 4, "n_layer": 3, "vocab_size": 10}
    names = [m.name for m in floor.layer_matmuls(gpt2, 64, 256)]
    assert names == ["q", "k", "v", "o", "up", "down", "head"]


class Toy(torch.nn.Module):
    """A 10-token embedding 4 wide, a 4 x 4 body with bias, a 4 -> 10 head, tied or not."""

    def __init__(self, tied: bool) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(10, 4)
        self.body = torch.nn.Linear(4, 4).to(torch.bfloat16)
        self.head = torch.nn.Linear(4, 10, bias=False)
        if tied:
            self.head.weight = self.embed.weight

    def get_input_embeddings(self):
        return self.embed

    def get_output_embeddings(self):
        return self.head


@pytest.mark.parametrize("tied", [True, False])
def test_matmul_weight_stats_count_the_head_not_the_lookup(tied):
    # Tied: the shared 40 once (as the head) + body 16 + 4; untied: the embedding's 40 dropped.
    # Bytes: the head's 40 in float32, the body's 20 in bf16.
    assert floor.matmul_weight_stats(Toy(tied)) == (60, 40 * 4 + 20 * 2)


def test_measuring_leaves_the_rng_alone():
    state = torch.get_rng_state()
    assert floor.matmul_gflops(8, 8, 8, torch.float32, repeats=1) > 0
    assert floor.matmul_gflops(8, 8, 8, torch.bfloat16, repeats=1) > 0
    assert torch.equal(torch.get_rng_state(), state)


def test_phase_row_carries_the_step_counts():
    step = load("step")
    ph = {"update": 5.0, "logprobs": 1.0, "optimizer": 0.5, "step": 9.0, "sampling": 2.0}
    ph |= {"fwd_bwd_tokens": 1200.0, "logprob_tokens": 600.0, "decode_steps": 32.0}
    row = step.phase_row(ph, "update", 512.0)
    assert row["fwd_bwd"] == 3.5  # the update less its log-prob passes and the optimizer
    assert (row["tokens"], row["fwd_bwd_tokens"], row["logprob_tokens"], row["decode_steps"]) == (512, 1200, 600, 32)
    assert step.phase_row({}, "update", 0.0)["decode_steps"] == 0.0
