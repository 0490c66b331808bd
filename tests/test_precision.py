"""The compute precision (grpo_cli.models.precision): float32 master weights, bf16 compute, the
sampling copy, LoRA's frozen base, and how `model.dtype: auto` decides."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from grpo_cli.config import LoraConfig, ModelConfig
from grpo_cli.models import lora, precision
from grpo_cli.models.loading import load_model, load_tokenizer, matmul_shape, tiny_model_dir
from grpo_cli.perf.logprobs import logprob_path
from grpo_cli.sampling.base import SamplingParams
from grpo_cli.sampling.hf import HFSampler

BF16 = ModelConfig(device="cpu", threads=1, dtype="bfloat16")
IDS = torch.tensor([[5, 17, 30, 41, 7, 9, 12, 40], [3, 8, 21, 13, 44, 2, 6, 19]])
MASK = torch.ones(2, 7, dtype=torch.bool)


def test_explicit_names_resolve_to_their_dtype():
    assert precision.resolve("float32", "cpu", 576, 1536) == torch.float32
    assert precision.resolve("bfloat16", "cpu", 64, 256) == torch.bfloat16
    assert precision.resolve("float16", "cpu", 64, 256) == torch.float16


def test_auto_takes_bf16_only_where_native_and_the_mlp_is_big_enough(monkeypatch):
    monkeypatch.setattr(precision, "native_bf16", lambda device: False)
    assert precision.resolve("auto", "cpu", 576, 1536) == torch.float32
    monkeypatch.setattr(precision, "native_bf16", lambda device: True)
    assert precision.resolve("auto", "cpu", 576, 1536) == torch.bfloat16  # SmolLM2-135M
    assert precision.resolve("auto", "cpu", 256, 1024) == torch.bfloat16  # the bound itself
    assert precision.resolve("auto", "cpu", 256, 1023) == torch.float32
    assert precision.resolve("auto", "cpu", 128, 512) == torch.float32  # the shipped tiny model
    assert precision.resolve("auto", "cpu", 0, 0) == torch.float32  # a config naming neither
    assert precision.resolve("auto", "cuda", 128, 512) == torch.bfloat16  # a GPU gains at any size


def test_native_bf16_reads_the_cpu_flags(monkeypatch):
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2", "avx512f"})
    assert not precision.native_bf16("cpu")
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    assert precision.native_bf16("cpu")
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"amx_bf16"})
    assert precision.native_bf16("cpu")


def test_matmul_shape_reads_the_config(tmp_path):
    assert matmul_shape(tiny_model_dir()) == (128, 512)
    (tmp_path / "config.json").write_text('{"text_config": {"hidden_size": 64}}')
    assert matmul_shape(tmp_path) == (64, 256)  # no MLP width: 4 x hidden
    assert matmul_shape(tmp_path / "missing") == (0, 0)


def test_a_model_that_trains_keeps_float32_weights_and_computes_in_bf16():
    trained = load_model(tiny_model_dir(), BF16, trainable=True)
    frozen = load_model(tiny_model_dir(), BF16)
    assert all(p.dtype == torch.float32 for p in trained.parameters())
    assert precision.compute_dtype(trained) == torch.bfloat16
    assert all(p.dtype == torch.bfloat16 for p in frozen.parameters())
    assert precision.mostly_float32(trained) and not precision.mostly_float32(frozen)


@pytest.mark.parametrize("keep", [True, False], ids=["kept-probs", "recomputed"])
def test_bf16_log_probs_and_gradients_follow_float32(keep, monkeypatch):
    from grpo_cli.perf import logprobs

    if not keep:  # backward recomputes the head's logits (a batch too big to keep its probabilities)
        monkeypatch.setattr(logprobs, "head_logprobs", partial(logprobs.head_logprobs, keep_elements=0))
    torch.manual_seed(0)
    wide = load_model(tiny_model_dir(), ModelConfig(device="cpu", threads=1, dtype="float32"), trainable=True)
    mixed = load_model(tiny_model_dir(), BF16, trainable=True)
    results = []
    for model in (wide, mixed):
        logp, _ = logprob_path(model)(IDS, torch.ones_like(IDS), MASK, 1.0)
        logp.sum().backward()
        results.append((logp.detach(), [p.grad.clone() for p in model.parameters()]))
    (lp32, g32), (lp16, g16) = results
    assert lp16.dtype == torch.float32
    # bf16 keeps 8 bits of mantissa: log-probs within a few hundredths, not equal.
    assert 0 < (lp16 - lp32).abs().max() < 0.1
    assert all(g.dtype == torch.float32 for g in g16)  # gradients land in the float32 master weights
    flat32, flat16 = torch.cat([g.flatten() for g in g32]), torch.cat([g.flatten() for g in g16])
    assert torch.nn.functional.cosine_similarity(flat32, flat16, dim=0) > 0.99


def _sampler(model):
    tok = load_tokenizer(tiny_model_dir())
    return HFSampler(model, tok, {tok.eos_token_id})


def test_a_float32_model_samples_from_a_bf16_cast_of_its_current_weights_freed_after_the_call():
    model = load_model(tiny_model_dir(), BF16, trainable=True)
    sampler = _sampler(model)
    params = SamplingParams(n=2, max_new_tokens=6, seed=3)
    seen = []
    with sampler.copy.weights(model) as copy:
        assert copy is not model and precision.compute_dtype(copy) == torch.bfloat16
        seen = [p.clone() for p in copy.parameters()]
    assert all(
        s.dtype == torch.bfloat16 and torch.equal(s, p.to(torch.bfloat16)) for s, p in zip(seen, model.parameters())
    )
    assert all(p.numel() == 0 for p in sampler.copy.copy.parameters())  # freed: not held through the update
    first = sampler.generate(["1 + 2 = "], params)
    assert sampler.generate(["1 + 2 = "], params)[0][0].token_ids == first[0][0].token_ids  # same seed, same weights
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    with sampler.copy.weights(model) as copy:  # no sync needed: each call casts the current weights
        assert torch.equal(next(copy.parameters()), next(model.parameters()).to(torch.bfloat16))
    assert sampler.generate(["1 + 2 = "], params)[0][0].token_ids != first[0][0].token_ids


def test_the_sampling_copy_is_the_model_a_frozen_load_makes():
    """The copy casts parameters only: RoPE's inv_freq stays float32, as in the bf16 model `grpo sample`
    and `grpo eval` load from the same weights, so both sample the same tokens with the same log-probs."""
    model = load_model(tiny_model_dir(), BF16, trainable=True)
    frozen = load_model(tiny_model_dir(), BF16, trainable=False)
    assert [b.dtype for b in frozen.buffers()] == [torch.float32]  # the tiny model's one buffer: inv_freq
    params = SamplingParams(n=2, max_new_tokens=12, seed=5)
    prompts = ["12 + 30 - 7 * 2 = ", "4 * 9 + 1 = "]
    with precision.SamplingCopy().weights(model) as copy:
        assert [b.dtype for b in copy.buffers()] == [torch.float32]
        assert all(p.dtype == torch.bfloat16 for p in copy.parameters())
        ids = torch.tensor([[5, 17, 30, 41, 7, 9, 12, 40] * 8])  # 64 positions: rotary angles grow with them
        assert torch.equal(copy(ids).logits, frozen(ids).logits)
    mine = _sampler(model).generate(prompts, params)  # through the sampler's own copy
    theirs = _sampler(frozen).generate(prompts, params)
    assert [[c.token_ids for c in g] for g in mine] == [[c.token_ids for c in g] for g in theirs]
    assert [[c.logprobs for c in g] for g in mine] == [[c.logprobs for c in g] for g in theirs]


def test_lora_stores_its_frozen_base_in_bf16_and_trains_float32_adapters():
    pytest.importorskip("peft")
    model = load_model(tiny_model_dir(), BF16, trainable=True)
    lora.attach(model, LoraConfig(rank=4, alpha=8), "tiny")
    precision.store_frozen(model)
    adapters = [p for n, p in model.named_parameters() if "lora_" in n]
    base = [p for n, p in model.named_parameters() if "lora_" not in n]
    assert adapters and all(p.dtype == torch.float32 and p.requires_grad for p in adapters)
    assert all(p.dtype == torch.bfloat16 and not p.requires_grad for p in base)
    assert not precision.mostly_float32(model)  # samples from the module itself, under autocast
    with torch.no_grad():
        for p in adapters:
            p.normal_(0, 0.1)
    logp, _ = logprob_path(model)(IDS, torch.ones_like(IDS), MASK, 1.0)
    logp.sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in adapters)
    assert any(p.grad.abs().sum() > 0 for p in adapters)
    completions = _sampler(model).generate(["1 + 2 = "], SamplingParams(n=2, max_new_tokens=4))
    assert all(len(c.token_ids) >= 1 for c in completions[0])
