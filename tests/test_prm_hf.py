"""The `prm` verifier's `hf` backend on tiny models built here: Math-Shepherd style (a causal LM, the
`+` probability among `+`/`-` at each step tag) and Qwen2.5-Math-PRM style (a 2-class per-token head
read at each `<extra_0>`). Scores are checked against hand-set weights and against an independent
plain forward pass; batching must not change them."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import SMALL_SHAPE
from grpo_verifiers.prm import PRMVerifier

from grpo_cli.errors import UserError
from grpo_cli.plugins import load_verifier

TAG, SEP = "ки", "<extra_0>"
CHATML = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
# With every layer's output projections zeroed, the last hidden state at a token is its own
# embedding after the final RMSNorm. The marker's embedding is all ones (RMS 1), so the head sees
# a vector of ones there: a head row of ln(3)/H ones gives logit ln 3, a zero row gives 0, and
# softmax([ln 3, 0]) = [3/4, 1/4]. Any other position sees a random embedding instead.
KNOWN = 0.75

# "4 * 5 = 20" [0, 10), "3 + 20 = 23" [11, 22), "#### 23" [23, 30)
COMPLETION = "4 * 5 = 20\n3 + 20 = 23\n#### 23"
ENDS = [10, 22, 30]


def build(out: Path, kind: str, *, known: bool, chat_template: str | None = None) -> Path:
    """A ~20k-parameter Qwen2 model with the project's byte-level tokenizer plus the marker token.
    kind: `lm` (Qwen2ForCausalLM, Math-Shepherd shape) or `token` (Qwen2ForTokenClassification,
    2 labels, the Qwen-PRM shape)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen2ForTokenClassification

    from grpo_cli.builtin import tiny

    tokenizer = tiny.build_tokenizer()
    marker = TAG if kind == "lm" else SEP
    tokenizer.add_tokens([marker], special_tokens=kind == "token")
    if chat_template:
        tokenizer.chat_template = chat_template
    fields = tiny.model_config(tokenizer).to_dict()
    for derived in ("layer_types", "head_dim"):
        fields.pop(derived, None)
    config = Qwen2Config.from_dict(
        {**fields, **SMALL_SHAPE, "vocab_size": len(tokenizer), "tie_word_embeddings": False, "num_labels": 2}
    )
    torch.manual_seed(1 if kind == "lm" else 2)
    model = (Qwen2ForCausalLM if kind == "lm" else Qwen2ForTokenClassification)(config).eval()
    if known:
        hidden = config.hidden_size
        with torch.no_grad():
            for layer in model.model.layers:
                layer.self_attn.o_proj.weight.zero_()
                layer.mlp.down_proj.weight.zero_()
            model.model.norm.weight.fill_(1.0)
            marker_id = tokenizer.convert_tokens_to_ids(marker)
            model.model.embed_tokens.weight[marker_id] = 1.0
            if kind == "lm":
                plus, minus = (tokenizer.encode(t, add_special_tokens=False)[0] for t in "+-")
                model.lm_head.weight[plus] = math.log(3) / hidden
                model.lm_head.weight[minus] = 0.0
            else:
                model.score.weight[1] = math.log(3) / hidden
                model.score.weight[0] = 0.0
    model.save_pretrained(out)
    tiny.save_tokenizer(tokenizer, out)
    if chat_template:  # save_tokenizer drops templates: the project's models have none
        import json

        cfg_path = out / "tokenizer_config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["chat_template"] = chat_template
        cfg_path.write_text(json.dumps(cfg))
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("prm-models")
    return {
        "lm_known": build(root / "lm-known", "lm", known=True),
        "lm_random": build(root / "lm-random", "lm", known=False),
        "token_known": build(root / "token-known", "token", known=True),
        "token_random": build(root / "token-random", "token", known=False, chat_template=CHATML),
    }


def shepherd(model: Path, **options) -> PRMVerifier:
    return PRMVerifier(backend="hf", model=str(model), final_answer=False, device="cpu", **options)


def qwen(model: Path, **options) -> PRMVerifier:
    return PRMVerifier(backend="hf", style="qwen", model=str(model), final_answer=False, device="cpu", **options)


def rewards(verdict) -> list[float]:
    return [step["reward"] for step in verdict.steps]


# ------------------------------------------------------------------ known weights


