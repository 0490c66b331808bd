"""What a new user trips over (issue 17), through the real CLI in subprocesses: one-line errors
instead of tracebacks, output paths checked before the work, defaults that compose, dry runs that
validate, logs with a sign of life, file modes, help text."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time

import pytest
from test_cli import assert_user_error, grpo, read_jsonl

TINY_RUN = [
    "--set",
    "data.limit=8",
    "--set",
    "sampling.n=2",
    "--set",
    "sampling.max_new_tokens=6",
    "--set",
    "train.run.batch_size=4",
    "--threads",
    "1",
]
"""Overrides that make `grpo train` take about a second per step on the test model."""


def no_traceback(proc: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr


# ----------------------------------------------------------------------------- 8. help


@pytest.mark.parametrize("command", ["sample", "score", "eval", "train"])
def test_help_short_flag_no_bool_placeholder_and_defaults(tmp_path, command):
    text = grpo(command, "-h", cwd=tmp_path).stdout
    assert text == grpo(command, "--help", cwd=tmp_path).stdout
    assert "<bool>" not in text and "Usage: grpo " + command in text
    assert ("--verifier" in text) == (command != "sample")  # train and eval take verifiers too, like score
    flat = " ".join(text.split())
    if command == "train":
        assert "[config: train.run.steps; default: 500]" in flat  # the tiny preset's value
        assert "[config: data.train; default: arith:train]" in flat
    if command in ("sample", "eval"):
        assert "[config: data.eval; default: arith:test]" in flat
    if command == "eval":
        assert "[config: eval.k; default: 1,4,16]" in flat


def test_presets_list_gives_whole_sentences(tmp_path):
    from grpo_cli.config import preset_names

    lines = [line for line in grpo("presets", "list", cwd=tmp_path).stdout.splitlines() if line.strip()]
    assert [line.split()[0] for line in lines] == preset_names()
    for line in lines:
        assert line.rstrip().endswith("."), line  # a whole sentence, not one cut at the end of a comment line
    # the presets sized for a real model say so; tiny and deepseekmath-iterative run on the shipped model
    paper = [line for line in lines if line.split()[0] not in ("tiny", "deepseekmath-iterative")]
    assert all("--model" in line for line in paper)


# ----------------------------------------------------------------------------- 1. one-line errors


def test_truncated_weights_are_one_line(tmp_path, random_model_dir):
    import shutil

    model = tmp_path / "cut"
    shutil.copytree(random_model_dir, model)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # a copy cut short
    proc = grpo("sample", "--model", str(model), "--n", "1", "--threads", "1", cwd=tmp_path, expect=None)
    assert_user_error(proc, str(model), "model.safetensors")


@pytest.mark.parametrize("command", ["sample", "score", "eval", "train"])
def test_unwritable_out_is_refused_before_the_work(tmp_path, command):
    (tmp_path / "plain-file").write_text("x", encoding="utf-8")
    rows = [{"id": "a", "prompt": "1 + 1?", "answer": "2", "completion": "#### 2", "group": 0, "index": 0}]
    (tmp_path / "s.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    threads = ["--threads", "1"]
    args = {"sample": ["sample", *threads], "score": ["score", "s.jsonl"], "eval": ["eval", *threads]}.get(command)
    args = args or ["train", *threads]
    for out in ("plain-file/out.jsonl", "/proc/grpo-test/out"):
        start = time.perf_counter()
        proc = grpo(*args, "--out", out, cwd=tmp_path, expect=None)
        assert_user_error(proc, out)  # the only line: nothing was sampled or trained first
        assert time.perf_counter() - start < 30
    if command in ("eval", "train"):
        assert_user_error(grpo(*args, "--plot", "plain-file/p.png", cwd=tmp_path, expect=None), "plain-file/p.png")
    assert not (tmp_path / "runs").exists()


def _default_sigint() -> None:
    """In the child before exec: Ctrl-C's default disposition. A child inherits an ignored SIGINT
    (the suite under `nohup` or as a background job), and Python then installs no KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_watchdog_worker_is_silent_on_ctrl_c(tmp_path):
    """Ctrl-C reaches the whole process group; the verifier's worker processes must not print a
    KeyboardInterrupt traceback of their own (the parent reports the interrupt)."""
    script = tmp_path / "pool.py"
    script.write_text(
        "import sys, time\n"
        "from grpo_verifiers._watchdog import Watchdog\n"
        "if __name__ == '__main__':\n"
        "    dog = Watchdog(workers=2)\n"
        "    try:\n"
        "        print(dog.map(abs, [-1, -2], timeout=30), flush=True)\n"
        "        time.sleep(60)\n"
        "    except KeyboardInterrupt:\n"
        "        dog.close()\n"
        "        sys.exit(130)\n",
        encoding="utf-8",
    )
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=_default_sigint,
    )
    assert "value=1" in proc.stdout.readline()  # both workers are up and idle
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err


