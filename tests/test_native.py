"""grpo's own Llama-family decoder (grpo_cli.models.llama) against transformers' on the same weights:
logits (unpadded, right padding, left padding with explicit positions), parameter gradients through
`sequence_logprobs` (with and without activation checkpointing), KV-cache decoding and sampling, the
save/load round trip (single file, sharded, tied embeddings), the fallback to transformers for
models it does not support, and the memory guard: a training step imports neither torch._dynamo,
sympy nor transformers' modeling code."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from grpo_cli.config import ModelConfig
from grpo_cli.errors import UserError
from grpo_cli.models import llama
from grpo_cli.models.loading import (
    enable_activation_checkpointing,
    eos_token_ids,
    load_model,
    load_tokenizer,
    tiny_model_dir,
)
from grpo_cli.perf.logprobs import sequence_logprobs
from grpo_cli.sampling.base import SamplingParams
from grpo_cli.sampling.hf import HFSampler

VOCAB = 96
SHAPE = {
    "hidden_size": 32,
    "intermediate_size": 48,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,  # grouped-query attention unless a variant says otherwise
    "vocab_size": VOCAB,
    "max_position_embeddings": 64,
    "rms_norm_eps": 1e-6,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 1,
}
LLAMA3_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 500.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8,
}
LINEAR_ROPE = {"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.5}
YARN_ROPE = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 16}


def _config(kind: str, **overrides):
    from transformers import (
        GPT2Config,
        LlamaConfig,
        MistralConfig,
        Qwen2Config,
        Qwen3Config,
    )

    classes = {"llama": LlamaConfig, "qwen2": Qwen2Config, "qwen3": Qwen3Config, "mistral": MistralConfig}
    if kind == "gpt2":
        return GPT2Config(
            n_embd=32,
            n_layer=2,
            n_head=2,
            vocab_size=VOCAB,
            n_positions=64,
            bos_token_id=1,
            eos_token_id=1,
            **overrides,
        )
    return classes[kind](**{**SHAPE, **overrides})


VARIANTS = {
    # Qwen2: q/k/v biases, no o_proj bias; tied embeddings as the shipped model.
    "qwen2-gqa-tied": lambda: _config("qwen2", tie_word_embeddings=True),
    "qwen2-mha-untied": lambda: _config("qwen2", num_key_value_heads=4, tie_word_embeddings=False),
    # Llama with every bias (q/k/v/o and the MLP's) and llama3 RoPE scaling.
    "llama-biases-llama3rope": lambda: _config(
        "llama", attention_bias=True, mlp_bias=True, rope_parameters=dict(LLAMA3_ROPE), tie_word_embeddings=False
    ),
    "llama-linear-rope-tied": lambda: _config("llama", rope_parameters=dict(LINEAR_ROPE), tie_word_embeddings=True),
    # YaRN scales cos/sin by its attention factor (0.1 ln 4 + 1 here): a wrong scale shows.
    "llama-yarn-mha": lambda: _config("llama", num_key_value_heads=4, rope_parameters=dict(YARN_ROPE)),
    # Qwen3: q_norm/k_norm, head_dim 16 != hidden 32 / 4 heads.
    "qwen3-headdim16-tied": lambda: _config("qwen3", head_dim=16, tie_word_embeddings=True),
    "mistral-gqa": lambda: _config("mistral", sliding_window=None, tie_word_embeddings=False),
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one thread is as fast, and steady when the machine is busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _randomize(model, seed: int) -> None:
    """Weights far from the default init (norms not 1, biases not 0, O(1) logits), so a wrong term shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():  # a tied weight is listed once
            if "norm" in name:
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.25 * torch.randn(p.shape, generator=g))


def _save_hf(path: Path, config, seed: int = 0, **save_kwargs) -> Path:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    _randomize(model, seed)
    model.save_pretrained(path, **save_kwargs)
    return path


