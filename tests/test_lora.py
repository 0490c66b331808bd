"""LoRA (`train.lora`): only the adapter trains, the reference is the base with the adapter off,
checkpoints are PEFT adapters that PEFT itself loads, `grpo model merge` writes a plain model equal
to the adapted one, resume is exact, and bad settings are one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_trainer import plugin_dir, small_config, weights  # noqa: F401  (plugin_dir is a fixture)

from grpo_cli.config import LoraConfig, ModelConfig, load_config
from grpo_cli.errors import UserError
from grpo_cli.models import lora
from grpo_cli.models.loading import load_model, tiny_model_dir
from grpo_cli.perf.logprobs import sequence_logprobs
from grpo_cli.report import Reporter
from grpo_cli.training import optim
from grpo_cli.training.recorder import TIMING_KEYS
from grpo_cli.training.trainer import train

pytest.importorskip("peft")

LORA = ["train.lora.rank=4", "train.lora.alpha=8", "train.optimizer.lr=1e-2"]
CPU = ModelConfig(device="cpu", threads=1)


def _adapted(model_dir: Path, *, seed: int = 0, impl: str = "auto"):
    """The model with a rank-4 adapter whose B is random (a fresh adapter's B is 0: it would change nothing)."""
    torch.manual_seed(seed)
    model = load_model(model_dir, ModelConfig(device="cpu", impl=impl), trainable=True)
    lora.attach(model, LoraConfig(rank=4, alpha=8), str(model_dir))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    return model


def _logp(model, ids: torch.Tensor) -> torch.Tensor:
    mask = torch.ones(ids.shape[0], ids.shape[1] - 1, dtype=torch.bool)
    with torch.no_grad():
        return sequence_logprobs(model, ids, torch.ones_like(ids), mask)[0]


IDS = torch.tensor([[5, 17, 30, 41, 7, 9, 12], [3, 8, 21, 13, 44, 2, 6]])


def test_only_the_adapter_trains_and_the_optimizer_holds_it_alone(random_model_dir):
    model = _adapted(random_model_dir)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    # all-linear: every linear layer but the output head has an adapter
    assert lora.linear_names(model) == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
    optimizer, _ = optim.build(model, 1e-3, (0.9, 0.99), 0.0, lambda i: 1.0)
    held = optimizer.param_groups[0]["params"]
    assert len(held) == len(trainable)
    assert sum(p.numel() for p in held) < 0.2 * sum(p.numel() for p in model.parameters())


def test_reference_is_the_base_with_the_adapter_off(random_model_dir):
    base = load_model(random_model_dir, CPU)
    model = _adapted(random_model_dir)
    with lora.adapters_disabled(model):
        torch.testing.assert_close(_logp(model, IDS), _logp(base, IDS))  # the same module, as the base
    assert not torch.allclose(_logp(model, IDS), _logp(base, IDS), atol=1e-3)  # adapter on again
    assert all(p.requires_grad for n, p in model.named_parameters() if "lora_" in n)
    with lora.adapters_disabled(base):  # no adapter: a no-op
        torch.testing.assert_close(_logp(base, IDS), _logp(base, IDS))


@pytest.mark.parametrize("impl", ["native", "transformers"])
def test_merged_weights_equal_the_adapted_model(random_model_dir, impl):
    model = _adapted(random_model_dir, impl=impl)
    merged = lora.merged_state_dict(model)
    plain = load_model(random_model_dir, ModelConfig(device="cpu", impl=impl))
    assert merged.keys() == plain.state_dict().keys()  # the base model's names, no lora_ keys
    plain.load_state_dict(merged)
    torch.testing.assert_close(_logp(plain, IDS), _logp(model, IDS), rtol=1e-5, atol=1e-5)
    lora.merge_into_base(model)  # in place: the plain model again
    assert not lora.has_adapter(model) and model.state_dict().keys() == plain.state_dict().keys()
    torch.testing.assert_close(_logp(model, IDS), _logp(plain, IDS), rtol=1e-5, atol=1e-5)


def _lora_run(model_dir: Path, out: Path, *extra: str) -> Path:
    cfg = small_config(model_dir, out, *LORA, *extra)
    return train(cfg, Reporter()).last_checkpoint


def test_lora_train_writes_a_peft_adapter_that_peft_loads_and_merge_exports(random_model_dir, plugin_dir, tmp_path):  # noqa: F811
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ckpt = _lora_run(random_model_dir, tmp_path / "run", "train.loss.beta=0.04")  # KL to the base: adapters off
    assert (ckpt / lora.ADAPTER_CONFIG).is_file() and not (ckpt / "model.safetensors").exists()
    adapter = load_file(str(ckpt / lora.ADAPTER_WEIGHTS))
    assert adapter and all(k.startswith("base_model.model.") and ".lora_" in k for k in adapter)
    assert any(v.abs().sum() > 0 for k, v in adapter.items() if "lora_B" in k)  # trained: B left 0
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    # step 1: the adapter's B is 0, so policy and reference (the base, adapters off) agree exactly;
    # after updates the policy moved away from the base, which a reference with adapters on would hide
    assert rows[0]["kl"] < 1e-7 and rows[-1]["kl"] > 1e-6, [r["kl"] for r in rows]
    assert all(r["mismatch_logp_abs_mean"] < 1e-4 for r in rows)  # hf backend: the trainer's own numbers
    assert "rollout_weight_mean" not in rows[-1]  # no correction with the hf backend

    # PEFT reads the checkpoint as its own, on transformers' model
    base = AutoModelForCausalLM.from_pretrained(str(random_model_dir)).eval()
    peft_model = PeftModel.from_pretrained(base, str(ckpt)).eval()
    with torch.no_grad():
        want = torch.log_softmax(peft_model(input_ids=IDS).logits[:, :-1], -1).gather(-1, IDS[:, 1:, None])[..., 0]

    out = tmp_path / "merged"
    proc = subprocess.run(
        [sys.executable, "-m", "grpo_cli", "model", "merge", str(ckpt), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    assert not list(tmp_path.glob(".tmp-*"))
    merged = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    assert not any("lora" in k for k in merged.state_dict())
    torch.testing.assert_close(_logp(merged, IDS), want, rtol=1e-4, atol=1e-5)
    # grpo loads a LoRA checkpoint as its merged model too
    torch.testing.assert_close(_logp(load_model(ckpt, CPU), IDS), want, rtol=1e-4, atol=1e-5)
    # the base is untouched by training
    assert all(torch.equal(v, weights(random_model_dir)[k]) for k, v in weights(random_model_dir).items())


def test_lora_resume_is_exact(random_model_dir, plugin_dir, tmp_path):  # noqa: F811
    whole = _lora_run(
        random_model_dir, tmp_path / "whole", "train.run.steps=4", "train.loss.beta=0.04", "train.run.mu=2"
    )
    cut = tmp_path / "cut"
    _lora_run(random_model_dir, cut, "train.run.steps=2", "train.loss.beta=0.04", "train.run.mu=2")
    cfg = load_config(str(cut / "config.yaml"), ["train.run.steps=4"])
    resumed = train(cfg, Reporter(), resume=True).last_checkpoint
    a, b = load_file(str(whole / lora.ADAPTER_WEIGHTS)), load_file(str(resumed / lora.ADAPTER_WEIGHTS))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    rows = [
        [{k: v for k, v in json.loads(line).items() if k not in TIMING_KEYS} for line in p.read_text().splitlines()]
        for p in (tmp_path / "whole" / "metrics.jsonl", cut / "metrics.jsonl")
    ]
    assert rows[0] == rows[1]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "grpo_cli", *args], capture_output=True, text=True)


def test_unknown_target_module_names_the_modules_that_exist(random_model_dir, tmp_path):
    proc = _cli(
        "train",
        "--model",
        str(random_model_dir),
        "--out",
        str(tmp_path / "run"),
        "--set",
        "train.lora.rank=4",
        "--set",
        "train.lora.target_modules=[q_proj,qkv]",
    )
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert "'qkv'" in line and "q_proj, up_proj, v_proj" in line
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_lora_with_fsdp_is_refused():
    with pytest.raises(UserError, match="train.lora does not work with train.run.parallel=fsdp"):
        load_config(None, ["train.lora.rank=8", "train.run.parallel=fsdp"]).check_training()
    with pytest.raises(UserError, match="ref_sync_every"):
        load_config(None, ["train.lora.rank=8", "train.loss.ref_sync_every=2"]).check_training()
    with pytest.raises(UserError, match="train.lora.rank"):
        load_config(None, ["train.lora.rank=-1"])


def test_merge_refuses_a_non_empty_folder_and_a_full_checkpoint(random_model_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    ckpt = tmp_path / "ckpt"
    model = _adapted(random_model_dir)
    lora.save_adapter(model, ckpt)
    proc = _cli("model", "merge", str(ckpt), "--out", str(out))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "not an empty folder" in proc.stderr
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"
    proc = _cli("model", "merge", str(random_model_dir), "--out", str(tmp_path / "new"))
    assert proc.returncode == 2 and "not a LoRA checkpoint" in proc.stderr
    assert not (tmp_path / "new").exists()


def test_shipped_tiny_model_takes_an_adapter():
    model = _adapted(tiny_model_dir())
    assert lora.target_modules(model, ["q_proj", "v_proj"]) == ["q_proj", "v_proj"]
    with pytest.raises(UserError, match="its linear layers are: down_proj, gate_proj"):
        lora.target_modules(model, ["query"])


@pytest.mark.slow
def test_lora_ddp_two_ranks_equal_one_process(random_model_dir, plugin_dir, tmp_path):  # noqa: F811
    from test_distributed import SETS, _cli, _env, _rows, _single, _torchrun

    sets = [*LORA, "train.loss.beta=0.04", "train.run.mu=2"]  # the reference pass (adapters off) and mu > 1 under DDP
    one, two = tmp_path / "one", tmp_path / "two"
    _single(random_model_dir, one, sets)
    _torchrun(_cli(random_model_dir, two, [*SETS, *sets]), _env(plugin_dir))
    a = load_file(str(one / "checkpoints" / "step-000003" / lora.ADAPTER_WEIGHTS))
    b = load_file(str(two / "checkpoints" / "step-000003" / lora.ADAPTER_WEIGHTS))
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-6, msg=name)
    for ra, rb in zip(_rows(one), _rows(two)):
        assert ra.keys() == rb.keys()
        for key in ra:
            assert rb[key] == pytest.approx(ra[key], rel=1e-4, abs=1e-6), (ra["step"], key)