@pytest.mark.parametrize(("make", "name"), [(shepherd, "lm_known"), (qwen, "token_known")])
@pytest.mark.parametrize(("outcome", "expected"), [("min", KNOWN), ("last", KNOWN), ("product", KNOWN**3)])
def test_known_weights_give_known_step_scores(models, make, name, outcome, expected):
    verifier = make(models[name], outcome=outcome)
    (verdict,) = verifier.verify([{"prompt": "What is 3 + 4 * 5?", "completion": COMPLETION}])
    assert [step["end"] for step in verdict.steps] == ENDS  # the verifier's offsets, not the model's
    assert rewards(verdict) == pytest.approx([KNOWN] * 3, abs=1e-5)
    assert verdict.reward == pytest.approx(expected, abs=1e-5)
    verifier.close()


def test_tag_inside_a_step_does_not_shift_the_scores(models):
    # With split=line, the middle line contains the tag string itself; the model sees it, but the
    # score is read at the tag this backend inserted after each step: still 3 steps, 3 scores.
    # "4 * 5 = 20" [0, 10), "3 + 20 = 23 ки ok" [11, 28), "#### 23" [29, 36)
    verifier = shepherd(models["lm_known"])
    completion = f"4 * 5 = 20\n3 + 20 = 23 {TAG} ok\n#### 23"
    (verdict,) = verifier.verify([{"prompt": "q", "completion": completion}])
    assert [s["end"] for s in verdict.steps] == [10, 28, 36]
    assert rewards(verdict) == pytest.approx([KNOWN] * 3, abs=1e-5)


# ------------------------------------------------- parity with a plain forward pass

SAMPLES = [
    {"prompt": "What is 3 + 4 * 5?", "completion": COMPLETION},
    {"prompt": "Compute 7 - 2.", "completion": "7 - 2 = 5\n#### 5"},
    {"prompt": [{"role": "user", "content": "Chat: 2 * 3?"}], "completion": "2 * 3 = 6\nthen\n#### 6"},
    {"prompt": "Nothing", "completion": "  \n"},  # no steps: no scores, no model call needed
    {"prompt": "Longer " * 3, "completion": "\n".join(f"{k} + 1 = {k + 1}" for k in range(5))},
]


def question(sample) -> str:
    prompt = sample["prompt"]
    return prompt[-1]["content"] if isinstance(prompt, list) else prompt