def _hf(path: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()


def _native(path: Path):
    model = llama.load(Path(path), torch.float32)
    assert isinstance(model, llama.CausalLM), f"llama.load refused {path}: {model}"
    return model.eval()


@pytest.fixture(scope="module", params=list(VARIANTS), ids=list(VARIANTS))
def pair(request, tmp_path_factory):
    """(model folder, transformers model, native model) of one variant, same weights."""
    path = _save_hf(tmp_path_factory.mktemp(request.param), VARIANTS[request.param]())
    return path, _hf(path), _native(path)


def _inputs(seed: int = 1, rows: int = 3, width: int = 11):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, VOCAB, (rows, width), generator=g)
    lengths = torch.tensor([width, 7, 4][:rows])
    right = (torch.arange(width) < lengths[:, None]).long()
    left = right.flip(1)
    return ids, right, left


def _close(a, b, **kw):
    torch.testing.assert_close(a, b, rtol=kw.get("rtol", 1e-5), atol=kw.get("atol", 1e-5))


# ------------------------------------------------------------------------------------- forward


def test_parameter_names_and_shapes_equal_transformers(pair):
    _, hf, nat = pair
    assert {n: p.shape for n, p in nat.state_dict().items()} == {n: p.shape for n, p in hf.state_dict().items()}
    assert (nat.lm_head.weight is nat.model.embed_tokens.weight) == bool(hf.config.tie_word_embeddings)


def test_logits_equal_transformers_unpadded(pair):
    _, hf, nat = pair
    ids, _, _ = _inputs()
    with torch.no_grad():
        want = hf(input_ids=ids).logits
        _close(nat(input_ids=ids).logits, want)
        _close(nat(input_ids=ids, attention_mask=torch.ones_like(ids)).logits, want)
        _close(nat(input_ids=ids, logits_to_keep=1).logits, want[:, -1:])
    assert want.std() > 0.5  # the random weights give informative logits


def test_the_head_gets_the_kept_positions_as_one_contiguous_matrix(pair):
    """A strided slice of the positions made the head's matmul expand its weight per row (a prefill
    of 64 prompts on SmolLM2: a 3.4 GB copy, most of the call's time); kept positions are copied out."""
    _, _, nat = pair
    ids, _, _ = _inputs()
    seen = []
    hook = nat.lm_head.register_forward_pre_hook(lambda module, args: seen.append(args[0].is_contiguous()))
    try:
        with torch.no_grad():
            nat(input_ids=ids, logits_to_keep=1)
            nat(input_ids=ids, logits_to_keep=2)
    finally:
        hook.remove()
    assert seen == [True, True]


def test_logits_equal_transformers_right_padding(pair):
    _, hf, nat = pair
    ids, right, _ = _inputs()
    with torch.no_grad():
        want = hf(input_ids=ids, attention_mask=right).logits
        got = nat(input_ids=ids, attention_mask=right).logits
    valid = right.bool()
    _close(got[valid], want[valid])
    # And each row equals that row alone, unpadded.
    with torch.no_grad():
        alone = nat(input_ids=ids[2:3, :4]).logits[0]
    _close(got[2, :4], alone)


def test_logits_equal_transformers_left_padding_with_positions(pair):
    _, hf, nat = pair
    ids, _, left = _inputs()
    positions = (left.cumsum(-1) - 1).clamp(min=0)  # as grpo's sampler builds them
    with torch.no_grad():
        want = hf(input_ids=ids, attention_mask=left, position_ids=positions).logits
        got = nat(input_ids=ids, attention_mask=left, position_ids=positions).logits
        alone = nat(input_ids=ids[2:3, -4:]).logits[0]
    valid = left.bool()
    _close(got[valid], want[valid])
    assert torch.isfinite(got).all()  # padding positions too: no NaN to leak into a backward pass
    _close(got[2, -4:], alone)  # left padding with shifted positions = the row alone


