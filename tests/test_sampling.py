"""The transformers sampler against plain transformers: greedy parity with `generate`, log-probs
equal to a full forward pass, stop/length bookkeeping, seeding, batching invariance, and cached,
batched decoding with early stops equal to recomputing each sequence from scratch."""

from __future__ import annotations

import pytest
import torch

from grpo_cli.errors import UserError
from grpo_cli.models.loading import eos_token_ids, load_tokenizer
from grpo_cli.sampling.base import SamplingParams
from grpo_cli.sampling.hf import HFSampler

PROMPTS = [
    "What is 3 + 4 * 5 - 2?\n",
    "Hi\n",
    "What is 12 - 7?\n",
    "A much longer prompt, with words and numbers 1 2 3 in it.\n",
    "7\n",
]


@pytest.fixture(scope="module")
def policy(random_model_dir):
    from transformers import AutoModelForCausalLM

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    tokenizer = load_tokenizer(random_model_dir)  # left padding
    model = AutoModelForCausalLM.from_pretrained(random_model_dir, dtype=torch.float32).eval()
    yield model, tokenizer
    torch.set_num_threads(threads)


def _sampler(policy, batch_size: int = 64) -> HFSampler:
    model, tokenizer = policy
    return HFSampler(model, tokenizer, eos_token_ids(model, tokenizer), batch_size=batch_size)


def _ids(results) -> list[list[list[int]]]:
    return [[c.token_ids for c in group] for group in results]


