"""`grpo train` through the real CLI: presets' dry runs show the papers' values, and a short run on a
random model prints the before/after table, writes its run folder and draws the training curves."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from test_cli import assert_user_error, grpo

PRESETS = Path(__file__).resolve().parents[1] / "presets"

PAPER_VALUES = {
    # DeepSeekMath section 4.2: lr 1e-6, KL 0.04, G 64, max length 1024, batch 1024, one update.
    "deepseekmath": {
        "train.optimizer.lr": 1e-6,
        "train.loss.beta": 0.04,
        "train.loss.kl_estimator": "k3",
        "sampling.n": 64,
        "sampling.max_new_tokens": 1024,
        "train.run.batch_size": 1024,
        "train.run.mu": 1,
        "train.loss.aggregation": "sequence",
        "algorithm": "grpo",
    },
    # DAPO: clip-higher 0.2/0.28, token-level loss, dynamic sampling, soft overlong (4096 of 20480), no KL.
    "dapo": {
        "train.loss.eps_low": 0.2,
        "train.loss.eps_high": 0.28,
        "train.loss.aggregation": "token",
        "train.filtering.dynamic_sampling": True,
        "train.filtering.soft_overlong": True,
        "train.filtering.overlong_cache": 4096,
        "sampling.max_new_tokens": 20480,
        "train.loss.beta": 0.0,
        "sampling.n": 16,
        "algorithm": "grpo",
    },
    # Dr. GRPO: no std scaling, constant normaliser.
    "dr-grpo": {"train.advantage.scale": "none", "train.loss.aggregation": "constant", "algorithm": "grpo"},
    # GSPO: sequence-level ratio with its small clip range.
    "gspo": {
        "train.loss.importance": "sequence",
        "train.loss.eps_low": 3e-4,
        "train.loss.eps_high": 4e-4,
        "algorithm": "grpo",
    },
    "tiny": {"model.path": "tiny", "data.train": "arith:train", "algorithm": "grpo"},
    # DeepSeekMath Algorithm 1: a learned process RM retrained each iteration with a 10% replay, the
    # reference reset to the policy each iteration, KL 0.04.
    "deepseekmath-iterative": {
        "train.reward_model.replay_fraction": 0.1,
        "train.reward_model.kind": "prm",
        "train.reward_model.retrain_every": 125,
        "train.loss.ref_sync_every": 125,
        "train.loss.beta": 0.04,
        "train.advantage.kind": "process",
        "algorithm": "grpo",
    },
    # SmolLM2 on the arithmetic task: its chat template, the `#### N` instruction, a LoRA adapter.
    "smollm2-arith": {"data.chat_template": "auto", "train.lora.rank": 16, "data.train": "arith:train"},
}


def lookup(tree: dict, dotted: str):
    for part in dotted.split("."):
        tree = tree[part]
    return tree


@pytest.fixture(scope="module")
def long_context_model(random_model_dir, tmp_path_factory) -> Path:
    """The random model's folder with 32k positions in its config.json: the paper presets' completions
    (up to DAPO's 20480 tokens) fit, so their dry runs pass (a dry run reads the config, not the weights)."""
    import json
    import shutil

    out = tmp_path_factory.mktemp("long") / "model"
    shutil.copytree(random_model_dir, out)
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 32768}))
    return out


@pytest.mark.parametrize("preset", sorted(PAPER_VALUES))
def test_dry_run_prints_the_presets_values(preset, long_context_model, tmp_path):
    random_model_dir = long_context_model
    model = ["--model", str(random_model_dir)] if preset != "tiny" else []
    out = grpo("train", "--preset", preset, *model, "--dry-run", cwd=tmp_path).stdout
    resolved = yaml.safe_load(out)
    for key, value in PAPER_VALUES[preset].items():
        assert lookup(resolved, key) == value, key
    if model:
        assert resolved["model"]["path"] == str(random_model_dir)
    assert not (tmp_path / "runs").exists()  # a dry run writes nothing


# Staged presets: each stage's values (the dry run prints one config per stage under `# stage N: NAME`).
STAGED_VALUES = {
    # SmolLM2: an SFT warm-up on the task's solutions, then GRPO from its checkpoint, bf16 where it pays.
    "smollm2": [
        {"algorithm": "sft", "sampling.n": 1, "model.dtype": "auto", "data.train": "arith:train"},
        {"algorithm": "grpo", "train.filtering.dynamic_sampling": True, "train.lora.rank": 0},
    ],
}


@pytest.mark.parametrize("preset", sorted(STAGED_VALUES))
def test_dry_run_prints_each_stage_of_a_staged_preset(preset, long_context_model, tmp_path):
    out = grpo("train", "--preset", preset, "--model", str(long_context_model), "--dry-run", cwd=tmp_path).stdout
    chunks = re.split(r"^# stage \d+: \w+$", out, flags=re.M)[1:]
    stages = [yaml.safe_load(chunk) for chunk in chunks]
    assert len(stages) == len(STAGED_VALUES[preset])
    for resolved, values in zip(stages, STAGED_VALUES[preset]):
        for key, value in values.items():
            assert lookup(resolved, key) == value, key
    assert stages[0]["model"]["path"] == str(long_context_model)
    assert stages[1]["model"]["path"].endswith(f"1-sft/checkpoints/step-{stages[0]['train']['run']['steps']:06d}")
    assert not (tmp_path / "runs").exists()


def test_every_preset_file_is_covered():
    presets = Path(__file__).resolve().parents[1] / "presets"
    assert sorted(p.stem for p in presets.glob("*.yaml")) == sorted([*PAPER_VALUES, *STAGED_VALUES])


