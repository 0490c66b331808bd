"""DeepSeekMath section 5.2 (Figure 5) and 4.1.4 (Figure 6) on the embedded default, with seeds.

Each method trains the shipped model on the arithmetic task with the same budget (steps x
completions, the tiny preset's other settings), then is evaluated on the held-out split with the
same evaluation seed (eval_n samples per problem at T=1: accuracy, maj@eval_n, pass@eval_n):

- sft: the dataset's gold solutions, coefficient 1;
- rft: correct samples of the initial model; online_rft: correct samples of the current policy;
- grpo_outcome: GRPO, `math` verifier reward;
- grpo_process_rule: GRPO with process advantages from the `prm` rule checker's step rewards;
- grpo_process_learned: GRPO with process advantages from a learned PRM (the starting RM of
  `deepseekmath-iterative`: the shipped model trained on its own samples of 256 train prompts, rule
  labels), never retrained; otherwise the deepseekmath-iterative settings (beta 0.04, reference reset);
- grpo_iterative: Algorithm 1 (`deepseekmath-iterative` on the tiny task): the same starting PRM,
  retrained on each iteration's samples plus a 10% replay, the reference reset to the policy.

    python benchmarks/paradigms.py --steps 100 --seeds 0,1,2 [--methods a,b] [--out runs/paradigms]
    python benchmarks/paradigms.py --report --steps 100  # table + PNG from results.jsonl's 100-step rows
    python benchmarks/paradigms.py --explain       # why process rewards add little on this task

Every finished run is appended to `OUT/results.jsonl` and skipped when asked again, so the methods can
run in several sittings; `--report` prints mean and standard deviation over the seeds and draws
`OUT/paradigms.png`. A benchmark, not a test: each run takes about the time of `grpo train --steps N`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from grpo_cli.config import load_config
from grpo_cli.report import Reporter
from grpo_cli.training.trainer import train

PROCESS = ["train.advantage.kind=process"]
METHODS: dict[str, list[str]] = {
    "sft": ["algorithm=sft"],
    "rft": ["algorithm=rft"],
    "online_rft": ["algorithm=online_rft"],
    "grpo_outcome": ["algorithm=grpo"],
    # math scores the outcome (reward, accuracy); prm (weight 0) gives the step rewards.
    "grpo_process_rule": [*PROCESS, "verifiers=[{name: math}, {name: prm, weight: 0.0}]"],
    # Both from the deepseekmath-iterative preset (process advantages, beta 0.04, reference reset every
    # iteration) and the same starting PRM; they differ only in whether the PRM is retrained.
    "grpo_process_learned": ["train.reward_model.retrain_every=0"],
    "grpo_iterative": [],
}
NEEDS_PRM = ("grpo_process_learned", "grpo_iterative")
ITERATIONS = 4
"""grpo_iterative: the run's steps are cut into this many iterations (RM retrained after each)."""


def initial_prm(out: Path, seed: int, threads: int) -> Path:
    """The learned PRM both PRM methods start from: `grpo rm train` on the shipped model's samples of
    the train split, rule labels, this seed."""
    from grpo_cli.training.reward_model import bootstrap_reward_model

    folder = out / f"prm-seed{seed}"
    if not (folder / "eval.json").is_file():  # written last: a finished build
        cfg = load_config("deepseekmath-iterative", [f"seed={seed}", f"model.threads={threads}"])
        bootstrap_reward_model(cfg, folder, Reporter.console(quiet=True))
    return folder


