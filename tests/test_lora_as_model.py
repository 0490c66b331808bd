"""A LoRA run's checkpoint is a model like any other: `--model CHECKPOINT` of `grpo sample`, `grpo eval`
and `grpo train` loads its base model (the one adapter_config.json names, or `model.base`) with the
adapter merged in; a base that is not there is a one-line error naming it and the fix."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from grpo_cli.models import lora

pytest.importorskip("peft")

SMALL = [
    "--threads",
    "1",
    "--set",
    "sampling.max_new_tokens=12",
    "--set",
    "data.limit=4",
]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "grpo_cli", *args], capture_output=True, text=True)


def _ok(*args: str) -> str:
    proc = _cli(*args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def lora_checkpoint(tmp_path_factory) -> Path:
    """The last checkpoint of a 2-step LoRA run of the shipped model (the real CLI)."""
    run = tmp_path_factory.mktemp("lora-run") / "run"
    sets = ["train.lora.rank=4", "train.lora.alpha=8", "train.run.batch_size=8", "train.run.micro_batch_size=8"]
    sets += ["sampling.n=4", "train.run.eval_n=0", "data.limit=16"]
    _ok("train", "--steps", "2", "--out", str(run), "--threads", "1", *[a for s in sets for a in ("--set", s)])
    return run / "checkpoints" / "step-000002"


@pytest.fixture
def trained_copy(lora_checkpoint, tmp_path) -> Path:
    """A copy of the checkpoint whose adapter is far from zero (two steps may leave B = 0: no reward
    signal), so a model that ignored it would sample differently."""
    ckpt = tmp_path / "ckpt"
    shutil.copytree(lora_checkpoint, ckpt)
    weights = load_file(str(ckpt / lora.ADAPTER_WEIGHTS))
    g = torch.Generator().manual_seed(0)
    for name, value in weights.items():
        if "lora_B" in name:
            weights[name] = torch.randn(value.shape, generator=g) * 0.5
    save_file(weights, str(ckpt / lora.ADAPTER_WEIGHTS), metadata={"format": "pt"})
    return ckpt


def _greedy(model: str, out: Path, *extra: str) -> list[dict]:
    _ok("sample", "--model", model, "--n", "1", "--temperature", "0", "--out", str(out), *SMALL, *extra)
    return [json.loads(line) for line in out.read_text().splitlines()]


def _completions(rows: list[dict]) -> list[tuple[str, list[float]]]:
    return [(r["completion"], r["token_logprobs"]) for r in rows]


def test_the_checkpoint_names_the_shipped_model_as_tiny(lora_checkpoint):
    # not the package folder of this install, which a reinstall moves
    config = json.loads((lora_checkpoint / lora.ADAPTER_CONFIG).read_text())
    assert config["base_model_name_or_path"] == "tiny"
    assert not (lora_checkpoint / "config.json").exists()


def test_eval_compares_tiny_with_a_lora_checkpoint(lora_checkpoint):
    out = _ok("eval", "--model", "tiny", "--model", str(lora_checkpoint), "--n", "2", "--json", *SMALL)
    results = json.loads(out)["results"]
    assert list(results) == ["tiny", str(lora_checkpoint)]
    assert all(r["problems"] == 4 and r["n"] == 2 for r in results.values())


@pytest.mark.slow  # 10-15 s of CLI runs: CI's slow step
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_sampling_a_checkpoint_samples_its_merged_model(trained_copy, tmp_path, dtype):
    # in bf16 too: both merge in float32 (the checkpoint's base loads in float32 to merge, the export is float32)
    merged = tmp_path / "merged"
    _ok("model", "merge", str(trained_copy), "--out", str(merged), "--threads", "1", "--set", f"model.dtype={dtype}")
    assert {t.dtype for t in load_file(str(merged / "model.safetensors")).values()} == {torch.float32}
    precision = ("--set", f"model.dtype={dtype}")
    from_adapter = _greedy(str(trained_copy), tmp_path / "a.jsonl", *precision)
    assert _completions(from_adapter) == _completions(_greedy(str(merged), tmp_path / "m.jsonl", *precision))
    plain = _greedy("tiny", tmp_path / "t.jsonl", *precision)
    assert _completions(from_adapter) != _completions(plain)  # the adapter counts


@pytest.mark.slow  # 10-15 s of CLI runs: CI's slow step
def test_a_missing_base_is_one_line_naming_it_and_model_base_fixes_it(trained_copy, tmp_path):
    config_file = trained_copy / lora.ADAPTER_CONFIG
    config = json.loads(config_file.read_text())
    gone = tmp_path / "moved-away" / "base-model"
    config_file.write_text(json.dumps({**config, "base_model_name_or_path": str(gone)}))
    for command in (
        ["eval", "--model", "tiny", "--model", str(trained_copy)],
        ["sample", "--model", str(trained_copy)],
        ["model", "merge", str(trained_copy)],
    ):
        proc = _cli(*command, "--out", str(tmp_path / "out"), *SMALL)
        assert proc.returncode == 2
        (line,) = proc.stderr.strip().splitlines()
        assert str(gone) in line and "--set model.base=" in line
        assert not (tmp_path / "out").exists()
    proc = _cli("sample", "--model", str(trained_copy), "--set", "model.base=/nowhere", "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and "model.base=/nowhere: not found" in proc.stderr
    fixed = _greedy(str(trained_copy), tmp_path / "fixed.jsonl", "--set", "model.base=tiny")
    config_file.write_text(json.dumps(config))
    assert _completions(fixed) == _completions(_greedy(str(trained_copy), tmp_path / "named.jsonl"))


@pytest.mark.slow  # 10-15 s of CLI runs: CI's slow step
def test_train_continues_from_a_lora_checkpoint(trained_copy, tmp_path):
    # A new adapter on the checkpoint's merged model; with lr 0 it stays zero, so the new checkpoint
    # is the old one's model (loaded through two adapters).
    run = tmp_path / "run"
    sets = ["train.lora.rank=2", "train.optimizer.lr=0", "train.run.batch_size=4", "sampling.n=4", "train.run.eval_n=0"]
    _ok(
        "train",
        "--model",
        str(trained_copy),
        "--steps",
        "1",
        "--out",
        str(run),
        *SMALL,
        *[a for s in sets for a in ("--set", s)],
    )
    ckpt = run / "checkpoints" / "step-000001"
    assert json.loads((ckpt / lora.ADAPTER_CONFIG).read_text())["base_model_name_or_path"] == str(
        trained_copy.resolve()
    )
    want = _completions(_greedy(str(trained_copy), tmp_path / "old.jsonl"))
    assert _completions(_greedy(str(ckpt), tmp_path / "new.jsonl")) == want


def test_resuming_a_lora_run_passes_the_model_check(lora_checkpoint):
    # the preflight of --resume reads the last checkpoint's model: the adapter's base
    out = _ok("train", "--resume", str(lora_checkpoint.parent.parent), "--steps", "4", "--dry-run")
    assert "rank: 4" in out


@pytest.mark.slow  # 10-15 s of CLI runs: CI's slow step
def test_an_adapter_saved_without_a_tokenizer_takes_its_base_tokenizer(trained_copy, tmp_path):
    # PEFT's own save_pretrained writes no tokenizer: the base's is the one the adapter was trained with
    want = _completions(_greedy(str(trained_copy), tmp_path / "with.jsonl"))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (trained_copy / name).unlink()
    assert _completions(_greedy(str(trained_copy), tmp_path / "without.jsonl")) == want


def test_a_verifier_model_option_takes_a_lora_checkpoint(trained_copy, tmp_path, monkeypatch):
    # `prm:backend=hf,model=CKPT` (a reward model trained with LoRA): the scoring stage hands the
    # verifier a plain folder, the checkpoint merged once into the cache, equal to `grpo model merge`
    from grpo_cli.pipeline.scoring import plain_model_option

    monkeypatch.setenv("GRPO_CACHE", str(tmp_path / "cache"))
    options = plain_model_option({"backend": "hf", "model": str(trained_copy)})
    merged = Path(options["model"])
    assert options["backend"] == "hf" and merged.parent == tmp_path / "cache" / "merged"
    _ok("model", "merge", str(trained_copy), "--out", str(tmp_path / "by-hand"))
    ours, by_hand = (
        load_file(str(merged / "model.safetensors")),
        load_file(str(tmp_path / "by-hand" / "model.safetensors")),
    )
    assert ours.keys() == by_hand.keys() and all(torch.equal(ours[k], by_hand[k]) for k in ours)
    written = (merged / "model.safetensors").stat().st_mtime_ns
    assert plain_model_option({"model": str(trained_copy)})["model"] == str(merged)  # cached: not merged again
    assert (merged / "model.safetensors").stat().st_mtime_ns == written
    plain = {"model": str(tmp_path / "by-hand")}
    assert plain_model_option(plain) is plain  # a plain folder, or no model option, passes through
