"""Problems in: file formats, field mapping, limits, errors that name file and line; prompts; atomic writes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from grpo_cli.errors import UserError
from grpo_cli.pipeline.data import atomic_writer, load_problems, read_jsonl, render_prompt, write_jsonl

GSM8K = [
    {
        "question": "Natalia sold 48 clips in April and half as many in May. How many in total?",
        "answer": "In May she sold 48/2 = 24.\nIn total 48 + 24 = 72.\n#### 72",
        "source": "gsm8k",
    },
    {
        "question": "Weng earns $12 an hour. How much for 50 minutes?",
        "answer": "12/60 = 0.2 per minute.\n0.2 * 50 = 10.\n#### 10",
        "source": "gsm8k",
    },
    {"question": "What is 2 + 2?", "answer": "#### 4", "source": "mine"},
]
MATH = [
    {"problem": "What is $1 + 1$?", "solution": "We add: $1 + 1 = \\boxed{2}$.", "level": "Level 1", "type": "Algebra"},
    {
        "problem": "Simplify $\\frac{4}{6}$.",
        "solution": "$\\boxed{\\frac{2}{3}}$",
        "level": "Level 2",
        "type": "Algebra",
    },
]


def _jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def _json(path: Path, rows) -> str:
    path.write_text(json.dumps(rows), encoding="utf-8")
    return str(path)


def _csv(path: Path, rows: list[dict]) -> str:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


def _parquet(path: Path, rows: list[dict]) -> str:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return str(path)


WRITERS = {"jsonl": _jsonl, "json": _json, "csv": _csv, "parquet": _parquet}


# ----------------------------------------------------------------------------- formats and mapping


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_gsm8k_shape_loads_from_every_format(tmp_path, fmt):
    source = WRITERS[fmt](tmp_path / f"gsm8k.{fmt}", GSM8K)
    problems = load_problems(source, prompt_field="question", answer_field="answer")
    assert [p["prompt"] for p in problems] == [r["question"] for r in GSM8K]
    assert [p["answer"] for p in problems] == [r["answer"] for r in GSM8K]
    assert problems[0]["answer"].endswith("#### 72")
    assert [p["id"] for p in problems] == ["0", "1", "2"]  # row number when there is no id field
    for problem, row in zip(problems, GSM8K):
        assert problem["source"] == row["source"]  # extra fields carried through
        assert problem["question"] == row["question"]  # the original field stays too


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_math_shape_loads_from_every_format(tmp_path, fmt):
    source = WRITERS[fmt](tmp_path / f"math.{fmt}", MATH)
    problems = load_problems(source, prompt_field="problem", answer_field="solution")
    assert [p["prompt"] for p in problems] == [r["problem"] for r in MATH]
    assert [p["answer"] for p in problems] == [r["solution"] for r in MATH]
    assert "\\boxed{2}" in problems[0]["answer"]
    assert [(p["level"], p["type"]) for p in problems] == [(r["level"], r["type"]) for r in MATH]


def test_json_object_holding_one_list(tmp_path):
    source = _json(tmp_path / "wrapped.json", {"data": GSM8K, "version": "1"})
    assert len(load_problems(source, prompt_field="question")) == 3


def test_id_field_and_non_string_answer(tmp_path):
    rows = [{"uid": 7, "prompt": "p", "answer": 42, "meta": {"a": [1, 2]}}]
    (problem,) = load_problems(_jsonl(tmp_path / "x.jsonl", rows), id_field="uid")
    assert problem["id"] == "7"
    assert problem["answer"] == "42"
    assert problem["meta"] == {"a": [1, 2]}


def test_chat_message_prompts_load(tmp_path):
    rows = [{"prompt": [{"role": "user", "content": "hi"}], "answer": "1"}]
    (problem,) = load_problems(_jsonl(tmp_path / "chat.jsonl", rows))
    assert problem["prompt"] == rows[0]["prompt"]


def test_limit(tmp_path):
    source = _jsonl(tmp_path / "g.jsonl", GSM8K)
    assert [p["id"] for p in load_problems(source, prompt_field="question", limit=2)] == ["0", "1"]
    assert len(load_problems(source, prompt_field="question", limit=100)) == 3


def test_answer_optional_when_not_needed(tmp_path):
    source = _jsonl(tmp_path / "noanswer.jsonl", [{"prompt": "a"}, {"prompt": "b"}])
    problems = load_problems(source, need_answer=False)
    assert [p["prompt"] for p in problems] == ["a", "b"]
    assert all("answer" not in p for p in problems)


def test_builtin_arith_split():
    problems = load_problems("arith:test", limit=3)
    assert len(problems) == 3 and all(p["answer"] and p["prompt"].startswith("What is") for p in problems)


# ----------------------------------------------------------------------------- errors


def test_malformed_jsonl_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a", "answer": "1"}\n\n{"prompt": "b", answer: 2}\n', encoding="utf-8")
    with pytest.raises(UserError) as e:
        load_problems(str(path))
    assert str(path) in str(e.value) and "line 3" in str(e.value)  # blank line 2 still counts
    path.write_text('{"prompt": "a", "answer": "1"}\n[1, 2]\n', encoding="utf-8")
    with pytest.raises(UserError, match="line 2: expected a JSON object"):
        read_jsonl(path)


def test_malformed_json_names_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('[\n{"prompt": "a"},\n{oops}\n]', encoding="utf-8")
    with pytest.raises(UserError, match=r"bad.json line 3"):
        load_problems(str(path))


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="not found.*nope.jsonl"):
        load_problems(str(tmp_path / "nope.jsonl"))
    with pytest.raises(UserError, match="file not found"):
        read_jsonl(tmp_path / "nope.jsonl")


def test_unsupported_format(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("hello", encoding="utf-8")
    with pytest.raises(UserError, match="unsupported data format .txt"):
        load_problems(str(path))


def test_missing_prompt_field_names_field_and_fields_present(tmp_path):
    source = _jsonl(tmp_path / "g.jsonl", GSM8K)
    with pytest.raises(UserError) as e:
        load_problems(source)  # default prompt_field "prompt", GSM8K has "question"
    message = str(e.value)
    assert "g.jsonl row 1" in message and "'prompt'" in message and "data.prompt_field" in message
    assert "question" in message and "answer" in message and "source" in message
    assert "\n" not in message


def test_missing_answer_field(tmp_path):
    source = _jsonl(tmp_path / "m.jsonl", MATH)
    with pytest.raises(UserError) as e:
        load_problems(source, prompt_field="problem")  # default answer_field "answer"
    assert "missing answer field 'answer'" in str(e.value) and "solution" in str(e.value)


def test_bad_prompt_type(tmp_path):
    source = _jsonl(tmp_path / "x.jsonl", [{"prompt": 3, "answer": "1"}])
    with pytest.raises(UserError, match="must be a string or a list"):
        load_problems(source)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n", encoding="utf-8")
    with pytest.raises(UserError, match="no problems found"):
        load_problems(str(path))


# ----------------------------------------------------------------------------- prompts

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.fixture(scope="module")
def tokenizer():
    from grpo_cli.builtin.tiny import build_tokenizer

    return build_tokenizer()


@pytest.fixture(scope="module")
def chat_tokenizer():
    from grpo_cli.builtin.tiny import build_tokenizer

    tok = build_tokenizer()
    tok.chat_template = CHAT_TEMPLATE
    return tok


def test_plain_template(tokenizer):
    problem = {"id": "7", "prompt": "What is 2 + 2?", "answer": "4", "topic": "sums"}
    assert render_prompt(problem, tokenizer) == "What is 2 + 2?\n"
    assert render_prompt(problem, tokenizer, template="[{topic} #{id}] {prompt}\nA:") == "[sums #7] What is 2 + 2?\nA:"
    # without a chat template, system prompt and instruction do not apply
    assert render_prompt(problem, tokenizer, system_prompt="S", instruction="I") == "What is 2 + 2?\n"


def test_plain_template_with_messages_and_bad_field(tokenizer):
    problem = {"id": "1", "prompt": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}
    assert render_prompt(problem, tokenizer) == "a\nb\n"
    with pytest.raises(UserError, match="data.template"):
        render_prompt({"id": "1", "prompt": "x"}, tokenizer, template="{prompt} {missing}")


def test_chat_template_with_system_prompt_and_instruction(chat_tokenizer):
    problem = {"id": "1", "prompt": "What is 2 + 2?"}
    assert render_prompt(problem, chat_tokenizer) == "<|user|>What is 2 + 2?\n<|assistant|>"
    text = render_prompt(problem, chat_tokenizer, system_prompt="Be brief.", instruction="End with #### N.")
    assert text == "<|system|>Be brief.\n<|user|>What is 2 + 2?\nEnd with #### N.\n<|assistant|>"
    # `never` falls back to the plain template even when the tokenizer has a chat template
    assert render_prompt(problem, chat_tokenizer, chat_template="never", system_prompt="S") == "What is 2 + 2?\n"


def test_chat_template_with_message_list_keeps_its_system_message(chat_tokenizer):
    problem = {"id": "1", "prompt": [{"role": "system", "content": "Mine."}, {"role": "user", "content": "Q"}]}
    text = render_prompt(problem, chat_tokenizer, system_prompt="Configured.")
    assert text == "<|system|>Mine.\n<|user|>Q\n<|assistant|>"
    problem = {"id": "2", "prompt": [{"role": "user", "content": "Q"}]}
    assert render_prompt(problem, chat_tokenizer, system_prompt="Configured.") == (
        "<|system|>Configured.\n<|user|>Q\n<|assistant|>"
    )


# ----------------------------------------------------------------------------- writing


def test_atomic_writer_keeps_previous_file_when_the_writer_raises(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text("previous\n", encoding="utf-8")
    with pytest.raises(RuntimeError):
        with atomic_writer(path) as handle:
            handle.write("half a new file")
            raise RuntimeError("boom")
    assert path.read_text(encoding="utf-8") == "previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]  # no temp file left behind


def test_atomic_writer_refuses_a_directory(tmp_path):
    with pytest.raises(UserError, match="is a directory"):
        with atomic_writer(tmp_path):
            pass
    assert list(tmp_path.iterdir()) == []


def test_write_jsonl_round_trip(tmp_path):
    rows = [{"a": 1, "text": "é ∑"}, {"b": [1, 2]}]
    path = tmp_path / "sub" / "rows.jsonl"
    write_jsonl(path, rows)
    assert read_jsonl(path) == rows
    assert "é ∑" in path.read_text(encoding="utf-8")  # not escaped


def test_write_jsonl_failure_leaves_old_file(tmp_path):
    path = tmp_path / "rows.jsonl"
    write_jsonl(path, [{"old": True}])

    def rows():
        yield {"new": 1}
        raise ValueError("generator failed")

    with pytest.raises(ValueError):
        write_jsonl(path, rows())
    assert read_jsonl(path) == [{"old": True}]
