#!/usr/bin/env bash
# GPU check (one CUDA GPU, <= 5 minutes): the suite's GPU-marked tests, then a short vLLM-backend
# train with weight sync on the shipped model, printing sampling tokens/s, step time and peak GPU
# memory. Needs the GPU build of torch and `pip install -e '.[test,vllm]'`.
#     bash benchmarks/gpu_check.sh [RUN_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
run=${1:-runs/gpu-check}
rm -rf "$run"
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))"
timeout 150 python -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider
# A few steps with the vLLM backend: every step syncs the updated weights into the engine.
timeout 120 python - "$run" <<'PY'
import json, sys, time
from pathlib import Path

import torch

from grpo_cli.config import load_config
from grpo_cli.report import Reporter
from grpo_cli.training import trainer

run = Path(sys.argv[1])
cfg = load_config("tiny", [
    "model.device=cuda", "model.dtype=bfloat16", "sampling.backend=vllm", "train.run.steps=4",
    "train.run.eval_n=0", f"train.run.out_dir={run}",
])
torch.cuda.reset_peak_memory_stats()
start = time.perf_counter()
trainer.train(cfg, Reporter.console(True))
wall = time.perf_counter() - start
rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
steps = [r for r in rows if "step_time" in r][1:] or [r for r in rows if "step_time" in r]
mean = lambda key: sum(r[key] for r in steps) / len(steps)
print(f"vLLM-backend train: {len(rows)} steps in {wall:.1f}s; sampling {mean('tokens_per_s'):.0f} tokens/s, "
      f"step {mean('step_time'):.2f}s (first step excluded), peak GPU memory "
      f"{torch.cuda.max_memory_allocated() / 2**20:.0f} MiB allocated by this process (vLLM's own pool not included)")
PY