def test_ctrl_c_says_where_the_checkpoint_is(tmp_path, random_model_dir):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200", "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, "-m", "grpo_cli", "train", "--model", str(random_model_dir), "--out", "run"]
    command += [*TINY_RUN, "--steps", "200", "--set", "train.run.save_every=1", "--set", "train.run.eval_n=0"]
    proc = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=_default_sigint,
    )
    deadline = time.monotonic() + 120
    while not list((tmp_path / "run" / "checkpoints").glob("step-*")) and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("interrupted: last checkpoint: run/checkpoints/step-"), last
    assert last.endswith("continue with: grpo train --resume run"), last


# ----------------------------------------------------------------------------- 2. every --model checked first


def test_eval_checks_every_model_before_sampling(tmp_path, random_model_dir):
    proc = grpo(
        "eval", "--model", str(random_model_dir), "--model", "runs/train/checkpoints/step-000060", "--n", "1",
        "--k", "1", "--threads", "1", cwd=tmp_path, expect=None,
    )  # fmt: skip
    assert_user_error(proc, "runs/train/checkpoints/step-000060")  # the only line: the first model was not sampled


# ----------------------------------------------------------------------------- 3. defaults that compose


def test_eval_samples_uses_the_k_values_that_fit_n(tmp_path):
    # Groups of 2 samples; the preset's k are 1, 4, 16: with no --k, k = 1 and n = 2.
    rows = [
        {"id": p, "prompt": "q", "answer": "2", "completion": f"#### {c}", "group": g, "index": i}
        for g, (p, pair) in enumerate((("a", (2, 3)), ("b", (5, 5)))) for i, c in enumerate(pair)
    ]  # fmt: skip
    (tmp_path / "s.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    grpo("score", "s.jsonl", "--out", "sc.jsonl", "-q", cwd=tmp_path)
    doc = json.loads(grpo("eval", "--samples", "sc.jsonl", "--json", "-q", "--out", "E", cwd=tmp_path).stdout)
    result = doc["results"]["sc.jsonl"]
    assert (result["n"], sorted(result["pass@k"])) == (2, ["1", "2"])
    # pass@2 of a = 1 (one of two right), of b = 0: 0.5; pass@1 = (1/2 + 0) / 2 = 0.25
    assert (result["pass@k"]["2"], result["pass@k"]["1"]) == (0.5, 0.25)
    assert doc == json.loads((tmp_path / "E" / "results.json").read_text())  # 9: one layout for both
    # an explicit --k beyond the files' n is still an error, not silently dropped
    assert_user_error(grpo("eval", "--samples", "sc.jsonl", "--k", "4", cwd=tmp_path, expect=None), "k=4")


# ----------------------------------------------------------------------------- 4. dry runs validate


def test_dry_run_refuses_unknown_verifier(tmp_path):
    for command in ("train", "eval"):
        args = [command, "--verifier", "maht"] + (["--dry-run"] if command == "train" else [])
        assert_user_error(grpo(*args, cwd=tmp_path, expect=None), "unknown verifier 'maht'", "'math'")


@pytest.mark.slow
def test_paper_presets_say_they_need_a_model(tmp_path):
    for preset in ("deepseekmath", "dapo", "dr-grpo", "gspo"):
        proc = grpo("train", "--preset", preset, "--dry-run", cwd=tmp_path, expect=None)
        assert_user_error(proc, "sampling.max_new_tokens", "256 positions", "--model", "max_new_tokens=64")
    # the documented override (README, Configuration) makes one runnable on the shipped model
    grpo("train", "--preset", "dapo", "--set", "sampling.max_new_tokens=64", "--dry-run", cwd=tmp_path)
    assert not (tmp_path / "runs").exists()


def test_dry_run_finds_a_prompt_too_long(tmp_path, random_model_dir):
    rows = [{"prompt": "1 + 1 = ?", "answer": "2"}, {"prompt": "1 + 1 = ? " * 30, "answer": "2"}]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    args = ["train", "--model", str(random_model_dir), "--data", "p.jsonl", "--set", "sampling.max_new_tokens=200"]
    assert_user_error(grpo(*args, "--dry-run", cwd=tmp_path, expect=None), "p.jsonl row 2", "256 positions")


def test_early_failure_leaves_no_run_folder(tmp_path, random_model_dir):
    # Passes the dry run's checks, then fails while opening the verifiers, after config.yaml was written.
    proc = grpo(
        "train", "--model", str(random_model_dir), "--out", "run", "--verifier", "math:no_such_option=1",
        *TINY_RUN, cwd=tmp_path, expect=None,
    )  # fmt: skip
    assert_user_error(proc, "no_such_option", only_line=False)
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- 9. small ones


def test_score_empty_file_is_an_error(tmp_path):
    (tmp_path / "empty.jsonl").write_text("", encoding="utf-8")
    assert_user_error(grpo("score", "empty.jsonl", cwd=tmp_path, expect=None), "empty.jsonl", "no samples")
    assert_user_error(grpo("eval", "--samples", "empty.jsonl", cwd=tmp_path, expect=None), "empty.jsonl", "no samples")
    assert not (tmp_path / "scored.jsonl").exists()


def test_malformed_json_points_at_the_end_of_the_line(tmp_path):
    (tmp_path / "bad.jsonl").write_text(
        '{"completion": "x"}\n{"completion": "#### 2", "answer": "2"\n', encoding="utf-8"
    )
    line = assert_user_error(grpo("score", "bad.jsonl", cwd=tmp_path, expect=None), "bad.jsonl line 2")
    assert "column 39, the end of the line" in line  # not "column 1" (of the line after)


def test_readme_debian_sentence_agrees_with_bubblewrap():
    from test_readme import README

    text = README.read_text(encoding="utf-8")
    assert "bubblewrap" in text and "No Debian packages are needed" not in text
    (line,) = [line for line in text.splitlines() if "No Debian package" in line]
    assert "bubblewrap" in line and "optional" in line


# ----------------------------------------------------------------------------- 7. file modes, stale temp folders


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_outputs_honour_the_umask(tmp_path, umask):
    rows = [{"id": "a", "prompt": "1 + 1?", "answer": "2", "completion": "#### 2", "group": 0, "index": 0}]
    (tmp_path / "s.jsonl").write_text(json.dumps(rows[0]) + "\n", encoding="utf-8")
    old = os.umask(umask)  # inherited by the subprocess, as from the user's shell
    try:
        grpo("score", "s.jsonl", "--out", "sc.jsonl", "-q", cwd=tmp_path)
    finally:
        os.umask(old)
    modes = {name: stat.S_IMODE((tmp_path / name).stat().st_mode) for name in ("sc.jsonl", "sc.config.yaml")}
    assert modes == {"sc.jsonl": 0o666 & ~umask, "sc.config.yaml": 0o666 & ~umask}


def test_stale_checkpoint_temp_folders_are_cleaned(tmp_path):
    from grpo_cli.config import dump_config, load_config

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(dump_config(load_config(None, [f"train.run.out_dir={run}"])), encoding="utf-8")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid: a writer that was killed
    stale = run / "checkpoints" / f".tmp-step-000100-{dead.pid}"
    live = run / "checkpoints" / f".tmp-step-000100-{os.getpid()}"  # a writer still running
    for folder in (stale, live):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"partial")
    proc = grpo("train", "--resume", "run", cwd=tmp_path, expect=None)
    assert_user_error(proc, "no complete checkpoint", stale.name, "without --resume", only_line=False)
    assert not stale.exists() and live.exists()