def plain_shepherd_scores(model_dir: Path, sample) -> list[float]:
    """Math-Shepherd's recipe, written out: "{q} {step} ки\\n{step} ки", `+` among `+`/`-` at ки."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    steps = [line.strip() for line in sample["completion"].split("\n") if line.strip()]
    text = question(sample) + " " + "\n".join(f"{step} {TAG}" for step in steps)
    ids = torch.tensor([tok(text)["input_ids"]])
    plus, minus = tok.encode("+", add_special_tokens=False)[0], tok.encode("-", add_special_tokens=False)[0]
    with torch.no_grad():
        logits = model(ids).logits[0]  # [T, V]
    at_tags = logits[ids[0] == tok.convert_tokens_to_ids(TAG)][:, [plus, minus]]
    return at_tags.softmax(-1)[:, 0].tolist()


def plain_qwen_scores(model_dir: Path, sample) -> list[float]:
    """Qwen2.5-Math-PRM's recipe: system/user/assistant chat, steps joined and ended by <extra_0>,
    softmax(logits)[..., 1] at the separators."""
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForTokenClassification.from_pretrained(model_dir, dtype=torch.float32).eval()
    steps = [line.strip() for line in sample["completion"].split("\n") if line.strip()]
    messages = [
        {"role": "system", "content": "Please reason step by step, and put your final answer within \\boxed{}."},
        {"role": "user", "content": question(sample)},
        {"role": "assistant", "content": SEP.join(steps) + SEP},
    ]
    text = tok.apply_chat_template(messages, tokenize=False)
    ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        logits = model(ids).logits[0]  # [T, 2]
    return logits[ids[0] == tok.convert_tokens_to_ids(SEP)].softmax(-1)[:, 1].tolist()


@pytest.mark.parametrize(
    ("make", "name", "plain"),
    [
        (shepherd, "lm_random", plain_shepherd_scores),
        (qwen, "token_random", plain_qwen_scores),
    ],
)
def test_scores_equal_a_plain_forward_pass_at_every_batch_size(models, make, name, plain):
    expected = [plain(models[name], sample) if sample["completion"].strip() else [] for sample in SAMPLES]
    assert len({round(x, 4) for row in expected for x in row}) > 5  # random weights: the scores differ
    for batch_size in (1, 2, 8):
        verifier = make(models[name], batch_size=batch_size)
        verdicts = verifier.verify(SAMPLES)
        assert len(verdicts) == len(SAMPLES)
        for verdict, want in zip(verdicts, expected):
            assert rewards(verdict) == pytest.approx(want, abs=1e-5), batch_size
            assert all(0.0 <= r <= 1.0 for r in rewards(verdict))
        verifier.close()


def test_truncated_steps_get_no_score(models):
    # The byte-level tokenizer gives one token per ASCII character: "q " is 2 tokens, the first step
    # "4 * 5 = 20 ки" ends at token 12; with max_length 14 the second and third tags are cut.
    verifier = shepherd(models["lm_known"], max_length=14)
    (verdict,) = verifier.verify([{"prompt": "q", "completion": COMPLETION}])
    assert verdict.steps == [{"end": 10, "reward": pytest.approx(KNOWN, abs=1e-5)}]
    assert verdict.info["truncated"] == 2


def test_final_answer_check_combines_with_the_model(models):
    # final_answer (on by default) puts min(model score, gold check) on the answer's step.
    verifier = PRMVerifier(backend="hf", model=str(models["lm_known"]), device="cpu")
    right, wrong = verifier.verify(
        [
            {"prompt": "q", "completion": COMPLETION, "answer": "23"},
            {"prompt": "q", "completion": COMPLETION, "answer": "24"},
        ]
    )
    assert rewards(right) == pytest.approx([KNOWN] * 3, abs=1e-5) and right.info["final"] == 1.0
    assert rewards(wrong) == pytest.approx([KNOWN, KNOWN, 0.0], abs=1e-5) and wrong.reward == 0.0
    verifier.close()


# ------------------------------------------------------------------ lifecycle and errors


def test_weights_load_lazily_once_and_close_releases_them(models):
    verifier = shepherd(models["lm_known"])
    backend = verifier._backend
    assert backend._model is None  # built: tokenizer checked, weights not loaded yet
    verifier.verify([{"prompt": "q", "completion": COMPLETION}])
    first = backend._model
    verifier.verify([{"prompt": "q", "completion": COMPLETION}])
    assert backend._model is first is not None
    verifier.close()
    verifier.close()  # idempotent
    assert backend._model is None


def test_bad_model_path_is_one_line(tmp_path):
    with pytest.raises(UserError) as error:
        load_verifier("prm", {"backend": "hf", "model": str(tmp_path / "nope")})
    message = str(error.value)
    assert "\n" not in message and "nope" in message and "no such Hugging Face model folder" in message
    with pytest.raises(ValueError, match="needs model=PATH"):
        PRMVerifier(backend="hf")
    adapter = tmp_path / "lora-checkpoint"  # a LoRA run's checkpoint: the adapter, no config.json
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"base_model_name_or_path": "tiny"}')
    with pytest.raises(UserError) as error:
        load_verifier("prm", {"backend": "hf", "model": str(adapter)})
    message = str(error.value)
    assert "\n" not in message and "is a LoRA adapter" in message and f"grpo model merge {adapter}" in message


def test_cli_bad_model_path(tmp_path):
    from test_cli import assert_user_error, grpo

    (tmp_path / "s.jsonl").write_text('{"prompt": "q", "completion": "1 + 1 = 2"}\n')
    proc = grpo("score", "s.jsonl", "--verifier", "prm:backend=hf,model=missing-prm/", cwd=tmp_path, expect=None)
    assert_user_error(proc, "missing-prm", "prm")
    assert not (tmp_path / "scored.jsonl").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"style": "shepherd"}, "style must be one of math_shepherd, qwen"),
        ({"good_token": "++"}, "good_token '\\+\\+' is not a single token"),
        ({"step_tag": "<tag>"}, "step_tag '<tag>' is not a single token"),
        ({"style": "qwen"}, "separator '<extra_0>' is not a single token"),  # the lm model has no <extra_0>
        ({"dtype": "float64"}, "dtype must be one of"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"colour": "red"}, "unexpected keyword argument 'colour'"),
    ],
)
def test_bad_options(models, options, message):
    with pytest.raises((ValueError, TypeError), match=message):
        PRMVerifier(backend="hf", model=str(models["lm_known"]), **options)


def test_unloadable_weights_cost_samples_not_the_run(models, tmp_path):
    # A folder whose tokenizer loads but whose weights are missing: the error shows up when the
    # first batch needs the model, as each sample's failure with one line, and is not retried per call.
    import shutil

    from grpo_cli.config import VerifierConfig
    from grpo_cli.pipeline.scoring import score

    broken = tmp_path / "broken"
    shutil.copytree(models["lm_known"], broken)
    (broken / "model.safetensors").unlink()
    verifier = shepherd(broken)
    records, summary = score([{"prompt": "q", "completion": COMPLETION}] * 2, [(VerifierConfig("prm"), verifier)])
    assert [r["rewards"]["prm"] for r in records] == [0.0, 0.0]
    assert summary.verifiers["prm"].failed == 2
    error = records[0]["info"]["prm"]["error"]
    assert "cannot load it with AutoModelForCausalLM" in error and "\n" not in error


@pytest.mark.parametrize(("make", "name"), [(shepherd, "lm_random"), (qwen, "token_random")])
def test_hf_backend_keeps_the_plugin_contract(models, make, name):
    from grpo_verifiers.testing import check_verifier

    assert check_verifier(lambda: make(models[name], batch_size=2), tolerance=1e-5) == []


# A checkpoint with its own modeling code, shaped like Qwen2.5-Math-PRM's Qwen2ForProcessRewardModel
# (a Qwen2 body, a Linear-ReLU-Linear head to 2 classes), returning the logits as its first output.
REMOTE_CODE = """
import torch
from transformers import Qwen2Model, Qwen2PreTrainedModel


