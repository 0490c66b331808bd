"""`grpo train --nproc N` under DDP and FSDP2: update seconds per step and the largest rank's peak RSS.

    python benchmarks/torchrun.py [--model large] [--nproc 2] [--parallel ddp,fsdp] [--steps 2] [--before OLD_TREE]

Each run is a real `grpo train` (the CLI, re-launched under torchrun) for a few steps on the
benchmark's large model (benchmarks/step.py builds it: 54M parameters, vocabulary 65,536), one torch
thread per rank. "update" is the trainer's own `update_time` per step from `metrics.jsonl` (reference
pass, forward+backward, gradient reduction, optimizer), median over the steps; the first step is
included (there is no warm-up to exclude from a CLI run). Peak RSS is that of the largest process
the run left behind (`RUSAGE_CHILDREN` after it ends: torchrun's ranks included), so it is the
largest rank's. `--before` runs the same command with an older source tree first on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))


def run(tree: Path | None, model: Path, nproc: int, parallel: str, steps: int) -> dict[str, float]:
    """One `grpo train --nproc` run in a child process of its own (so RUSAGE_CHILDREN is its alone)."""
    out = Path(tempfile.mkdtemp(prefix=f"grpo-torchrun-{parallel}-"))
    sets = [
        "model.threads=1",
        "sampling.n=8",
        "train.run.batch_size=32",
        "train.run.micro_batch_size=8",
        f"train.run.steps={steps}",
        "train.run.eval_n=0",
        "sampling.max_new_tokens=32",
        "train.loss.beta=0.04",
        "train.run.save_every=0",
        "train.optimizer.lr=1e-6",
        f"train.run.parallel={parallel}",
    ]
    cmd = [
        sys.executable,
        "-m",
        "grpo_cli",
        "train",
        "--nproc",
        str(nproc),
        "--model",
        str(model),
        "--out",
        str(out / "run"),
        "--quiet",
        *(a for s in sets for a in ("--set", s)),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(tree), env.get("PYTHONPATH", "")])
    # A fresh Python measures the run: its RUSAGE_CHILDREN then covers this run's processes only.
    probe = (
        "import resource, subprocess, sys, json; p = subprocess.run(json.loads(sys.argv[1]), "
        "env=json.loads(sys.argv[2]),"
        " capture_output=True, text=True); print(json.dumps([p.returncode, p.stderr[-3000:],"
        " resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))"
    )
    # cwd outside the repository: `python -m` puts the cwd first on sys.path, ahead of PYTHONPATH.
    proc = subprocess.run(
        [sys.executable, "-c", probe, json.dumps(cmd), json.dumps(env)],
        capture_output=True,
        text=True,
        check=True,
        cwd=out,
    )
    code, stderr, maxrss_kb = json.loads(proc.stdout)
    if code != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{stderr}")
    rows = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    return {"update_s": statistics.median(r["update_time"] for r in rows), "peak_rss_mb": maxrss_kb / 1024}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="large", help="large (benchmarks/step.py's) or a model folder")
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--parallel", default="ddp,fsdp")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--before", type=Path, help="also run from this older source tree (its grpo_cli on PYTHONPATH)")
    args = p.parse_args()
    from step import model_dir

    model = model_dir(args.model)
    sides = [("ours", None)] + ([("before", args.before)] if args.before else [])
    print(f"{'parallel':<10}{'side':<8}{'update s/step':>15}{'peak RSS MB (largest rank)':>29}")
    for parallel in args.parallel.split(","):
        for _ in range(args.repeats):
            for name, tree in sides:  # alternate, so a slow phase of a shared machine hits both sides
                r = run(tree, model, args.nproc, parallel, args.steps)
                print(f"{parallel:<10}{name:<8}{r['update_s']:>15.2f}{r['peak_rss_mb']:>29.0f}", flush=True)
    print(
        f"\n{args.nproc} ranks x 1 thread, gloo; G=8, batch 32, micro-batch 8, 32 new tokens, beta 0.04, mu 1; "
        f"{args.steps} steps per run"
    )


if __name__ == "__main__":
    main()