def test_inputs_embeds_and_base_model(pair):
    _, hf, nat = pair
    ids, right, _ = _inputs()
    with torch.no_grad():
        embeds = nat.get_input_embeddings()(ids)
        a = nat(inputs_embeds=embeds, attention_mask=right).logits
        b = nat(input_ids=ids, attention_mask=right).logits
        hidden = nat.base_model(input_ids=ids, attention_mask=right).last_hidden_state
        want_hidden = hf.base_model(input_ids=ids, attention_mask=right).last_hidden_state
    _close(a, b)
    valid = right.bool()
    _close(hidden[valid], want_hidden[valid])
    _close(nat.get_output_embeddings()(hidden), b)


def test_qwen3_with_attention_bias_loads_natively(tmp_path):
    """Qwen3's attention_bias puts biases on q/k/v *and* o_proj (as Llama's); native must build them."""
    path = _save_hf(tmp_path, _config("qwen3", head_dim=16, attention_bias=True))
    hf = _hf(path)
    assert hf.model.layers[0].self_attn.o_proj.bias is not None
    nat = llama.load(path, torch.float32)
    assert isinstance(nat, llama.CausalLM), nat
    ids, right, _ = _inputs()
    with torch.no_grad():
        _close(
            nat.eval()(input_ids=ids, attention_mask=right).logits[right.bool()],
            hf(input_ids=ids, attention_mask=right).logits[right.bool()],
        )


# ------------------------------------------------------------------------------------- gradients


def _grad_batch(kind: str = "ragged"):
    """Right-padded rows; rows 0/1 and 2/3 share a prompt (grpo's groups), so prefix sharing applies.
    ragged: prompts and completions of different lengths (padding inside the prefix + completion mask);
    short: two-token completions, so the completions' pass after the shared prompts is one token a
    row (the decoding-shaped attention path, here with gradients); single: one-token completions, each
    predicted by its prompt's last state alone (no completion tokens to run); even: no padding at all."""
    g = torch.Generator().manual_seed(7)
    prompts = [
        torch.randint(2, VOCAB, (4,), generator=g),
        torch.randint(2, VOCAB, (4 if kind == "even" else 3,), generator=g),
    ]
    lengths = {"ragged": [10, 8, 9, 5], "short": [6, 6, 5, 5], "single": [5, 5, 4, 4], "even": [10, 10, 10, 10]}[kind]
    prompt_of = [0, 0, 1, 1]
    ids = torch.randint(2, VOCAB, (4, 10), generator=g)
    attn = torch.zeros(4, 10, dtype=torch.long)
    mask = torch.zeros(4, 9, dtype=torch.bool)
    for row, (n, p) in enumerate(zip(lengths, prompt_of)):
        ids[row, : len(prompts[p])] = prompts[p]
        ids[row, n:] = 0  # pad
        attn[row, :n] = 1
        mask[row, len(prompts[p]) - 1 : n - 1] = True  # the completion's tokens
    weights = torch.randn(4, 9, generator=g)
    return ids, attn, mask, weights


def _grads(model, batch):
    ids, attn, mask, weights = batch
    model.train()
    model.zero_grad(set_to_none=True)
    logp, _ = sequence_logprobs(model, ids, attn, mask, 0.9)
    (logp * weights * mask).sum().backward()
    return logp.detach(), {n: p.grad for n, p in model.named_parameters()}


@pytest.mark.parametrize(
    "checkpointing, kind",
    [(False, "ragged"), (False, "short"), (False, "single"), (False, "even"), (True, "ragged")],
    ids=["ragged", "short", "single", "even", "checkpointed"],
)
def test_gradients_equal_transformers(pair, checkpointing, kind, monkeypatch):
    """Transformers' model shares the prompts through its KV cache (no checkpointing there); ours
    runs them packed with the completions (`llama.Packing`), with checkpointing too."""
    from grpo_cli.perf import shared_prefix

    path, _, _ = pair
    batch = _grad_batch(kind)
    want_logp, want = _grads(_hf(path), batch)
    nat = _native(path)
    if checkpointing:  # as trainer.train turns it on
        enable_activation_checkpointing(nat)
    packed = []
    monkeypatch.setattr(shared_prefix, "_packed", lambda *a, inner=shared_prefix._packed: packed.append(1) or inner(*a))
    got_logp, got = _grads(nat, batch)
    assert packed, "the shared prompts did not take the packed pass"
    _close(got_logp, want_logp)
    assert set(got) == set(want)
    for name in want:
        assert got[name] is not None, name
        # float32 round-off of sums over the batch: relative to the gradient's scale (up to ~40 here)
        scale = max(1.0, float(want[name].abs().max()))
        torch.testing.assert_close(
            got[name], want[name], rtol=1e-4, atol=2e-5 * scale, msg=lambda m, name=name: f"{name}: {m}"
        )
    assert any(float(g.abs().sum()) > 0 for g in want.values())