class ToyProcessRewardModel(Qwen2PreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.model = Qwen2Model(config)
        self.score = torch.nn.Sequential(
            torch.nn.Linear(config.hidden_size, config.hidden_size),
            torch.nn.ReLU(),
            torch.nn.Linear(config.hidden_size, 2),
        )
        self.post_init()

    def forward(self, input_ids, attention_mask=None, **kwargs):
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return (self.score(hidden),)
"""


def test_remote_code_checkpoint_with_a_two_class_head(models, tmp_path, monkeypatch):
    import importlib
    import json
    import shutil
    import sys

    out = tmp_path / "remote"
    out.mkdir()
    (out / "modeling_toy.py").write_text(REMOTE_CODE)
    monkeypatch.syspath_prepend(str(out))
    # transformers copies remote code into its modules cache: keep that inside tmp_path.
    monkeypatch.setattr("transformers.dynamic_module_utils.HF_MODULES_CACHE", str(tmp_path / "modules"))
    monkeypatch.setattr(sys, "path", [*sys.path])
    toy = importlib.import_module("modeling_toy")
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(models["token_random"])
    torch.manual_seed(3)
    model = toy.ToyProcessRewardModel(config).eval()
    model.save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(models["token_random"] / name, out / name)
    cfg = json.loads((out / "config.json").read_text())
    cfg["auto_map"] = {"AutoModel": "modeling_toy.ToyProcessRewardModel"}
    (out / "config.json").write_text(json.dumps(cfg))

    # Expected, by hand: the chat-rendered input, softmax(logits)[..., 1] at each separator.
    sample = SAMPLES[0]
    tok = AutoTokenizer.from_pretrained(out)
    steps = COMPLETION.split("\n")
    messages = [
        {"role": "system", "content": "Please reason step by step, and put your final answer within \\boxed{}."},
        {"role": "user", "content": sample["prompt"]},
        {"role": "assistant", "content": SEP.join(steps) + SEP},
    ]
    ids = torch.tensor([tok(tok.apply_chat_template(messages, tokenize=False), add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        logits = model(ids)[0][0]  # [T, 2]
    expected = logits[ids[0] == tok.convert_tokens_to_ids(SEP)].softmax(-1)[:, 1].tolist()

    with pytest.raises(TypeError, match="trust_remote_code must be true or false"):
        qwen(out, trust_remote_code="yes")
    verifier = qwen(out, trust_remote_code=True)
    (verdict,) = verifier.verify([sample])
    assert rewards(verdict) == pytest.approx(expected, abs=1e-5) and len(expected) == 3
    assert [s["end"] for s in verdict.steps] == ENDS
    verifier.close()
    sys.modules.pop("modeling_toy", None)
