"""Records that are not clean Unicode or hold pathological answers never crash reading or writing:
invalid UTF-8 bytes and lone surrogates are read as U+FFFD (a warning names the lines), and every
line written is valid UTF-8 JSON (issue 14, item 2)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from grpo_cli.pipeline.data import read_jsonl, write_jsonl


def _strict_rows(path) -> list[dict]:
    """Every line decodes as strict UTF-8 and parses as JSON, or this raises."""
    return [json.loads(line) for line in path.read_bytes().decode("utf-8").splitlines()]


def test_invalid_utf8_and_lone_surrogates_are_read_as_replacement_characters(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_bytes(
        b'{"completion": "ok"}\n'
        b'{"completion": "bad \xff\xfe bytes", "answer": "1"}\n'  # not UTF-8 at all
        b'{"completion": "half a pair \\ud83d", "\\udc00key": "x"}\n'  # valid JSON, not valid Unicode
        b'{"completion": "a whole pair \\ud83d\\ude00"}\n'  # an escaped astral character: kept
    )
    with pytest.warns(UnicodeWarning, match=r"s\.jsonl line 2, 3: .*U\+FFFD"):
        rows = read_jsonl(path)
    assert rows[1]["completion"] == "bad \ufffd\ufffd bytes"
    assert rows[2] == {"completion": "half a pair \ufffd", "\ufffdkey": "x"}
    assert rows[3]["completion"] == "a whole pair \U0001f600"
    seen = []
    assert read_jsonl(tmp_path / "s.jsonl", warn=seen.append) == rows and len(seen) == 1


def test_writing_lone_surrogates_gives_valid_utf8_json(tmp_path, capsys):
    rows = [{"completion": "x\ud800y", "info": {"err\udfff": ["\udc80"]}}, {"completion": "fine \U0001f600"}]
    write_jsonl(tmp_path / "out.jsonl", rows)
    assert _strict_rows(tmp_path / "out.jsonl") == [
        {"completion": "x\ufffdy", "info": {"err\ufffd": ["\ufffd"]}},
        {"completion": "fine \U0001f600"},
    ]
    write_jsonl(None, rows)  # stdout too
    assert "\ufffd" in capsys.readouterr().out


def test_grpo_score_scores_every_other_record_around_bad_text_and_a_pathological_answer(tmp_path):
    good = [
        {"id": "a", "answer": "4", "completion": "2 + 2 = 4, so \\boxed{4}"},
        {"id": "b", "answer": "5", "completion": "so \\boxed{4}"},
    ]
    lines = [json.dumps(good[0]).encode()]
    lines.append(b'{"id": "utf8", "answer": "7", "completion": "\xc3\x28 \xff so \\\\boxed{7}"}')
    lines.append(json.dumps({"id": "surrogate", "answer": "7", "completion": "\ud800 so \\boxed{7}"}).encode())
    tower = {"id": "tower", "answer": "2^{65536}", "completion": "\\boxed{2^{2^{2^{2^{2}}}}}"}
    deep = {"id": "deep", "answer": "1", "completion": "\\boxed{" + "(" * 50_000 + "1" + ")" * 50_000 + "}"}
    lines += [json.dumps(tower).encode(), json.dumps(deep).encode(), json.dumps(good[1]).encode()]
    (tmp_path / "s.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    proc = subprocess.run(
        [sys.executable, "-m", "grpo_cli", "score", "s.jsonl", "--out", "sc.jsonl", "--verifier", "math"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "line 2, 3" in proc.stdout + proc.stderr  # the warning names the lines
    scored = {row["id"]: row for row in _strict_rows(tmp_path / "sc.jsonl")}
    assert list(scored) == ["a", "utf8", "surrogate", "tower", "deep", "b"]
    assert (scored["a"]["reward"], scored["b"]["reward"]) == (1.0, 0.0)
    assert scored["utf8"]["reward"] == 1.0 and scored["surrogate"]["reward"] == 1.0  # replaced text, still scored
    assert scored["utf8"]["completion"].startswith("\ufffd(")
    for row in scored.values():  # the pathological ones cost at most their own reward
        assert isinstance(row["reward"], float)