def test_greedy_equals_generate_with_left_padding(policy):
    model, tokenizer = policy
    max_new = 24
    results = _sampler(policy).generate(PROMPTS, SamplingParams(n=1, temperature=0, max_new_tokens=max_new))

    enc = tokenizer(PROMPTS, return_tensors="pt", padding=True)  # one batch, left-padded
    assert len(set(enc["attention_mask"].sum(1).tolist())) > 1, "prompts should differ in length"
    with torch.no_grad():
        out = model.generate(
            **enc,
            do_sample=False,
            max_new_tokens=max_new,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    eos = tokenizer.eos_token_id
    for row, (group, prompt) in enumerate(zip(results, PROMPTS)):
        expected = out[row, enc["input_ids"].shape[1] :].tolist()
        if eos in expected:  # generate pads finished rows; the sampler stops at (and keeps) eos
            expected = expected[: expected.index(eos) + 1]
        (c,) = group
        assert c.token_ids == expected, prompt
        assert c.prompt_ids == tokenizer(prompt)["input_ids"]


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_logprobs_equal_a_full_forward_pass(policy, temperature):
    model, _ = policy
    results = _sampler(policy).generate(
        PROMPTS, SamplingParams(n=3, temperature=temperature, max_new_tokens=16, seed=1)
    )
    for group in results:
        for c in group:
            assert len(c.logprobs) == len(c.token_ids) > 0
            ids = torch.tensor([c.prompt_ids + c.token_ids])
            with torch.no_grad():
                logits = model(input_ids=ids).logits[0].float()  # [P + L, V], no padding
            # the logits at position t predict token t + 1: completion token i is predicted at P - 1 + i
            logp = torch.log_softmax(logits[len(c.prompt_ids) - 1 : -1] / temperature, dim=-1)  # [L, V]
            expected = logp.gather(1, torch.tensor(c.token_ids)[:, None]).squeeze(1)
            torch.testing.assert_close(torch.tensor(c.logprobs), expected, atol=1e-4, rtol=0)


def test_finish_reason_stop_exactly_at_eos_else_length(policy):
    model, tokenizer = policy
    stop_ids = eos_token_ids(model, tokenizer)
    max_new = 12
    results = _sampler(policy).generate(PROMPTS, SamplingParams(n=16, temperature=1.0, max_new_tokens=max_new, seed=0))
    reasons = set()
    for group in results:
        assert len(group) == 16
        for c in group:
            reasons.add(c.finish_reason)
            assert not any(t in stop_ids for t in c.token_ids[:-1])  # nothing generated after a stop
            if c.finish_reason == "stop":
                assert c.token_ids[-1] in stop_ids
                assert len(c.token_ids) <= max_new
            else:
                assert c.finish_reason == "length"
                assert c.token_ids[-1] not in stop_ids
                assert len(c.token_ids) == max_new
            assert c.text == tokenizer.decode([t for t in c.token_ids if t not in stop_ids], skip_special_tokens=True)
    assert reasons == {"stop", "length"}, "the random model should produce both kinds here"


def test_same_seed_same_samples_different_seed_different(policy):
    sampler = _sampler(policy)
    params = SamplingParams(n=4, temperature=1.0, max_new_tokens=16, seed=5)
    first = sampler.generate(PROMPTS, params)
    again = sampler.generate(PROMPTS, params)
    other = sampler.generate(PROMPTS, SamplingParams(n=4, temperature=1.0, max_new_tokens=16, seed=6))
    assert _ids(first) == _ids(again)
    assert [[c.logprobs for c in g] for g in first] == [[c.logprobs for c in g] for g in again]
    assert _ids(first) != _ids(other)
    # the n completions of one prompt are not copies of each other
    assert all(len({tuple(c.token_ids) for c in group}) > 1 for group in first)


def test_batch_size_does_not_change_greedy_results(policy):
    params = SamplingParams(n=2, temperature=0, max_new_tokens=16)
    small = _sampler(policy, batch_size=3).generate(PROMPTS, params)
    large = _sampler(policy, batch_size=64).generate(PROMPTS, params)
    assert _ids(small) == _ids(large)
    for s_group, l_group in zip(small, large):
        for s, l in zip(s_group, l_group):
            torch.testing.assert_close(torch.tensor(s.logprobs), torch.tensor(l.logprobs), atol=1e-4, rtol=0)


def test_tiny_top_p_is_greedy(policy):
    sampler = _sampler(policy)
    greedy = sampler.generate(PROMPTS, SamplingParams(n=1, temperature=0, max_new_tokens=16))
    nucleus = sampler.generate(PROMPTS, SamplingParams(n=3, temperature=1.0, top_p=1e-6, max_new_tokens=16, seed=3))
    for g_group, n_group in zip(greedy, nucleus):
        for c in n_group:
            assert c.token_ids == g_group[0].token_ids


def test_prompt_too_long_for_the_model_is_a_user_error(policy):
    model, _ = policy
    limit = model.config.max_position_embeddings
    sampler = _sampler(policy)
    with pytest.raises(UserError, match=f"prompt 1 has .* exceeds the model's {limit} positions"):
        sampler.generate(["short\n", "x" * (limit - 10)], SamplingParams(n=1, max_new_tokens=16))
    # exactly at the limit is fine
    (group,) = sampler.generate(["x" * (limit - 4)], SamplingParams(n=1, temperature=0, max_new_tokens=4))
    assert len(group[0].token_ids) <= 4


def test_model_mode_is_restored(policy):
    model, _ = policy
    model.train()
    try:
        _sampler(policy).generate(["Hi\n"], SamplingParams(n=1, temperature=0, max_new_tokens=2))
        assert model.training
    finally:
        model.eval()


def test_draw_follows_the_probabilities_and_never_picks_a_zero():
    from grpo_cli.sampling.hf import draw

    probs = torch.tensor([0.1, 0.0, 0.2, 0.7, 0.0]).repeat(100_000, 1) * 3  # unnormalised on purpose
    tokens = draw(probs, torch.rand(len(probs), generator=torch.Generator().manual_seed(0)))
    freq = torch.bincount(tokens, minlength=5).double() / len(tokens)
    # 100k draws: the standard error of each frequency is below 0.0015; 0.006 is 4 of them.
    torch.testing.assert_close(freq, torch.tensor([0.1, 0.0, 0.2, 0.7, 0.0], dtype=torch.float64), atol=0.006, rtol=0)
    assert freq[1] == 0 and freq[4] == 0
    # the row's uniform picks its token: u = 0 the first non-zero entry, u just below 1 the last
    edges = draw(probs[:2], torch.tensor([0.0, 0.999999]))
    assert edges.tolist() == [0, 3]


@pytest.fixture(scope="module")
def peaked_policy(random_model_dir):
    """The random model's shape with larger initial weights: peaked, prompt-dependent next-token
    distributions, so greedy decoding varies and stop tokens end rows at different steps."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(random_model_dir)
    config.initializer_range = 0.5
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval(), load_tokenizer(random_model_dir)
    torch.set_num_threads(threads)


def _full_recompute(model, prompt_ids, params, seed, stop_ids):
    """Reference decoding of one sequence: no KV cache, no padding, no batch; the whole sequence is
    run again for every token. Same per-sequence uniforms as the sampler (see SamplingParams)."""
    from grpo_cli.sampling.hf import _sample_next

    uniforms = torch.rand(params.max_new_tokens, generator=torch.Generator().manual_seed(seed))
    ids, logps = [], []
    for step in range(params.max_new_tokens):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([prompt_ids + ids])).logits[:, -1]
        tok, lp = _sample_next(logits, params, uniforms[step : step + 1])
        ids.append(int(tok))
        logps.append(float(lp))
        if ids[-1] in stop_ids:
            return ids, logps, "stop"
    return ids, logps, "length"


@pytest.mark.parametrize("temperature, top_p", [(0.0, 1.0), (1.0, 0.9)])
def test_cached_batched_decoding_equals_full_recompute(peaked_policy, monkeypatch, temperature, top_p):
    from grpo_cli.sampling import hf

    model, tokenizer = peaked_policy
    stop_ids = set(range(3, 259, 9))  # about 1 token in 9: rows stop at different steps, some never
    params = SamplingParams(n=4, temperature=temperature, top_p=top_p, max_new_tokens=12, seed=7)
    expected = [
        [
            _full_recompute(model, tokenizer(p)["input_ids"], params, hf.stream_seed(params.seed, i, j), stop_ids)
            for j in range(params.n)
        ]
        for i, p in enumerate(PROMPTS)
    ]
    outcomes = {(reason, len(ids)) for group in expected for ids, _, reason in group}
    assert {r for r, _ in outcomes} == {"stop", "length"} and len(outcomes) > 3, "the test needs mixed early stops"
    # Finished rows leave the batch at every stop (0), in groups (the default), or never (1);
    # batch_size 7 splits the copies of a prompt across batches.
    for drop_fraction in (0.0, hf.DROP_FRACTION, 1.0):
        monkeypatch.setattr(hf, "DROP_FRACTION", drop_fraction)
        results = HFSampler(model, tokenizer, stop_ids, batch_size=7).generate(PROMPTS, params)
        for group, expected_group in zip(results, expected):
            for c, (ids, logps, reason) in zip(group, expected_group):
                assert (c.token_ids, c.finish_reason) == (ids, reason), drop_fraction
                torch.testing.assert_close(torch.tensor(c.logprobs), torch.tensor(logps), atol=1e-4, rtol=0)


def test_transformers_path_sampling_raises_no_deprecation_warning(random_model_dir):
    """transformers 5.x takes the KV cache as `cache` and warns (FutureWarning) on `past_key_values`,
    which 5.40 removes. That warning is raised at torch's module call, not in our module, so a filter
    scoped to `grpo_cli` would miss it: here every FutureWarning and DeprecationWarning during the
    sampling stage is an error."""
    import warnings

    from grpo_cli.config import load_config
    from grpo_cli.models import llama
    from grpo_cli.pipeline.sample import load_policy, sampling_params

    cfg = load_config(None, ["model.impl=transformers", "model.device=cpu", "model.threads=1"])
    policy = load_policy(cfg, str(random_model_dir))
    assert not isinstance(policy.model, llama.CausalLM)  # transformers' model, not grpo's own
    params = sampling_params(cfg, n=2, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        results = policy.sampler.generate(PROMPTS[:2], params)
    assert [len(group) for group in results] == [2, 2]
    assert all(c.token_ids for group in results for c in group)
