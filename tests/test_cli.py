"""The real CLI end to end, in subprocesses, on a random-weight model: the staged pipeline equals the
one-shot eval, records and configs are written as docs/design.md says, and bad input is one line + exit 2."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from grpo_cli.config import config_from_dict, documented_keys

SAMPLE_FIELDS = {"completion", "group", "index", "finish_reason", "completion_tokens", "token_logprobs"}
SCORED_FIELDS = {"reward", "rewards", "info"}


def grpo(*args: str, cwd: Path, expect: int | None = 0) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "COLUMNS": "200",
        "PYTHONWARNINGS": "ignore",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "grpo_cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    if expect is not None:
        assert proc.returncode == expect, f"grpo {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def assert_user_error(proc: subprocess.CompletedProcess, *words: str, only_line: bool = True) -> str:
    """Exit code 2, one line `error: ...` last on stderr (the only one unless work was done before
    the error), no traceback."""
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    if not only_line:
        lines = lines[-1:]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def read_config(path: Path):
    return config_from_dict(yaml.safe_load(path.read_text(encoding="utf-8")))


@pytest.fixture
def samples_file(tmp_path) -> Path:
    """Two hand-written sample records (no model needed)."""
    rows = [
        {
            "id": "a",
            "prompt": "What is 1 + 1?",
            "answer": "2",
            "completion": "1 + 1 = 2\n#### 2",
            "group": 0,
            "index": 0,
        },
        {"id": "a", "prompt": "What is 1 + 1?", "answer": "2", "completion": "#### 3", "group": 0, "index": 1},
    ]
    path = tmp_path / "hand.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- the pipeline


def test_sample_score_eval_equals_one_shot_eval(tmp_path, random_model_dir, arith_file):
    model, data = str(random_model_dir), str(arith_file)
    grpo("sample", "--n", "4", "--model", model, "--data", data, "--out", "s.jsonl", "--threads", "1", cwd=tmp_path)
    grpo("score", "s.jsonl", "--out", "sc.jsonl", cwd=tmp_path)
    staged = json.loads(
        grpo("eval", "--samples", "sc.jsonl", "--k", "1,2,4", "--n", "4", "--json", "-q", cwd=tmp_path).stdout
    )["results"]
    one_shot = json.loads(
        grpo(
            "eval",
            "--model",
            model,
            "--data",
            data,
            "--n",
            "4",
            "--k",
            "1,2,4",
            "--json",
            "-q",
            "--out",
            "E",
            "--threads",
            "1",
            cwd=tmp_path,
        ).stdout
    )
    results_json = json.loads((tmp_path / "E" / "results.json").read_text())
    assert one_shot == results_json  # --json prints what results.json holds
    one_shot = one_shot["results"]
    assert list(staged) == ["sc.jsonl"] and list(one_shot) == [model]
    assert staged["sc.jsonl"] == one_shot[model]
    result = one_shot[model]
    assert (result["problems"], result["n"]) == (6, 4)
    assert set(result["pass@k"]) == set(result["maj@k"]) == {"1", "2", "4"}

    # sample records: the problem's fields plus docs/design.md, "Records"'s
    problems = read_jsonl(arith_file)
    samples = read_jsonl(tmp_path / "s.jsonl")
    cfg = read_config(tmp_path / "s.config.yaml")
    assert len(samples) == 6 * 4
    for i, row in enumerate(samples):
        group, index = divmod(i, 4)
        assert SAMPLE_FIELDS <= set(row)
        assert {k: row[k] for k in problems[group]} == problems[group]  # carried through untouched
        assert (row["group"], row["index"]) == (group, index)
        assert isinstance(row["completion"], str)
        assert row["finish_reason"] in ("stop", "length")
        assert row["completion_tokens"] == len(row["token_logprobs"]) >= 1
        assert all(isinstance(x, float) and x <= 0 for x in row["token_logprobs"])
        if row["finish_reason"] == "length":
            assert row["completion_tokens"] == cfg.sampling.max_new_tokens

    # scored records: the samples plus reward, rewards per verifier and info
    scored = read_jsonl(tmp_path / "sc.jsonl")
    assert len(scored) == len(samples)
    for sample, row in zip(samples, scored):
        assert SCORED_FIELDS <= set(row)
        assert {k: row[k] for k in sample} == sample
        assert isinstance(row["reward"], float)
        assert set(row["rewards"]) == set(row["info"]) == {"math"}
        assert row["reward"] == row["rewards"]["math"]

    # the resolved config is written beside each output, and says what ran
    assert (cfg.model.path, cfg.data.eval, cfg.sampling.n, cfg.model.threads, cfg.seed) == (model, data, 4, 1, 0)
    assert read_config(tmp_path / "sc.config.yaml").verifiers[0].name == "math"
    eval_cfg = read_config(tmp_path / "E" / "config.yaml")
    assert (eval_cfg.model.path, eval_cfg.data.eval, eval_cfg.eval.n, eval_cfg.eval.k) == (model, data, 4, [1, 2, 4])
    assert read_jsonl(tmp_path / "E" / "scored-0.jsonl") == scored  # same seed, same samples


def test_score_with_verifier_option(tmp_path, samples_file):
    grpo("score", str(samples_file), "--out", "sc.jsonl", "--verifier", "math:weight=0.5", "-q", cwd=tmp_path)
    rows = read_jsonl(tmp_path / "sc.jsonl")
    assert [r["rewards"]["math"] for r in rows] == [1.0, 0.0]
    assert [r["reward"] for r in rows] == [0.5, 0.0]  # weighted
    assert read_config(tmp_path / "sc.config.yaml").verifiers[0].weight == 0.5


def test_score_to_stdout(tmp_path, samples_file):
    proc = grpo("score", str(samples_file), "--out", "-", "-q", cwd=tmp_path)
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["reward"] for r in rows] == [1.0, 0.0]


# ----------------------------------------------------------------------------- bad input


def test_missing_data_file(tmp_path, random_model_dir):
    proc = grpo(
        "sample", "--model", str(random_model_dir), "--data", "nope.jsonl", "--threads", "1", cwd=tmp_path, expect=None
    )
    assert_user_error(proc, "nope.jsonl", "not found")


def test_malformed_json_line(tmp_path, random_model_dir):
    (tmp_path / "bad.jsonl").write_text('{"prompt": "a", "answer": "1"}\n{"prompt": oops}\n', encoding="utf-8")
    proc = grpo(
        "sample", "--model", str(random_model_dir), "--data", "bad.jsonl", "--threads", "1", cwd=tmp_path, expect=None
    )
    assert_user_error(proc, "bad.jsonl", "line 2")


def test_missing_prompt_field(tmp_path, random_model_dir):
    (tmp_path / "g.jsonl").write_text('{"question": "q", "answer": "#### 1"}\n', encoding="utf-8")
    proc = grpo(
        "eval", "--model", str(random_model_dir), "--data", "g.jsonl", "--n", "1", "--k", "1", cwd=tmp_path, expect=None
    )
    assert_user_error(proc, "'prompt'", "question")


def test_unknown_preset(tmp_path):
    assert_user_error(grpo("sample", "--preset", "nope", cwd=tmp_path, expect=None), "unknown preset 'nope'", "tiny")


def test_unknown_config_key(tmp_path):
    assert_user_error(
        grpo("sample", "--set", "sampling.nn=3", cwd=tmp_path, expect=None), "sampling.nn", "'sampling.n'"
    )


def test_k_larger_than_n(tmp_path):
    assert_user_error(grpo("eval", "--k", "8", "--n", "4", cwd=tmp_path, expect=None), "eval.k=8", "eval.n=4")


def test_unknown_verifier_does_not_clobber_output(tmp_path, samples_file):
    out = tmp_path / "sc.jsonl"
    out.write_text("previous\n", encoding="utf-8")
    proc = grpo("score", str(samples_file), "--verifier", "nope", "--out", "sc.jsonl", cwd=tmp_path, expect=None)
    assert_user_error(proc, "nope")
    assert out.read_text(encoding="utf-8") == "previous\n"


def test_score_bad_input_does_not_clobber_output(tmp_path):
    out = tmp_path / "sc.jsonl"
    out.write_text("previous\n", encoding="utf-8")
    (tmp_path / "bad.jsonl").write_text('{"completion": "x"}\nnot json\n', encoding="utf-8")
    assert_user_error(grpo("score", "bad.jsonl", "--out", "sc.jsonl", cwd=tmp_path, expect=None), "bad.jsonl", "line 2")
    (tmp_path / "nocompletion.jsonl").write_text('{"prompt": "x"}\n', encoding="utf-8")
    assert_user_error(grpo("score", "nocompletion.jsonl", "--out", "sc.jsonl", cwd=tmp_path, expect=None), "completion")
    assert_user_error(grpo("score", "missing.jsonl", "--out", "sc.jsonl", cwd=tmp_path, expect=None), "missing.jsonl")
    assert out.read_text(encoding="utf-8") == "previous\n"
    assert not (tmp_path / "sc.config.yaml").exists()


def test_output_path_that_is_a_directory(tmp_path, samples_file):
    (tmp_path / "adir").mkdir()
    proc = grpo("score", str(samples_file), "--out", "adir", cwd=tmp_path, expect=None)
    assert_user_error(proc, "adir", "directory", only_line=False)  # found after scoring
    assert list((tmp_path / "adir").iterdir()) == []


# ----------------------------------------------------------------------------- startup cost


@pytest.mark.parametrize("args", [["--help"], ["presets", "list"]], ids=["help", "presets-list"])
def test_light_commands_do_not_import_torch(tmp_path, args):
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "grpo_cli", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    modules = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "typer" in modules  # importtime output was captured
    heavy = sorted(m for m in modules if m.split(".")[0] in ("torch", "transformers"))
    assert heavy == []


# ----------------------------------------------------------------------------- presets, data, plots


def test_presets_list_show_copy(tmp_path):
    listing = grpo("presets", "list", cwd=tmp_path).stdout
    assert any(line.split()[0] == "tiny" for line in listing.splitlines() if line.strip())

    from grpo_cli.config import preset_text

    assert grpo("presets", "show", "tiny", cwd=tmp_path).stdout == preset_text("tiny")[1]
    resolved = yaml.safe_load(grpo("presets", "show", "tiny", "--resolved", cwd=tmp_path).stdout)
    assert config_from_dict(resolved).sampling.backend == "hf"

    docs = grpo("presets", "show", "tiny", "--docs", cwd=tmp_path).stdout
    listed = {line.split(" ", 1)[0] for line in docs.splitlines() if line.strip()}
    assert listed == {key for key, _, _ in documented_keys()}
    assert "sampling.temperature (float): " in docs

    grpo("presets", "copy", "tiny", "mine.yaml", cwd=tmp_path)
    assert (tmp_path / "mine.yaml").read_text(encoding="utf-8") == preset_text("tiny")[1]
    assert_user_error(grpo("presets", "copy", "tiny", "mine.yaml", cwd=tmp_path, expect=None), "exists", "--force")
    (tmp_path / "mine.yaml").write_text("seed: 9\n", encoding="utf-8")
    grpo("presets", "copy", "tiny", "mine.yaml", "--force", cwd=tmp_path)
    (tmp_path / "mine.yaml").write_text(preset_text("tiny")[1] + "seed: 9\n", encoding="utf-8")
    resolved = yaml.safe_load(grpo("presets", "show", "mine.yaml", "--resolved", cwd=tmp_path).stdout)
    assert resolved["seed"] == 9
    assert_user_error(grpo("presets", "show", "nope", cwd=tmp_path, expect=None), "unknown preset")
    grpo("presets", "copy", "tiny", "new/dir/tiny.yaml", cwd=tmp_path)  # parent folders are made
    assert (tmp_path / "new" / "dir" / "tiny.yaml").read_text(encoding="utf-8") == preset_text("tiny")[1]


def test_eval_plot_two_models(tmp_path, random_model_dir, arith_file):
    other = tmp_path / "other-model"
    shutil.copytree(random_model_dir, other)
    proc = grpo(
        "eval",
        "--model",
        str(random_model_dir),
        "--model",
        str(other),
        "--data",
        str(arith_file),
        "--n",
        "2",
        "--k",
        "1,2",
        "--plot",
        "p.png",
        "--json",
        "-q",
        "--threads",
        "1",
        cwd=tmp_path,
    )
    results = json.loads(proc.stdout)["results"]
    assert list(results) == [str(random_model_dir), str(other)]
    assert results[str(random_model_dir)] == results[str(other)]  # same weights, same seed
    png = (tmp_path / "p.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000


def test_data_arith_writes_two_files(tmp_path):
    grpo("data", "arith", "--out", "D", "--n-train", "50", "--n-test", "10", cwd=tmp_path)
    train, test = read_jsonl(tmp_path / "D" / "train.jsonl"), read_jsonl(tmp_path / "D" / "test.jsonl")
    assert (len(train), len(test)) == (50, 10)
    assert {"id", "prompt", "answer", "solution"} <= set(train[0])
    assert not {p["prompt"] for p in train} & {p["prompt"] for p in test}


def test_version(tmp_path):
    from grpo_cli import __version__

    assert grpo("--version", cwd=tmp_path).stdout.strip() == f"grpo {__version__}"
