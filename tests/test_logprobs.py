"""Chosen-token log-probs through the blocked LM head equal the plain log-softmax path, values
and gradients, without the [n, T, V] logits."""

from __future__ import annotations

import copy

import pytest
import torch

from grpo_cli.perf import logprobs
from grpo_cli.perf.logprobs import fusable, head_logprobs, sequence_logprobs


@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("keep", [0, 1 << 20])  # recompute the head in backward, or keep the probabilities
def test_head_logprobs_equal_log_softmax_values_and_gradients(temperature, with_bias, keep):
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(10, 6, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(13, 6, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(13, generator=g, dtype=torch.float64, requires_grad=True) if with_bias else None
    tokens = torch.randint(0, 13, (10,), generator=g)
    upstream = torch.randn(10, generator=g, dtype=torch.float64)

    # block_elements 39 = 3 rows of 13: four blocks, the last one short.
    logp, entropy = head_logprobs(hidden, weight, bias, tokens, temperature, block_elements=39, keep_elements=keep)
    (logp * upstream).sum().backward()
    got = [hidden.grad, weight.grad] + ([bias.grad] if with_bias else [])
    for t in [hidden, weight] + ([bias] if with_bias else []):
        t.grad = None

    z = torch.nn.functional.linear(hidden, weight, bias) / temperature
    ref = torch.log_softmax(z, dim=-1)
    want_logp = ref.gather(1, tokens[:, None]).squeeze(1)
    want_entropy = -(ref.exp() * ref).sum(-1)
    (want_logp * upstream).sum().backward()
    want = [hidden.grad, weight.grad] + ([bias.grad] if with_bias else [])

    torch.testing.assert_close(logp.double(), want_logp, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(entropy.double(), want_entropy.detach(), rtol=1e-5, atol=1e-6)
    assert not entropy.requires_grad
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_hand_computed_two_token_vocabulary():
    # logits [0, ln 3]: p = [1/4, 3/4]; log p(token 1) = ln 0.75; H = -(0.25 ln 0.25 + 0.75 ln 0.75).
    weight = torch.tensor([[0.0], [1.0]])
    hidden = torch.tensor([[torch.log(torch.tensor(3.0)).item()]])
    logp, entropy = head_logprobs(hidden, weight, None, torch.tensor([1]))
    assert logp.item() == pytest.approx(torch.log(torch.tensor(0.75)).item(), abs=1e-6)
    assert entropy.item() == pytest.approx(
        -(0.25 * torch.log(torch.tensor(0.25)) + 0.75 * torch.log(torch.tensor(0.75))).item(), abs=1e-6
    )


def test_model_path_equals_full_logits_path(random_model_dir, monkeypatch):
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(random_model_dir))
    assert fusable(base)
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(3, 200, (3, 9), generator=g)
    attn = torch.ones(3, 9, dtype=torch.long)
    attn[1, 6:] = 0  # right padding
    mask = torch.zeros(3, 8, dtype=torch.bool)
    mask[0, 2:], mask[1, 3:5], mask[2, 1:7] = True, True, True

    results = []
    for fused in (True, False):
        model = copy.deepcopy(base)
        if not fused:
            monkeypatch.setattr(logprobs, "fusable", lambda m: False)
        logp, entropy = sequence_logprobs(model, ids, attn, mask, 0.8, entropy=True)
        (logp * mask).sum().backward()
        results.append((logp.detach() * mask, entropy, {n: p.grad for n, p in model.named_parameters()}))
    (a, ea, ga), (b, eb, gb) = results
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ea, eb, rtol=1e-5, atol=1e-6)
    for name in ga:
        torch.testing.assert_close(ga[name], gb[name], rtol=1e-4, atol=1e-6)


def test_in_place_weight_gradients_accumulate_like_autograd(random_model_dir, monkeypatch):
    """Two micro-batches' backward passes into a tied embedding/head (pad tokens in the rows) leave
    the same .grad as torch's own accumulation on the plain path; a gradient hook on the weight
    still sees its gradient (that weight then takes torch's path)."""
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(random_model_dir))
    embed = base.get_input_embeddings()
    assert embed.padding_idx is not None and base.get_output_embeddings().weight is embed.weight
    g = torch.Generator().manual_seed(5)
    batches = []
    for width in (7, 10):
        ids = torch.randint(3, 200, (2, width), generator=g)
        ids[0, width - 2 :] = embed.padding_idx  # right padding, as the trainer's batches have
        attn = (ids != embed.padding_idx).long()
        ids[1, 3] = embed.padding_idx  # a pad id inside a row: nn.Embedding gives its row no gradient
        mask = attn[:, 1:].bool()
        mask[:, :2] = False  # the prompt
        batches.append((ids, attn, mask))

    def grads(model):
        for ids, attn, mask in batches:
            logp, _ = sequence_logprobs(model, ids, attn, mask)
            (logp * mask).sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    in_place = grads(copy.deepcopy(base))
    seen = []
    hooked = copy.deepcopy(base)
    hooked.get_input_embeddings().weight.register_hook(lambda grad: seen.append(grad.shape))
    via_hook = grads(hooked)
    monkeypatch.setattr(logprobs, "fusable", lambda m: False)
    plain = grads(copy.deepcopy(base))
    assert seen, "the hook never ran"
    for name in plain:
        torch.testing.assert_close(in_place[name], plain[name], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(via_hook[name], plain[name], rtol=1e-4, atol=1e-6)
    assert plain["model.embed_tokens.weight"][embed.padding_idx].abs().sum() > 0  # the head's share


def _prompt_batch(prompt_lengths, completion_lengths, seed=0):
    """Right-padded rows: every prompt x every completion length (distinct random tokens), as the
    trainer packs them; mask[i, t] true where input_ids[i, t+1] is a completion token."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for p in prompt_lengths:
        prompt = torch.randint(3, 250, (p,), generator=g).tolist()
        rows += [(prompt, torch.randint(3, 250, (c,), generator=g).tolist()) for c in completion_lengths]
    width = max(len(p) + len(c) for p, c in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    attn = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width - 1, dtype=torch.bool)
    for i, (p, c) in enumerate(rows):
        ids[i, : len(p) + len(c)] = torch.tensor(p + c)
        attn[i, : len(p) + len(c)] = 1
        mask[i, len(p) - 1 : len(p) - 1 + len(c)] = True
    return ids, attn, mask


def _shared_vs_full(model, ids, attn, mask, monkeypatch, temperature=0.8):
    """(values, entropy, gradients) with prefix sharing and without, and whether the shared path
    was taken."""
    taken = []
    target_hidden = logprobs.shared_prefix.target_hidden

    def spy(*args):
        out = target_hidden(*args)
        taken.append(out is not None)
        return out

    monkeypatch.setattr(logprobs.shared_prefix, "target_hidden", spy)
    weights = torch.linspace(0.5, 2.0, mask.shape[1])  # a loss that weighs every position differently
    results = []
    for share in (True, False):
        m = copy.deepcopy(model)
        monkeypatch.setattr(logprobs, "SHARE_PREFIXES", share)
        logp, entropy = sequence_logprobs(m, ids, attn, mask, temperature, entropy=True)
        (logp * weights).sum().backward()
        results.append((logp.detach(), entropy, {n: p.grad for n, p in m.named_parameters()}))
    return results, taken


def _assert_same(results):
    (a, ea, ga), (b, eb, gb) = results
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ea, eb, rtol=1e-5, atol=1e-6)
    for name in gb:
        torch.testing.assert_close(ga[name], gb[name], rtol=1e-4, atol=1e-6, msg=lambda m, name=name: f"{name}: {m}")


@pytest.fixture
def policy(random_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(random_model_dir)).train()


# transformers 5.x warns (FutureWarning) when its KV cache is passed by the old name `past_key_values`.
@pytest.mark.filterwarnings("error::FutureWarning", "error::DeprecationWarning")
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_shared_prompts_give_the_same_logprobs_and_gradients(policy, monkeypatch, attention):
    policy.set_attn_implementation(attention)
    # Three prompts of different lengths x four completions of different lengths (one of a single
    # token: predicted by the prompt pass alone); rows of one prompt not adjacent.
    ids, attn, mask = _prompt_batch([5, 9, 3], [4, 1, 7, 2])
    order = torch.randperm(len(ids), generator=torch.Generator().manual_seed(1))
    ids, attn, mask = ids[order], attn[order], mask[order]
    assert logprobs.shared_prefix.shareable(policy)
    results, taken = _shared_vs_full(policy, ids, attn, mask, monkeypatch)
    assert taken == [True]
    _assert_same(results)
    assert (results[0][0] != 0).sum() == mask.sum()  # every target has its log-prob, nothing else


def test_masked_out_rows_and_completion_gaps_stay_equal(policy, monkeypatch):
    ids, attn, mask = _prompt_batch([4, 6], [3, 5, 2])
    mask[1] = False  # a truncated completion: no target at all
    mask[4, 6] = False  # a gap inside a completion (the first target still marks the prompt's end)
    results, taken = _shared_vs_full(policy, ids, attn, mask, monkeypatch)
    assert taken == [True]
    _assert_same(results)
    assert not results[0][0][1].any()


def test_no_shared_prompt_takes_the_full_pass(policy, monkeypatch):
    ids, attn, mask = _prompt_batch([4, 6, 5], [3])  # one completion per prompt
    results, taken = _shared_vs_full(policy, ids, attn, mask, monkeypatch)
    assert taken == [False]
    _assert_same(results)


def test_left_padding_takes_the_full_pass(policy, monkeypatch):
    ids, attn, mask = _prompt_batch([4], [3, 5])
    ids[0], attn[0], mask[0] = ids[0].roll(2), attn[0].roll(2), mask[0].roll(2)  # row 0 left-padded
    results, taken = _shared_vs_full(policy, ids, attn, mask, monkeypatch)
    assert taken == [False]
    _assert_same(results)


def test_activation_checkpointing_takes_the_full_pass(policy, monkeypatch):
    from grpo_cli.models.loading import enable_activation_checkpointing

    enable_activation_checkpointing(policy)
    assert not logprobs.shared_prefix.shareable(policy)
    ids, attn, mask = _prompt_batch([5, 3], [2, 4])
    results, taken = _shared_vs_full(policy, ids, attn, mask, monkeypatch)
    assert taken == []
    _assert_same(results)


def test_sliding_window_models_are_not_shared(policy):
    policy.config.layer_types = ["sliding_attention", "full_attention"]
    assert not logprobs.shared_prefix.shareable(policy)


@pytest.mark.parametrize("config_class", ["LlamaConfig", "Qwen3Config"])
def test_other_shared_architectures_with_grouped_query_attention(config_class, monkeypatch):
    import transformers

    torch.manual_seed(0)
    config = getattr(transformers, config_class)(
        vocab_size=260,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=64,
    )
    model = transformers.AutoModelForCausalLM.from_config(config).train()
    assert logprobs.shared_prefix.shareable(model)
    ids, attn, mask = _prompt_batch([6, 2], [3, 5, 1])
    results, taken = _shared_vs_full(model, ids, attn, mask, monkeypatch, temperature=1.0)
    assert taken == [True]
    _assert_same(results)


def test_head_logprobs_without_entropy_under_no_grad():
    """The reference pass asks for log-probs only: the same values, no entropy work."""
    g = torch.Generator().manual_seed(1)
    hidden, weight = torch.randn(7, 5, generator=g), torch.randn(11, 5, generator=g)
    tokens = torch.randint(0, 11, (7,), generator=g)
    with torch.no_grad():
        logp, entropy = head_logprobs(hidden, weight, None, tokens, 0.9, block_elements=22, entropy=False)
    want = torch.log_softmax(hidden @ weight.T / 0.9, dim=-1).gather(1, tokens[:, None]).squeeze(1)
    torch.testing.assert_close(logp, want, rtol=1e-5, atol=1e-6)
    assert not entropy.any()