def test_checkpointing_recomputes_in_backward(pair):
    """Activation checkpointing keeps fewer saved tensors (it is on, not a flag nobody reads)."""
    path, _, _ = pair
    ids, attn, _, _ = _grad_batch()

    def saved(model):
        count = [0]

        def pack(t):
            count[0] += 1
            return t

        model.train()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(input_ids=ids, attention_mask=attn).logits.sum()
        return count[0]

    nat = _native(path)
    plain = saved(nat)
    nat.gradient_checkpointing_enable()
    assert saved(nat) < plain


# ------------------------------------------------------------------------------------- decoding


PROMPTS = [
    "What is 3 + 4 * 5 - 2?\n",
    "Hi\n",
    "12 - 7 =",
    "A much longer prompt, with words and numbers 1 2 3 in it.\n",
]


@pytest.fixture(scope="module")
def gqa_tokenizer_model_dir(tmp_path_factory):
    """A random GQA Llama with larger weights, with the project's tokenizer."""
    from grpo_cli.builtin import tiny

    tokenizer = tiny.build_tokenizer()
    path = tmp_path_factory.mktemp("gqa-llama")
    config = _config(
        "llama",
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        max_position_embeddings=128,
        tie_word_embeddings=True,
    )
    _save_hf(path, config, seed=3)
    tiny.save_tokenizer(tokenizer, path)
    return path


@pytest.mark.parametrize("temperature", [0.0, 1.0], ids=["greedy", "seeded"])
@pytest.mark.parametrize("which", ["random_model_dir", "gqa_tokenizer_model_dir"])
def test_samples_equal_transformers(request, which, temperature):
    path = request.getfixturevalue(which)
    tokenizer = load_tokenizer(path)
    params = SamplingParams(n=2, temperature=temperature, max_new_tokens=12, seed=3)
    results = []
    for model in (_hf(path), _native(path)):
        sampler = HFSampler(model, tokenizer, eos_token_ids(model, tokenizer), batch_size=5)  # 8 sequences: two batches
        results.append(sampler.generate(PROMPTS, params))
    want, got = results
    assert len({len(tokenizer(p)["input_ids"]) for p in PROMPTS}) == len(PROMPTS)
    for w_group, g_group in zip(want, got):
        for w, g in zip(w_group, g_group):
            assert g.token_ids == w.token_ids
            assert g.finish_reason == w.finish_reason
            torch.testing.assert_close(torch.tensor(g.logprobs), torch.tensor(w.logprobs), rtol=0, atol=1e-4)


