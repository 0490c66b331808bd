"""The plugin kit: `grpo_verifiers.testing`'s contract passes our own verifiers and catches each kind
of broken one; the worked example plugin in examples/plugin installs, is discovered, scores through
`grpo score --verifier NAME:key=value`, and passes its own contract tests; per-verifier weights,
failure values and failure counts reach the summary."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from grpo_verifiers import Verdict, Verifier
from grpo_verifiers.math import MathVerifier
from grpo_verifiers.prm import PRMVerifier
from grpo_verifiers.testing import CHECKS, SAMPLES, VerifierContract, check_verifier
from test_install import pip_install_to

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "plugin"


class TestMathContract(VerifierContract):
    verifier_class = MathVerifier
    options = {"timeout": 2.0}
    bad_options = ({"timeout": 0}, {"extract": ["nope"]}, {"colour": "red"})
    entry_point = "math"


class TestPRMContract(VerifierContract):
    verifier_class = PRMVerifier
    bad_options = ({"outcome": "max"}, {"backend": "model"}, {"colour": "red"})
    entry_point = "prm"


# ------------------------------------------------------------------ the contract can fail


class Good(Verifier):
    """Reward 1.0 when the completion holds the answer; one step per line."""

    name = "good"

    def verify(self, samples):
        out = []
        for s in samples:
            text = s["completion"]
            ends, pos = [], 0
            for line in text.split("\n"):
                pos += len(line)
                if line.strip():
                    ends.append(pos)
                pos += 1
            if "answer" not in s:
                out.append(Verdict(None))
                continue
            reward = float(str(s["answer"]) in text)
            out.append(Verdict(reward, steps=[{"end": e, "reward": reward} for e in ends], info={"len": len(text)}))
        return out


class DropsLast(Good):
    def verify(self, samples):
        return super().verify(samples)[:-1] if len(samples) > 1 else super().verify(samples)


class Reverses(Good):
    def verify(self, samples):
        return super().verify(samples)[::-1]


class NaNReward(Good):
    def verify(self, samples):
        return [Verdict(float("nan")) for _ in samples]


class BoolReward(Good):
    def verify(self, samples):
        return [Verdict(True) for _ in samples]


class StepPastTheEnd(Good):
    def verify(self, samples):
        return [Verdict(1.0, steps=[{"end": len(s["completion"]) + 1, "reward": 1.0}]) for s in samples]


class StepsOutOfOrder(Good):
    def verify(self, samples):
        return [Verdict(1.0, steps=[{"end": 2, "reward": 1.0}, {"end": 1, "reward": 0.0}]) for _ in samples]


class InfoNotJSON(Good):
    def verify(self, samples):
        return [Verdict(1.0, info={"when": object()}) for _ in samples]


class Mutates(Good):
    def verify(self, samples):
        for s in samples:
            s["seen"] = True  # a mark left on the shared row
        return super().verify(samples)


class FailsOnEmptyBatch(Good):
    def verify(self, samples):
        if not samples:
            raise IndexError("list index out of range")
        return super().verify(samples)


class FailsOnUnicode(Good):
    def verify(self, samples):
        for s in samples:
            s["completion"].encode("ascii")
        return super().verify(samples)


class NeedsAnswer(Good):
    def verify(self, samples):
        return [Verdict(float(s["answer"] in s["completion"])) for s in samples]


class ByteOffsets(Good):
    def verify(self, samples):  # ends in UTF-8 bytes, not characters
        return [
            Verdict(1.0, steps=[{"end": len(s["completion"].encode()), "reward": 1.0}])
            if s["completion"]
            else Verdict(1.0)
            for s in samples
        ]


class CloseTwiceFails(Good):
    def __init__(self) -> None:
        self.closed = False

    def close(self):
        if self.closed:
            raise RuntimeError("already closed")
        self.closed = True


class AcceptsAnything(Good):
    def __init__(self, **options) -> None:
        self.options = options


class Random(Good):
    def __init__(self) -> None:
        self.calls = 0

    def verify(self, samples):
        self.calls += 1
        return [Verdict(float(self.calls % 2)) for _ in samples]


@pytest.mark.parametrize(
    ("cls", "check", "words"),
    [
        (DropsLast, "verdicts", "returned 4 verdicts for 5 samples"),
        (Reverses, "order", "differs from its verdict alone"),
        (Random, "order", "differs from its verdict alone"),
        (NaNReward, "rewards", "reward nan is not None or a finite number"),
        (BoolReward, "rewards", "reward True"),
        (StepPastTheEnd, "steps", "within the completion"),
        (StepsOutOfOrder, "steps", "step 1 end 1 is not after the previous end (2)"),
        (ByteOffsets, "edge_samples", "a unicode completion: step 0 end"),
        (InfoNotJSON, "info", "info cannot be written as JSON"),
        (Mutates, "no_mutation", "verify changed its fields ['seen']"),
        (FailsOnEmptyBatch, "empty_batch", "verify([]) raised IndexError"),
        (FailsOnUnicode, "edge_samples", "UnicodeEncodeError"),
        (NeedsAnswer, "edge_samples", "a row with only 'completion'"),
        (CloseTwiceFails, "close", "a second close() raised RuntimeError: already closed"),
        (AcceptsAnything, "options", "were accepted; they should raise TypeError or ValueError"),
    ],
)
def test_contract_reports_each_broken_verifier(cls, check, words):
    problems = check_verifier(cls)
    assert any(p.startswith(f"{check}: ") and words in p for p in problems), problems


def test_a_bad_option_replaces_the_good_one_of_the_same_name():
    # Built with {"x": 2}, not with x twice (which would raise TypeError and look like a refusal).
    problems = check_verifier(AcceptsAnything, options={"x": 1}, bad_options=({"x": 2},), checks=["options"])
    assert problems == ["options: options {'x': 2} were accepted; they should raise TypeError or ValueError"]


def test_a_good_verifier_passes_and_the_checks_are_all_run():
    assert check_verifier(Good) == []
    assert check_verifier(Good()) == []  # an instance: the options and close checks are skipped
    assert len(SAMPLES) == 5 and len(CHECKS) == 11
    with pytest.raises(ValueError, match="unknown checks"):
        check_verifier(Good, checks=["speed"])


def test_entry_point_check():
    problems = check_verifier(Good, entry_point="no_such_verifier_here")
    assert problems == [
        "entry_point: no entry point 'no_such_verifier_here' in the 'grpo.verifiers' group (is the package installed?)"
    ]
    problems = check_verifier(Good, entry_point="math", checks=["entry_point"])
    assert problems == ["entry_point: entry point 'math' builds MathVerifier, not Good"]


def test_the_mixin_fails_on_a_broken_verifier():
    class TestBroken(VerifierContract):
        verifier_class = StepsOutOfOrder

    with pytest.raises(AssertionError, match="step 1 end 1 is not after"):
        TestBroken().test_steps()
    TestBroken().test_verdicts()  # the other checks still pass


# ------------------------------------------------------------------ the worked example plugin


def _env(target: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(target),
        "OMP_NUM_THREADS": "1",
        "COLUMNS": "200",
        "PYTHONWARNINGS": "ignore",
    }


@pytest.fixture(scope="module")
def installed_example(tmp_path_factory) -> Path:
    """examples/plugin pip-installed (no dependencies: grpo-cli is the one already here)."""
    base = tmp_path_factory.mktemp("example-plugin")
    source, target = base / "src", base / "target"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("*.egg-info", "__pycache__", "build"))
    return pip_install_to(source, target)


@pytest.mark.slow  # a pip install of the example
def test_example_plugin_is_listed(installed_example, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "grpo_cli", "verifiers", "list"],
        cwd=tmp_path,
        env=_env(installed_example),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    row = next(line for line in proc.stdout.splitlines() if "answer_format" in line)
    assert "grpo-answer-format 0.1.0" in row and "grpo_answer_format:AnswerFormatVerifier" in row and "ok" in row


@pytest.mark.slow  # a pip install of the example
def test_example_plugin_scores_beside_math(installed_example, tmp_path):
    rows = [
        {"id": "a", "answer": "23", "completion": "4 * 5 = 20\n3 + 20 = 23\n#### 23"},  # right, formatted
        {"id": "b", "answer": "23", "completion": "3 + 20 = 23, the answer is 23"},  # right, no #### line
        {"id": "c", "answer": "23", "completion": "#### 24"},  # formatted, wrong
    ]
    (tmp_path / "s.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpo_cli",
            "score",
            "s.jsonl",
            "--out",
            "sc.jsonl",
            "--verifier",
            "math",
            "--verifier",
            "answer_format:style=hash,weight=0.5,bonus=1.0",
        ],
        cwd=tmp_path,
        env=_env(installed_example),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    scored = [json.loads(line) for line in (tmp_path / "sc.jsonl").read_text().splitlines()]
    assert [r["rewards"] for r in scored] == [
        {"math": 1.0, "answer_format": 1.0},
        {"math": 1.0, "answer_format": 0.0},
        {"math": 0.0, "answer_format": 1.0},
    ]
    # reward = 1.0 * math + 0.5 * answer_format
    assert [r["reward"] for r in scored] == [1.5, 1.0, 0.5]
    assert scored[0]["info"]["answer_format"] == {"matched": True, "style": "hash"}
    assert "math: mean 0.667, 0 failed, 0 timed out" in proc.stderr
    assert "answer_format: mean 0.667, 0 failed, 0 timed out" in proc.stderr
    # A bad option is one line naming the verifier.
    proc = subprocess.run(
        [sys.executable, "-m", "grpo_cli", "score", "s.jsonl", "--verifier", "answer_format:style=xml"],
        cwd=tmp_path,
        env=_env(installed_example),
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "answer_format" in lines[0] and "style" in lines[0], proc.stderr


@pytest.mark.slow  # a pip install of the example
def test_example_plugin_passes_its_own_contract_tests(installed_example, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-o", "addopts=", str(EXAMPLE / "tests")],
        cwd=tmp_path,
        env=_env(installed_example),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "12 passed" in proc.stdout, proc.stdout


# ------------------------------------------------------------------ per-verifier settings in a run


def test_failure_value_weight_and_counts_per_verifier(tmp_path):
    from grpo_cli.config import VerifierConfig
    from grpo_cli.pipeline.scoring import score

    class Raises(Good):
        def verify(self, samples):
            raise RuntimeError("plugin bug")

    class TimesOut(Good):
        def verify(self, samples):
            return [Verdict(1.0, info={"timeout": True, "error": "timed out after 1 s"}) for _ in samples]

    samples = [{"answer": "7", "completion": "#### 7"}, {"answer": "7", "completion": "#### 8"}]
    records, summary = score(
        samples,
        [
            (VerifierConfig("good", weight=2.0), Good()),
            (VerifierConfig("raises", weight=1.0, failure_value=-1.0), Raises()),
            (VerifierConfig("slow", weight=0.5, failure_value=-0.5), TimesOut()),
        ],
    )
    # 2 * good + 1 * (-1) + 0.5 * (-0.5): 2 - 1 - 0.25 = 0.75 and 0 - 1 - 0.25 = -1.25
    assert [r["reward"] for r in records] == [0.75, -1.25]
    assert [r["rewards"] for r in records][1] == {"good": 0.0, "raises": -1.0, "slow": -0.5}
    counts = summary.verifiers
    assert (counts["raises"].failed, counts["slow"].timed_out, counts["good"].failed) == (2, 2, 0)
    line = summary.describe()
    assert "good: mean 0.500, 0 failed, 0 timed out" in line
    assert "raises: mean -1.000, 2 failed, 0 timed out (first: RuntimeError: plugin bug)" in line
    assert "slow: mean -0.500, 0 failed, 2 timed out (first: timed out after 1 s)" in line


def test_the_guide_shows_the_example_files_as_they_are():
    guide = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    for path in ("pyproject.toml", "src/grpo_answer_format/__init__.py", "tests/test_contract.py"):
        assert (EXAMPLE / path).read_text(encoding="utf-8") in guide, path