# ----------------------------------------------------------------------------- 6. signs of life


def test_piped_output_gets_a_line_every_n_steps_and_periodic_eval(tmp_path, random_model_dir):
    proc = grpo(
        "train", "--model", str(random_model_dir), "--out", "run", "--steps", "4", *TINY_RUN,
        "--set", "train.run.log_every=1", "--set", "train.run.eval_every=2", "--set", "train.run.eval_n=1",
        "--set", "train.run.eval_limit=2", cwd=tmp_path,
    )  # fmt: skip
    lines = [line for line in proc.stderr.splitlines() if line.startswith("step ")]
    assert [line.split()[1] for line in lines] == ["1/4", "2/4", "3/4", "4/4"], proc.stderr
    assert all("reward " in line and " s/step" in line for line in lines)
    assert "held-out" in lines[1] and "held-out" not in lines[0]  # step 2: the periodic evaluation
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert ["eval_accuracy" in r for r in rows] == [False, True, False, False]  # step 4 is the after-evaluation
    assert 0.0 <= rows[1]["eval_accuracy"] <= 1.0


def test_without_the_after_evaluation_the_last_step_takes_its_periodic_one(tmp_path, random_model_dir):
    proc = grpo(
        "train", "--model", str(random_model_dir), "--out", "run", "--steps", "2", *TINY_RUN,
        "--set", "train.run.eval_every=2", "--set", "train.run.eval_n=1", "--set", "train.run.eval_limit=2",
        "--set", "train.run.eval_after=false", cwd=tmp_path,
    )  # fmt: skip
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert ["eval_accuracy" in r for r in rows] == [False, True]
    assert "eval (after)" not in proc.stdout + proc.stderr