@pytest.mark.parametrize("keyword", ["cache", "past_key_values"])
@pytest.mark.parametrize("threads", [1, 2], ids=["bmm-attention", "sdpa-attention"])
def test_cached_decoding_equals_full_forward(gqa_tokenizer_model_dir, threads, keyword, monkeypatch):
    """Token-by-token decoding through the KV cache with left padding gives the logits of a full
    forward pass over each unpadded sequence, on both decode-attention paths (one thread: batched
    matmuls; more: scaled_dot_product_attention), with the cache passed by transformers 5.x's name
    (`cache`) or the older one."""
    from grpo_cli.sampling.kvcache import SlotCache

    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)

    nat = _native(gqa_tokenizer_model_dir)
    g = torch.Generator().manual_seed(2)
    seqs = [torch.randint(3, 200, (n,), generator=g) for n in (9, 6, 7)]
    # each row: a prompt of len - 5 tokens (4, 1, 2; left-padded to 4) in one prefill, then 4 tokens one at a time
    steps = 5
    starts = [len(s) - steps for s in seqs]
    width = max(starts)
    ids = torch.zeros(3, width, dtype=torch.long)
    mask = torch.zeros(3, width + steps, dtype=torch.long)
    for r, (s, n) in enumerate(zip(seqs, starts)):
        ids[r, width - n :] = s[:n]
        mask[r, width - n :] = 1
    positions = (mask[:, :width].cumsum(-1) - 1).clamp(min=0)
    cache = SlotCache(mask.shape[1])
    with torch.no_grad():
        out = nat(
            input_ids=ids, attention_mask=mask[:, :width], position_ids=positions, use_cache=True, **{keyword: cache}
        )
        logits = [out.logits[:, -1]]
        pos = positions[:, -1:] + 1
        for step in range(steps - 1):
            tok = torch.stack([s[n + step] for s, n in zip(seqs, starts)])[:, None]
            out = nat(
                input_ids=tok,
                attention_mask=mask[:, : width + step + 1],
                position_ids=pos,
                use_cache=True,
                **{keyword: cache},
            )
            logits.append(out.logits[:, -1])
            pos = pos + 1
        for r, (s, n) in enumerate(zip(seqs, starts)):
            full = nat(input_ids=s[None]).logits[0]
            _close(torch.stack([lg[r] for lg in logits]), full[n - 1 : len(s) - 1])


# ------------------------------------------------------------------------------------- save / load


def _logits(model, ids):
    with torch.no_grad():
        return model.eval()(input_ids=ids).logits


@pytest.mark.parametrize("variant", ["qwen2-gqa-tied", "llama-biases-llama3rope", "qwen3-headdim16-tied"])
def test_save_pretrained_round_trip(tmp_path, variant):
    from safetensors import safe_open

    source = _save_hf(tmp_path / "source", VARIANTS[variant]())
    nat = _native(source)
    with torch.no_grad():  # trained weights, not the loaded ones, must be what is saved
        nat.model.embed_tokens.weight[5:9] += 0.5
        nat.model.layers[1].mlp.down_proj.weight.mul_(1.5)
    ids, _, _ = _inputs()
    want = _logits(nat, ids)
    assert not torch.allclose(want, _logits(_hf(source), ids), atol=1e-3)
    nat.save_pretrained(tmp_path / "saved")

    for name in ("config.json", "generation_config.json", "model.safetensors"):
        assert (tmp_path / "saved" / name).is_file(), name
    with (
        safe_open(str(tmp_path / "saved" / "model.safetensors"), "pt") as f,
        safe_open(str(source / "model.safetensors"), "pt") as ref,
    ):
        assert set(f.keys()) == set(ref.keys())  # as transformers writes it (a tied head stored once)
        assert (f.metadata() or {}).get("format") == "pt"

    hf = _hf(tmp_path / "saved")
    _close(_logits(hf, ids), want)
    again = _native(tmp_path / "saved")
    _close(_logits(again, ids), want)
    tied = bool(hf.config.tie_word_embeddings)
    assert (again.lm_head.weight is again.model.embed_tokens.weight) == tied
    assert (hf.lm_head.weight is hf.model.embed_tokens.weight) == tied
    assert json.loads((tmp_path / "saved" / "config.json").read_text())["model_type"] == hf.config.model_type


def test_folder_without_generation_config_loads(tmp_path):
    """generation_config.json is optional: its eos comes from config.json, as transformers does."""
    path = _save_hf(tmp_path, _config("qwen2", eos_token_id=7))
    (path / "generation_config.json").unlink()
    nat = _native(path)
    assert nat.generation_config is not None and nat.generation_config.eos_token_id == 7
    ids, _, _ = _inputs()
    _close(_logits(nat, ids), _logits(_hf(path), ids))