def method_config(name: str, args: argparse.Namespace, seed: int, prm: Path | None) -> Any:
    sets = [
        *METHODS[name],
        f"seed={seed}",
        f"model.threads={args.threads}",
        f"train.run.out_dir={args.out / f'{name}-seed{seed}'}",
        f"train.run.steps={args.steps}",
        f"train.run.eval_limit={args.eval_limit}",
    ]
    if prm is not None:
        sets.append(f"train.reward_model.path={prm}")
    if name in NEEDS_PRM:
        iteration = max(1, args.steps // ITERATIONS)
        sets.insert(0, f"train.reward_model.retrain_every={iteration}")  # the method's own value comes after
        sets.append(f"train.loss.ref_sync_every={iteration}")
        return load_config("deepseekmath-iterative", sets)
    return load_config("tiny", sets)


def run(args: argparse.Namespace) -> None:
    results = args.out / "results.jsonl"
    args.out.mkdir(parents=True, exist_ok=True)
    done = {(r["method"], r["seed"], r["steps"]) for r in _rows(results)}
    for seed in args.seeds:
        for name in args.methods:
            if (name, seed, args.steps) in done:
                continue
            start = time.perf_counter()
            prm = initial_prm(args.out, seed, args.threads) if name in NEEDS_PRM else None
            cfg = method_config(name, args, seed, prm)
            shutil.rmtree(cfg.train.run.out_dir, ignore_errors=True)  # an older budget's run; its row is kept
            result = train(cfg, Reporter.console(quiet=True))
            row = {
                "method": name,
                "seed": seed,
                "steps": args.steps,
                "eval_limit": args.eval_limit,
                "before": _figures(result.before),
                "after": _figures(result.after),
                "seconds": round(time.perf_counter() - start, 1),
            }
            with results.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(row) + "\n")
            a = row["after"]
            print(
                f"{name:<22} seed {seed}  acc {100 * a['accuracy']:5.1f}  maj {100 * a['maj']:5.1f}  "
                f"pass {100 * a['pass']:5.1f}  ({row['seconds']:.0f}s)",
                flush=True,
            )


def _figures(result: dict[str, Any]) -> dict[str, float]:
    n = max(int(k) for k in result["pass@k"])  # the largest k is eval_n
    return {"accuracy": result["accuracy"], "maj": result["maj@k"][n], "pass": result["pass@k"][n], "n": n}


def _rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def report(out: Path, steps: int | None) -> None:
    rows = [r for r in _rows(out / "results.jsonl") if steps is None or r["steps"] == steps]
    if not rows:
        raise SystemExit(f"no results in {out / 'results.jsonl'}")
    by_method: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_method.setdefault(r["method"], []).append(r)
    n = rows[0]["after"]["n"]
    base = [r["before"]["accuracy"] for r in rows]
    print(f"held-out split, {rows[0]['eval_limit'] or 'all'} problems x {n} samples at T=1; mean +- std over seeds")
    print(f"initial model: accuracy {100 * statistics.fmean(base):.1f}")
    header = (
        f"{'method':<22} {'seeds':>5} {'steps':>5}  {'accuracy':>12}  {f'maj@{n}':>12}  {f'pass@{n}':>12}  {'time':>6}"
    )
    print(header)
    table = []
    for name in [m for m in METHODS if m in by_method]:
        group = by_method[name]
        cells = {key: _mean_std([100 * r["after"][key] for r in group]) for key in ("accuracy", "maj", "pass")}
        secs = statistics.fmean(r["seconds"] for r in group)
        seeds = ",".join(str(r["seed"]) for r in group)
        table.append((f"{name} (n={len(group)})", cells))
        print(
            f"{name:<22} {len(group):>5} {'/'.join(sorted({str(r['steps']) for r in group})):>5}  "
            + "  ".join(f"{cells[k][0]:5.1f} +- {cells[k][1]:4.1f}" for k in ("accuracy", "maj", "pass"))
            + f"  {secs:5.0f}s  (seeds {seeds})"
        )
    _plot(table, 100 * statistics.fmean(base), n, out / "paradigms.png")
    print(f"plot: {out / 'paradigms.png'}")