def test_short_run_prints_before_after_and_plots(random_model_dir, tmp_path):
    proc = grpo(
        "train",
        "--model",
        str(random_model_dir),
        "--out",
        "run",
        "--steps",
        "2",
        "--threads",
        "1",
        "--plot",
        "curves.png",
        "--set",
        "data.limit=20",
        "--set",
        "sampling.n=4",
        "--set",
        "sampling.max_new_tokens=8",
        "--set",
        "train.run.batch_size=8",
        "--set",
        "train.run.eval_n=2",
        "--set",
        "train.run.eval_limit=4",
        cwd=tmp_path,
    )
    assert "before" in proc.stderr and "after" in proc.stderr and "held-out accuracy" in proc.stderr
    run = tmp_path / "run"
    assert (run / "config.yaml").is_file() and (run / "metrics.jsonl").is_file() and (run / "eval.json").is_file()
    assert (run / "checkpoints" / "step-000002" / "model.safetensors").is_file()
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The checkpoint is a model folder the other commands accept.
    grpo(
        "eval",
        "--model",
        str(run / "checkpoints" / "step-000002"),
        "--data",
        "arith:test",
        "--n",
        "2",
        "--set",
        "data.limit=3",
        "--set",
        "sampling.max_new_tokens=8",
        "--threads",
        "1",
        cwd=tmp_path,
    )


def test_bad_batch_size_is_one_line(random_model_dir, tmp_path):
    proc = grpo(
        "train",
        "--model",
        str(random_model_dir),
        "--set",
        "sampling.n=3",
        "--set",
        "train.run.batch_size=8",
        cwd=tmp_path,
        expect=None,
    )
    assert_user_error(proc, "train.run.batch_size=8", "sampling.n=3")


def test_resume_without_a_run_is_one_line(tmp_path):
    proc = grpo("train", "--resume", "nowhere", cwd=tmp_path, expect=None)
    assert_user_error(proc, "nowhere")


# ------------------------------------------------------------------ in process, the core mocked


def _invoke(args: list[str], cwd: Path, monkeypatch: pytest.MonkeyPatch):
    from typer.testing import CliRunner

    from grpo_cli.cli.main import app

    monkeypatch.chdir(cwd)
    return CliRunner().invoke(app, args)


def test_train_options_resolve_into_the_config_the_core_gets(tmp_path, monkeypatch):
    """Options, --set and the preset, resolved once by the CLI into the Config `trainer.train` gets."""
    import grpo_cli.training.trainer as trainer

    calls = []

    def fake_train(cfg, report, *, resume=False):
        calls.append((cfg, resume))
        return trainer.TrainResult(Path(cfg.train.run.out_dir), None, None, None, cfg.train.run.steps)

    monkeypatch.setattr(trainer, "train", fake_train)
    args = ["train", "--steps", "3", "--out", "run", "--seed", "5", "--report-to", "none", "--log-completions", "2"]
    args += ["--set", "data.instruction=Answer as: #### N", "--set", "train.loss.beta=0", "--threads", "1", "--quiet"]
    result = _invoke(args, tmp_path, monkeypatch)
    assert result.exit_code == 0, result.output
    ((cfg, resume),) = calls
    assert (cfg.train.run.steps, cfg.train.run.out_dir, cfg.seed, cfg.model.threads) == (3, "run", 5, 1)
    assert cfg.train.run.report_to == [] and cfg.train.run.log_completions == 2 and cfg.train.loss.beta == 0.0
    assert cfg.data.instruction == "Answer as: #### N" and not resume
    assert (
        cfg.train.optimizer.lr == yaml.safe_load((PRESETS / "tiny.yaml").read_text())["train"]["optimizer"]["lr"]
    )  # the preset's

    # --resume: the run's own config is the base, options given now override it
    from grpo_cli.config import dump_config

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text(dump_config(cfg), encoding="utf-8")
    result = _invoke(["train", "--resume", "run", "--steps", "6", "--quiet"], tmp_path, monkeypatch)
    assert result.exit_code == 0, result.output
    cfg, resume = calls[-1]
    assert resume and cfg.train.run.steps == 6 and cfg.seed == 5 and cfg.data.instruction == "Answer as: #### N"


def test_eval_options_resolve_into_the_config_the_core_gets(tmp_path, monkeypatch):
    import grpo_cli.pipeline.evaluate as evaluate

    calls = []

    def fake_evaluate_model(cfg, model, report, label=None):
        calls.append((cfg, model))
        result = {"problems": 2, "n": 4, "accuracy": 0.5, "pass@k": {1: 0.5, 4: 1.0}, "maj@k": {1: 0.5, 4: 0.5}}
        return evaluate.EvalRun(label or model, result, [])

    monkeypatch.setattr(evaluate, "evaluate_model", fake_evaluate_model)
    args = ["eval", "--model", "tiny", "--n", "4", "--temperature", "0.5", "--data", "arith:train", "--out", "ev"]
    result = _invoke([*args, "--set", "data.limit=2", "--json", "--quiet"], tmp_path, monkeypatch)
    assert result.exit_code == 0, result.output
    ((cfg, model),) = calls
    assert model == "tiny" and cfg.model.path == "tiny" and cfg.data.eval == "arith:train"
    assert (cfg.eval.n, cfg.eval.k, cfg.sampling.temperature, cfg.data.limit) == (4, [1, 4], 0.5, 2)
    written = yaml.safe_load((tmp_path / "ev" / "config.yaml").read_text())  # the config that ran
    assert written["eval"]["n"] == 4 and (tmp_path / "ev" / "results.json").is_file()