def test_tied_weights_stay_tied_when_trained(tmp_path):
    """An update to the embedding is the head's update (one parameter, as in transformers)."""
    nat = _native(_save_hf(tmp_path, VARIANTS["qwen2-gqa-tied"]()))
    assert nat.lm_head.weight is nat.model.embed_tokens.weight
    names = [n for n, _ in nat.named_parameters()]
    assert "lm_head.weight" not in names and "model.embed_tokens.weight" in names
    ids, _, _ = _inputs()
    nat.train()
    nat(input_ids=ids).logits.sum().backward()
    assert nat.model.embed_tokens.weight.grad is not None


def test_sharded_checkpoint_loads_natively(tmp_path):
    path = _save_hf(tmp_path, VARIANTS["llama-biases-llama3rope"](), max_shard_size="20KB")
    index = path / "model.safetensors.index.json"
    assert index.is_file() and not (path / "model.safetensors").exists()
    assert len(set(json.loads(index.read_text())["weight_map"].values())) > 1
    assert llama.unsupported(_hf(path).config, path) is None
    model = load_model(path, ModelConfig(impl="native"))
    assert isinstance(model, llama.CausalLM)
    ids, _, _ = _inputs()
    _close(_logits(model, ids), _logits(_hf(path), ids))


def test_load_model_dtype_and_trainable(tmp_path):
    path = _save_hf(tmp_path, VARIANTS["qwen2-gqa-tied"]())
    frozen = load_model(path, ModelConfig(impl="native", dtype="bfloat16"))
    assert isinstance(frozen, llama.CausalLM) and frozen.dtype == torch.bfloat16 and not frozen.training
    assert all(p.dtype == torch.bfloat16 and not p.requires_grad for p in frozen.parameters())
    trainable = load_model(path, ModelConfig(impl="native"), trainable=True)
    assert trainable.training and all(p.requires_grad for p in trainable.parameters())
    # bfloat16 arithmetic is as accurate as transformers' own in bfloat16 (mean error vs float32).
    from transformers import AutoModelForCausalLM

    hf16 = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.bfloat16).eval()
    ids, _, _ = _inputs()
    exact = _logits(_hf(path), ids)
    with torch.no_grad():
        ours = (frozen(input_ids=ids).logits.float() - exact).abs().mean()
        theirs = (hf16(input_ids=ids).logits.float() - exact).abs().mean()
    assert ours <= 1.5 * theirs + 1e-3, (ours, theirs)


# ------------------------------------------------------------------------------------- fallback


def _to_pytorch_bin(path: Path) -> Path:
    """The folder with its weights as pytorch_model.bin only (transformers 5 always writes safetensors)."""
    from safetensors.torch import load_file

    torch.save(load_file(str(path / "model.safetensors")), path / "pytorch_model.bin")
    (path / "model.safetensors").unlink()
    return path