def test_terminal_progress_bar_shows_reward_and_step_time(tmp_path, random_model_dir):
    import re

    env = {**os.environ, "TTY_COMPATIBLE": "1", "OMP_NUM_THREADS": "1", "COLUMNS": "200"}  # rich: a terminal
    proc = subprocess.run(
        [sys.executable, "-m", "grpo_cli", "train", "--model", str(random_model_dir), "--out", "run", "--steps", "2"]
        + [*TINY_RUN, "--set", "train.run.eval_n=0"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    text = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", proc.stderr)
    bar = [line for line in re.split(r"[\r\n]", text) if line.startswith("training")]
    assert bar and "reward " in bar[-1] and " s/step" in bar[-1], bar[-1:]
    assert not any(line.startswith("step 1/2") for line in text.splitlines())  # the bar says it; no log lines


# ----------------------------------------------------------------------------- 5. threads


def test_free_cores_leaves_busy_cores_alone():
    from grpo_cli.config import free_cores

    # 2 cores: idle -> 2 threads; two other busy processes (load 2.3) -> 1, never 0
    assert (free_cores(2, 0.1), free_cores(2, 1.4), free_cores(2, 2.3), free_cores(2, 20.0)) == (2, 1, 1, 1)
    assert free_cores(16, 3.6) == 12  # 16 - round(3.6)


def test_busy_cores_counts_other_processes_only():
    from grpo_cli.config import busy_cores

    # 2 cores, 40 jiffies pass: 20 busy is one core; 10 of them ours leaves half a core of others'
    assert busy_cores((0, 0, 0), (20, 40, 0), 2) == 1.0
    assert busy_cores((0, 0, 0), (20, 40, 10), 2) == 0.5
    assert busy_cores((5, 100, 0), (5, 100, 0), 2) == 0.0  # no time passed
    assert busy_cores((0, 0, 0), (10, 40, 30), 2) == 0.0  # never negative (sampling skew)


def test_auto_threads_uses_every_core_of_an_idle_machine_and_leaves_a_busy_one(monkeypatch):
    from grpo_cli import config

    monkeypatch.setattr(config, "available_cores", lambda: 2)
    monkeypatch.setattr(config.os, "cpu_count", lambda: 2)
    samples = iter([(0, 0, 0), (2, 200, 0)])  # idle: 1% busy
    monkeypatch.setattr(config, "cpu_sample", lambda: next(samples))
    assert config.auto_threads(window=0) == 2
    samples = iter([(0, 0, 0), (100, 200, 0)])  # another process holds one core
    monkeypatch.setattr(config, "cpu_sample", lambda: next(samples))
    assert config.auto_threads(window=0) == 1