def _plot(table: list[tuple[str, dict[str, tuple[float, float]]]], base: float, n: int, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    names = [name for name, _ in table]
    for ax, (key, title) in zip(axes, (("accuracy", "accuracy"), ("maj", f"maj@{n}"), ("pass", f"pass@{n}"))):
        means = [cells[key][0] for _, cells in table]
        stds = [cells[key][1] for _, cells in table]
        ax.bar(range(len(names)), means, yerr=stds, capsize=4, color="tab:blue", alpha=0.8)
        if key == "accuracy":
            ax.axhline(base, color="gray", linestyle="--", label="initial model")
            ax.legend(loc="lower right", fontsize=8)
        ax.set_xticks(range(len(names)), names, rotation=40, ha="right", fontsize=8)
        ax.set_title(f"held-out {title} (%)")
        lo = min(m - s for m, s in zip(means, stds))
        ax.set_ylim(max(0.0, lo - 10), min(100.0, max(m + s for m, s in zip(means, stds)) + 5))
    fig.suptitle("DeepSeekMath 5.2 / 4.1.4 on the tiny task: mean +- std over seeds")
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="steps per method (default: the tiny preset's 500)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--out", type=Path, default=Path("runs/paradigms"))
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (0: all cores)")
    parser.add_argument("--eval-limit", type=int, default=0, help="held-out problems evaluated (0: all 200)")
    parser.add_argument("--report", action="store_true", help="only print the table and draw the PNG")
    parser.add_argument("--explain", action="store_true", help="measure how much step rewards add on this task")
    args = parser.parse_args()
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"unknown method {unknown[0]!r}; choose from {', '.join(METHODS)}")
    if args.explain:
        explain(args)
    elif args.report:
        report(args.out, args.steps)  # the rows of that budget (all rows without --steps)
    else:
        args.steps = args.steps or 500
        run(args)
        report(args.out, args.steps)


def explain(args: argparse.Namespace) -> None:
    """On the shipped model's samples of the train split: how often the rule checker's step rewards
    say something the final answer does not (a wrong answer with no wrong step, or a right answer with
    a wrong step), and how often a token's process advantage has another sign than its outcome one."""
    import torch

    from grpo_cli.algorithms import advantages as adv
    from grpo_cli.pipeline.sample import load_policy, problems_from, render_prompts, sampling_params, to_records
    from grpo_cli.pipeline.scoring import opened_verifiers, score

    cfg = load_config("tiny", [f"seed={args.seeds[0]}", f"model.threads={args.threads}", "data.limit=256"])
    policy = load_policy(cfg)
    problems = problems_from(cfg.data.train, cfg.data)
    completions = policy.sampler.generate(render_prompts(problems, policy.tokenizer, cfg.data), sampling_params(cfg))
    specs = load_config("tiny", ["verifiers=[{name: math}, {name: prm, weight: 0.0}]"]).verifiers
    with opened_verifiers(specs) as verifiers:
        scored, _ = score(to_records(problems, completions, logprobs=False), verifiers)
    G = cfg.sampling.n
    right = [r["rewards"]["math"] == 1.0 for r in scored]
    # final_answer is on, so the last step holds the answer check; a step error is an earlier 0.
    step_error = [any(s["reward"] < 1.0 for s in (r.get("steps") or [])[:-1]) for r in scored]
    wrong = [not x for x in right]
    n_wrong = max(1, sum(wrong))
    print(f"{len(scored)} samples ({len(problems)} problems x {G}), shipped model, train split, T=1")
    print(f"answer right: {100 * sum(right) / len(scored):.1f}%")
    caught = sum(w and e for w, e in zip(wrong, step_error))
    lucky = sum(r and e for r, e in zip(right, step_error))
    print(f"wrong answers with a wrong earlier step: {100 * caught / n_wrong:.1f}%")
    print(f"right answers with a wrong earlier step: {100 * lucky / max(1, sum(right)):.1f}%")
    # Sign of process vs outcome advantage, token by token (only rows with any signal).
    outcome = adv.outcome_advantages(torch.tensor([float(x) for x in right]), G, "group")  # [N]
    width = max(r["completion_tokens"] for r in scored)
    ends = [[len(r["completion"][: s["end"]]) for s in (r.get("steps") or [])] for r in scored]
    rewards = [[float(s["reward"]) for s in (r.get("steps") or [])] for r in scored]
    # byte-level tokenizer: character offset == token offset for ASCII completions
    process = adv.process_advantages(rewards, [[max(0, e - 1) for e in row] for row in ends], G, width)  # [N, L]
    lengths = [r["completion_tokens"] for r in scored]
    agree = total = 0
    for i, length in enumerate(lengths):
        if outcome[i] == 0:
            continue
        row = process[i, :length]
        agree += int(((row > 0) == (outcome[i] > 0)).sum())
        total += length
    print(f"tokens whose process advantage has the outcome advantage's sign: {100 * agree / max(1, total):.1f}%")


if __name__ == "__main__":
    main()