def _unsupported_dirs(tmp_path):
    return {
        "gpt2": (_save_hf(tmp_path / "gpt2", _config("gpt2")), "model_type 'gpt2'"),
        "qwen2-sliding": (
            _save_hf(
                tmp_path / "qwen2-sliding",
                _config("qwen2", use_sliding_window=True, sliding_window=4, max_window_layers=1),
            ),
            "sliding-window",
        ),
        "mistral-window": (
            _save_hf(tmp_path / "mistral-window", _config("mistral", sliding_window=8)),
            "sliding-window",
        ),
        "dynamic-rope": (
            _save_hf(
                tmp_path / "dynamic-rope",
                _config("llama", rope_parameters={"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0}),
            ),
            "RoPE type 'dynamic'",
        ),
        "gelu": (_save_hf(tmp_path / "gelu", _config("llama", hidden_act="gelu")), "hidden_act 'gelu'"),
        "bin": (_to_pytorch_bin(_save_hf(tmp_path / "bin", _config("qwen2"))), "safetensors"),
    }


def test_unsupported_models_fall_back_to_transformers(tmp_path):
    from transformers import PreTrainedModel

    ids, _, _ = _inputs()
    for name, (path, reason) in _unsupported_dirs(tmp_path).items():
        assert reason in llama.load(path, torch.float32), name
        model = load_model(path, ModelConfig(impl="auto"))
        assert isinstance(model, PreTrainedModel) and not isinstance(model, llama.CausalLM), name
        _close(_logits(model, ids), _logits(_hf(path), ids))
        with pytest.raises(UserError, match=reason.replace("(", r"\(")) as e:
            load_model(path, ModelConfig(impl="native"))
        assert "model.impl=native" in str(e.value), name


def test_pytorch_bin_only_folder_falls_back(tmp_path):
    path = _to_pytorch_bin(_save_hf(tmp_path, _config("qwen2")))
    assert not list(path.glob("*.safetensors*"))
    assert "safetensors" in llama.unsupported(_hf(path).config, path)
    assert not isinstance(load_model(path, ModelConfig()), llama.CausalLM)


def test_impl_transformers_loads_transformers(tmp_path):
    path = _save_hf(tmp_path, VARIANTS["qwen2-gqa-tied"]())
    assert isinstance(load_model(path, ModelConfig(impl="auto")), llama.CausalLM)
    assert not isinstance(load_model(path, ModelConfig(impl="transformers")), llama.CausalLM)


def test_shipped_model_loads_natively_and_matches_transformers():
    path = tiny_model_dir()
    model = load_model(path, ModelConfig())
    assert isinstance(model, llama.CausalLM)
    tokenizer = load_tokenizer(path)
    ids = torch.tensor([tokenizer("What is 12 + 30?\n")["input_ids"]])
    _close(_logits(model, ids), _logits(_hf(path), ids), rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------- memory


STEP = textwrap.dedent("""
    import json
    import sys


    def main():
        import torch

        from grpo_cli.models import llama
        from grpo_cli.config import load_config
        from grpo_cli.pipeline.scoring import opened_verifiers
        from grpo_cli.report import Reporter
        from grpo_cli.training.session import Session

        cfg = load_config("tiny", ["model.threads=1", "sampling.n=4", "sampling.max_new_tokens=8",
                                   "train.run.batch_size=8", "train.run.micro_batch_size=8", "train.loss.beta=0.04",
                                   "train.optimizer.warmup_steps=0", "train.optimizer.weight_decay=0.1",
                                   "train.run.eval_n=0", "data.limit=2", "train.run.out_dir=run"])
        session = Session.open(cfg, Reporter(), record=False)
        policy, ref, optimizer = session.policy, session.ref_model, session.optimizer
        before = {n: p.detach().clone() for n, p in policy.model.named_parameters()}
        with opened_verifiers(cfg.verifiers) as verifiers:
            batch = session.collect(0, verifiers)
            session.update(batch)
        print(json.dumps({
            "native": [isinstance(policy.model, llama.CausalLM), isinstance(ref, llama.CausalLM)],
            "optimizer": type(optimizer).__module__,
            "rows": batch.size,
            "changed": any(not torch.equal(before[n], p) for n, p in policy.model.named_parameters()),
            "heavy": sorted(m for m in ("torch._dynamo", "sympy", "transformers.models.qwen2.modeling_qwen2")
                            if m in sys.modules),
        }))


    if __name__ == "__main__":
        main()
""")


def test_training_step_imports_no_dynamo_sympy_or_transformers_modeling(tmp_path):
    script = tmp_path / "step.py"
    script.write_text(STEP, encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=str(tmp_path), check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["native"] == [True, True]
    assert result["optimizer"] == "grpo_cli.training.optim"
    assert result["rows"] == 8 and result["changed"]  # the step sampled, updated and moved the weights
    assert result["heavy"] == [], f"a training step imported {result['heavy']} (~115 MB resident)"
