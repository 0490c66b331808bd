"""Build benchmarks/data/math_pairs_outside.jsonl, the labelled set from outside sources (issue 14).

    pip install reasoning-gym==0.1.25        # for building the set only; never a dependency
    python benchmarks/make_outside_pairs.py [--samples benchmarks/data/smollm2_samples.jsonl]

The labelling rules are in benchmarks/data/README.md (written before the checker saw these rows):
part 1 labels reasoning-gym answers with each task's own `score_answer`; part 2 takes SmolLM2
completions (`grpo sample` output, kept in data/smollm2_samples.jsonl) and their committed answers
(data/smollm2_committed.json: read by hand where no marker states one), scored the same way.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

DATA = Path(__file__).parent / "data"
TASKS = {
    "gsm_symbolic": 24,
    "basic_arithmetic": 8,
    "chain_sum": 8,
    "simple_equations": 8,
    "fraction_simplification": 8,
    "gcd": 8,
    "lcm": 8,
    "products": 8,
    "decimal_arithmetic": 8,
    "complex_arithmetic": 8,
}
SEED = 1414
SAMPLE_SEED = 14  # the seed the SmolLM2 prompts were drawn with
LEAD_INS = ("Working through the problem step by step.", "Let me compute this.", "We simplify carefully.")


def wrap(candidate: str, i: int) -> str:
    """The candidate in one of the three forms, in turn."""
    lead = LEAD_INS[i % len(LEAD_INS)]
    return [
        f"{lead}\n#### {candidate}",
        f"{lead} So the final result is $\\boxed{{{candidate}}}$.",
        f"{lead}\nThe answer is {candidate}.",
    ][i % 3]


def gold_form(task: str, entry: dict, i: int) -> str:
    """The gold as datasets distribute it: GSM8K (`#### N`) or MATH (`\\boxed{}`) for gsm_symbolic."""
    answer = entry["answer"]
    if task != "gsm_symbolic":
        return answer
    cot = re.sub(r"\s*####.*$", "", entry["metadata"].get("answer_cot", "").strip())  # it ends in `#### N`
    return f"{cot}\n#### {answer}" if i % 2 == 0 else f"{cot} The answer is $\\boxed{{{answer}}}$."


def perturbations(answer: str) -> list[str]:
    """Wrong values made from the gold by the README's fixed rules."""
    out = []
    frac = re.fullmatch(r"\$?\\frac\{(\d+)\}\{(\d+)\}\$?", answer)
    complex_ = re.fullmatch(r"(-?[\d.]+) ([+-]) ([\d.]+)i", answer)
    if frac:
        out.append(f"$\\frac{{{int(frac.group(1)) + 1}}}{{{frac.group(2)}}}$")
        out.append(f"$\\frac{{{frac.group(2)}}}{{{frac.group(1)}}}$")
    elif complex_:
        out.append(f"{complex_.group(1)} {complex_.group(2)} {float(complex_.group(3)) + 1}i")
        flipped = "-" if complex_.group(2) == "+" else "+"
        out.append(f"{complex_.group(1)} {flipped} {complex_.group(3)}i")
    elif re.fullmatch(r"-?\d+(\.\d+)?", answer):
        digits = answer.lstrip("-")
        last = int(digits[-1])
        out.append(answer[:-1] + str((last + 1) % 10))  # plus one in the last digit
        out.append(answer[1:] if answer.startswith("-") else "-" + answer)  # the sign flipped
        if len(digits.replace(".", "")) > 1:
            dropped = answer[:-1] if not answer.endswith(".") else answer[:-2]
            out.append(dropped.rstrip("."))  # a digit dropped
        whole, _, decimals = answer.partition(".")
        out.append(f"{whole}{decimals[:1]}.{decimals[1:]}".rstrip(".") if decimals else str(int(answer) * 10))
    return [p for p in dict.fromkeys(out) if p and p != answer]


def restated(question: str, answer: str) -> str | None:
    """A number copied from the question that is not the gold."""
    numbers = [n for n in re.findall(r"\d+(?:\.\d+)?", question) if n != answer.strip("$")]
    return numbers[len(numbers) // 2] if numbers else None


def part_one() -> list[dict]:
    import reasoning_gym as rg

    rows = []
    for task, size in TASKS.items():
        dataset = rg.create_dataset(task, size=size, seed=SEED)
        for index in range(size):
            entry = dataset[index]
            candidates = [entry["answer"], *perturbations(entry["answer"])]
            copied = restated(entry["question"], entry["answer"])
            if copied is not None:
                candidates.append(copied)
            for j, candidate in enumerate(dict.fromkeys(candidates)):
                rows.append(
                    {
                        "gold": gold_form(task, entry, index),
                        "pred": wrap(candidate, index + j),
                        "label": dataset.score_answer(candidate, entry) == 1.0,
                        "category": task,
                        "source": "reasoning_gym",
                        "prompt": entry["question"],
                        "note": f"{task} seed {SEED} #{index}; scorer on {candidate!r}",
                    }
                )
    return rows


def part_two(samples_path: Path, committed_path: Path) -> list[dict]:
    import reasoning_gym as rg

    if not samples_path.exists():
        return []
    committed = json.loads(committed_path.read_text(encoding="utf-8"))
    datasets: dict[str, object] = {}
    rows = []
    for line in samples_path.read_text(encoding="utf-8").splitlines():
        sample = json.loads(line)
        task, index = sample["id"].rsplit("-", 1)[0], int(sample["id"].rsplit("-", 1)[1])
        size = max(s for t, s in SAMPLE_SIZES if t == task)
        dataset = datasets.setdefault(task, rg.create_dataset(task, size=size, seed=SAMPLE_SEED))
        entry = dataset[index]
        key = f"{sample['id']}/{sample['index']}"  # `index`: the completion's place in its group
        answer = committed.get(key)
        label = bool(answer is not None and dataset.score_answer(answer, entry) == 1.0)
        rows.append(
            {
                "gold": gold_form(task, entry, index),
                "pred": sample["completion"],
                "label": label,
                "category": f"smollm2/{task}",
                "source": "smollm2",
                "prompt": sample["prompt"],
                "note": f"{key}; committed answer {answer!r}",
            }
        )
    return rows


# The problems SmolLM2 was prompted with (seed 14), as in benchmarks/data/README.md.
SAMPLE_SIZES = (
    ("gsm_symbolic", 24),
    ("basic_arithmetic", 8),
    ("chain_sum", 8),
    ("simple_equations", 6),
    ("fraction_simplification", 6),
    ("gcd", 4),
    ("lcm", 4),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=Path, default=DATA / "smollm2_samples.jsonl")
    parser.add_argument("--committed", type=Path, default=DATA / "smollm2_committed.json")
    parser.add_argument("--out", type=Path, default=DATA / "math_pairs_outside.jsonl")
    args = parser.parse_args()
    rows = part_one() + part_two(args.samples, args.committed)
    args.out.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    by_source: dict[str, list[int]] = {}
    for row in rows:
        by_source.setdefault(row["source"], [0, 0])[row["label"]] += 1
    print(
        f"{len(rows)} rows to {args.out}: " + ", ".join(f"{s} {f + t} ({t} right)" for s, (f, t) in by_source.items())
    )


if __name__ == "__main__":
    main()
