"""What a new user trips over (issue 17), through the real CLI in subprocesses: one-line errors
instead of tracebacks, output paths checked before the work, defaults that compose, dry runs that
validate, logs with a sign of life, file modes, help text."""

from __future__ import annotations

import subprocess

import pytest
from test_cli import grpo

TINY_RUN = [
    "--set",
    "data.limit=8",
    "--set",
    "sampling.n=2",
    "--set",
    "sampling.max_new_tokens=6",
    "--set",
    "train.batch_size=4",
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
        assert "[config: train.steps; default: 500]" in flat  # the tiny preset's value
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
    paper = [line for line in lines if line.split()[0] != "tiny"]
    assert all("--model" in line for line in paper)  # the paper presets say what they are for
